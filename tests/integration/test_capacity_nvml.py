"""A variant's GPU memory, measured through NVML around its load, and a full GPU refusing a
new variant: the real agent (``python -m services.agent``, real pynvml over the fake C
library ``tests/native/fake_nvml.c``) streams readings to a real placement; the capacity
loop's :class:`MeasuredControl` reads them from there. The "load" is a fake model control
that allocates GPU memory by rewriting the fake library's config, as a real load would by
allocating it."""

from __future__ import annotations

import asyncio
import pathlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from services.capacity.model_control import DrainReport, RoutingGate
from services.capacity.provider import Instance
from services.config import load_config
from services.placement.capacity_footprint import (
    FootprintBook,
    GpuFull,
    MeasuredControl,
    MemoryReading,
)
from services.placement.capacity_service import gpu_memory
from services.placement.main import RunningPlacement, start_placement
from tests.mesh_harness import eventually
from tests.native.build import build_fake_nvml, nvml_env

pytestmark = pytest.mark.integration
ROOT = pathlib.Path(__file__).resolve().parents[2]
GIB = 1 << 30
BACKEND = "use1-h100"


def nvml_conf(used_gib: float) -> str:
    return f"count=1\ngpu0.mem_total={24 * GIB}\ngpu0.mem_used={int(used_gib * GIB)}\n"


class AllocatingControl:
    """Stands in for Triton: a load allocates ``gib`` on the fake GPU."""

    def __init__(self, conf: pathlib.Path, used_gib: float) -> None:
        self.conf = conf
        self.used_gib = used_gib
        self.loads: list[str] = []

    async def loaded(self) -> frozenset[str]:
        return frozenset(self.loads)

    async def load(self, variant: str) -> None:
        self.used_gib += 10.0
        self.conf.write_text(nvml_conf(self.used_gib))
        self.loads.append(variant)

    async def drain_and_unload(self, variant: str, gate: RoutingGate) -> DrainReport:
        raise NotImplementedError

    async def close(self) -> None:
        return None


@pytest_asyncio.fixture
async def placement(tmp_path: pathlib.Path) -> AsyncIterator[tuple[RunningPlacement,
                                                                   pathlib.Path]]:
    libdir = tmp_path / "nvml"
    libdir.mkdir()
    build_fake_nvml(libdir)
    conf = tmp_path / "nvml.conf"
    conf.write_text(nvml_conf(4.0))
    cfg = load_config(ROOT / "examples" / "mesh.toml")
    running = await start_placement(cfg, port=0, metrics_port=0,
                                    learned=tmp_path / "learned.json")
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.agent", "--config", "examples/mesh.toml",
        "--backends", BACKEND, "--interval", "0.2", "--placement",
        f"127.0.0.1:{running.port}", cwd=ROOT, env=nvml_env(libdir, conf),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield running, conf
    finally:
        agent.terminate()
        await asyncio.wait_for(agent.wait(), 10)
        await running.stop(0.5)


async def test_footprint_measured_around_a_load_and_a_full_gpu_takes_no_variant(
        placement: tuple[RunningPlacement, pathlib.Path]) -> None:
    running, conf = placement
    service = running.service

    def readings(instance_id: str) -> MemoryReading | None:
        return gpu_memory(service, instance_id)

    await eventually(lambda: (r := gpu_memory(service, BACKEND)) is not None
                     and r.used_bytes == 4 * GIB, 30, "NVML readings at placement")
    book = FootprintBook({"summarize-large": 12.0})
    inner = AllocatingControl(conf, 4.0)
    control = MeasuredControl(inner, Instance(BACKEND, "pool", "127.0.0.1:1", "http://x"),
                              book, readings, 0.1, lambda: int(time.time() * 1000))
    assert book.footprint_gb("summarize-large") == 12.0  # declared before the first load
    await control.load("summarize-large")  # 4 GiB + 12 GB declared fits 90 % of 24 GiB
    await eventually(lambda: book.measure(readings) != [], 10, "a reading sent after the load")
    assert book.footprint_gb("summarize-large") == pytest.approx(10 * GIB / 1e9)
    assert book.samples("summarize-large") == 1

    # 14 GiB used now; another 10.7 GB (measured) would pass 90 % of 24 GiB: refused
    with pytest.raises(GpuFull, match="no new variant here"):
        await control.load("summarize-large")
    assert inner.loads == ["summarize-large"]  # the refused load never reached the server
