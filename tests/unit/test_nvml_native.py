"""The real pynvml and NvmlReader against a C library with NVML's ABI (tests/native/fake_nvml.c).

The library is built with gcc into a temporary directory as ``libnvidia-ml.so.1`` and found
through ``LD_LIBRARY_PATH`` by pynvml's own ``CDLL`` at ``nvmlInit``; the reader runs in a
subprocess (``tests/native/read_gpus.py``), the agent as ``python -m services.agent``.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fake_placement import FakePlacement, serve_placement, wait_until
from tests.native.build import build_fake_nvml, nvml_env

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def libdir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("nvml")
    build_fake_nvml(d)
    return d


class Reader:
    """The reader subprocess; ``ask`` sends one command and returns its JSON answer."""

    def __init__(self, libdir: pathlib.Path, config: pathlib.Path) -> None:
        self.config = config
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.native.read_gpus"], cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=nvml_env(libdir, config))

    def ask(self, command: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def configure(self, text: str) -> None:
        self.config.write_text(text)

    def read(self) -> list[dict[str, Any]]:
        gpus: list[dict[str, Any]] = self.ask("read")["gpus"]
        return gpus

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture
def reader(libdir: pathlib.Path, tmp_path: pathlib.Path) -> Iterator[Reader]:
    config = tmp_path / "nvml.conf"
    config.write_text("count=2\n")
    r = Reader(libdir, config)
    yield r
    r.close()


def test_every_field_through_the_real_pynvml(reader: Reader) -> None:
    reader.configure("count=2\ngpu1.name=NVIDIA H100 80GB HBM3\ngpu1.util=87\n"
                     "gpu1.mem_total=85899345920\ngpu1.mem_used=42949672960\n"
                     "gpu1.power_mw=512345\ngpu1.power_limit_mw=700000\ngpu1.temp=71\n"
                     "gpu1.slowdown=87\ngpu1.sm_clock=1755\ngpu1.sm_clock_max=1980\n"
                     "gpu1.ecc_corrected=3\n")
    assert reader.ask("start") == {"count": 2}
    g0, g1 = reader.read()
    assert g1["uuid"] == "GPU-c0ffee00-0000-0000-0000-000000000001"
    assert (g1["index"], g1["name"], g1["gpu_util_pct"]) == (1, "NVIDIA H100 80GB HBM3", 87.0)
    assert int(g1["mem_total_bytes"]) == 80 * 1024**3
    assert int(g1["mem_used_bytes"]) == int(g1["mem_free_bytes"]) == 40 * 1024**3
    assert g1["power_w"] == pytest.approx(512.345)  # milliwatts -> watts
    assert g1["power_limit_w"] == pytest.approx(700.0)
    assert (g1["temperature_c"], g1["temperature_slowdown_c"]) == (71.0, 87.0)
    assert (g1["sm_clock_mhz"], g1["sm_clock_max_mhz"]) == (1755, 1980)
    assert (int(g1["ecc_corrected_volatile"]), int(g1["ecc_uncorrected_volatile"])) == (3, 0)
    assert int(g1["throttle_reasons"]) == 0
    assert g0["name"] == "NVIDIA L4" and g0["gpu_util_pct"] == 35.0
    calls = reader.ask("calls")["calls"]
    for fn in ("nvmlInit", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex",
               "nvmlDeviceGetUUID", "nvmlDeviceGetName", "nvmlDeviceGetUtilizationRates",
               "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetPowerUsage",
               "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetTemperature",
               "nvmlDeviceGetTemperatureThreshold", "nvmlDeviceGetClockInfo",
               "nvmlDeviceGetMaxClockInfo", "nvmlDeviceGetCurrentClocksEventReasons",
               "nvmlDeviceGetTotalEccErrors", "nvmlEventSetCreate",
               "nvmlDeviceRegisterEvents", "nvmlEventSetWait"):
        assert fn in calls, fn


def test_clocks_event_reasons_and_the_older_throttle_reasons_fallback(reader: Reader) -> None:
    reader.configure("count=2\ngpu0.reasons=0x44\ngpu1.reasons=0x4\ngpu1.old_driver=1\n")
    reader.ask("start")
    g0, g1 = reader.read()
    assert int(g0["throttle_reasons"]) == 0x44
    assert int(g1["throttle_reasons"]) == 0x4
    assert "nvmlDeviceGetCurrentClocksThrottleReasons" in reader.ask("calls")["calls"]


def test_not_supported_readings_are_absent_and_a_lost_gpu_is_lost(reader: Reader) -> None:
    reader.configure("count=2\ngpu0.unsupported=utilization,ecc,power\n")
    reader.ask("start")
    g0, _ = reader.read()
    for absent in ("gpu_util_pct", "mem_util_pct", "power_w", "ecc_uncorrected_volatile"):
        assert absent not in g0, absent
    assert "power_limit_w" in g0 and "mem_used_bytes" in g0
    reader.configure("count=2\ngpu1.lost=1\n")
    g0, g1 = reader.read()
    assert g1["lost"] is True
    assert g1["uuid"] == "GPU-c0ffee00-0000-0000-0000-000000000001"
    assert "lost" not in g0


def test_an_xid_event_is_reported_once_on_its_own_gpu(reader: Reader) -> None:
    reader.ask("start")
    reader.configure("count=2\nevent=1:79\n")
    g0, g1 = reader.read()
    assert ("xid_events" not in g0, g1["xid_events"]) == (True, ["79"])
    assert all("xid_events" not in g for g in reader.read())


def test_init_that_fails_then_succeeds(reader: Reader) -> None:
    reader.configure("count=1\ninit_failures=2\n")
    for _ in range(2):
        answer = reader.ask("start")
        assert answer["cause"] == "NVMLError_DriverNotLoaded"
        assert "Driver Not Loaded" in answer["error"]
    assert reader.ask("start") == {"count": 1}


def test_no_library_is_nvml_unavailable(tmp_path: pathlib.Path) -> None:
    r = Reader(tmp_path, tmp_path / "none.conf")  # a directory without the library
    try:
        assert r.ask("start")["cause"] == "NVMLError_LibraryNotFound"
    finally:
        r.close()


# -- the agent process: late NVML, and one XID for every placement replica -----------------


def _events(stderr: pathlib.Path) -> list[dict[str, Any]]:
    out = []
    for line in stderr.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # grpc's own C-core lines
    return out


async def test_agent_process_switches_to_nvml_and_tells_both_replicas_of_an_xid(
        libdir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    config = tmp_path / "nvml.conf"
    config.write_text("count=1\ninit_failures=1\n")
    replicas = [FakePlacement(), FakePlacement()]
    servers = [await serve_placement(f) for f in replicas]
    stderr = tmp_path / "agent.log"
    with stderr.open("w") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.agent", "--config", "examples/mesh.toml",
            "--backends", "use1-h100", "--interval", "0.2", "--agent-id", "agent-native",
            "--placement", ",".join(f"127.0.0.1:{port}" for _, port in servers),
            cwd=ROOT, env=nvml_env(libdir, config), stderr=err, stdout=subprocess.DEVNULL)
    try:
        nvml = 1  # TELEMETRY_SOURCE_NVML
        await wait_until(lambda: all(any(r.source == nvml for r in f.reports)
                                     for f in replicas), limit_s=20)
        with config.open("a") as f:
            f.write("event=0:79\n")
        await wait_until(lambda: all(any(79 in g.xid_events for r in f.reports for g in r.gpus)
                                     for f in replicas), limit_s=10)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
        for server, _ in servers:
            await server.stop(None)
    for f in replicas:
        assert f.reports[0].source == 2  # simulated first: the driver was "still loading"
        assert [x for r in f.reports for g in r.gpus for x in g.xid_events] == [79]
        assert f.reports[-1].gpus[0].uuid == "GPU-c0ffee00-0000-0000-0000-000000000000"
    events = _events(stderr)
    names = [e["event"] for e in events]
    assert names.index("agent.gpu_source_simulated") < names.index("agent.gpu_source_switched")
    switched = next(e for e in events if e["event"] == "agent.gpu_source_switched")
    assert (switched["source"], switched["was"], switched["attempts"]) == ("nvml", "simulated", 2)
