"""Managed tritonservers do not outlive the placement that started them (issue 13).

A real tritonserver started by the local provider is left running as a killed placement
leaves it (the provider never closed); the next provider on the same run directory (the
supervisor's restart of placement), or ``switchyard up`` stopping the mesh, stops it.
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from services.capacity.local import LocalProvider, reap_leftovers
from services.config import BackendConfig, load_config

pytestmark = pytest.mark.integration
ROOT = pathlib.Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def state(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/status").read_text()[:400]
    except OSError as exc:
        return repr(exc)


async def test_a_new_provider_stops_the_instances_a_crashed_one_left(
        tmp_path: pathlib.Path) -> None:
    cfg = load_config(ROOT / "examples" / "mesh-capacity.toml")
    p = cfg.capacity.pools[0]
    template = BackendConfig(id=p.id, region=p.region, accelerator=p.accelerator,
                             price_class=p.price_class, grpc_port=0, metrics_port=0,
                             variants=p.variants, speed=p.speed)
    crashed = LocalProvider(cfg, {p.id: template}, tmp_path)
    assert crashed.reaped == []  # nothing there before
    (inst,) = await crashed.add(p.id, 1)
    pid = json.loads((tmp_path / inst.id / "endpoints.json").read_text())["pid"]
    try:
        assert alive(pid)
        # a pid recorded elsewhere that is no tritonserver on that repository is left alone
        other = tmp_path / "not-ours"
        other.mkdir()
        (other / "endpoints.json").write_text(json.dumps({"pid": os.getpid()}))

        restarted = LocalProvider(cfg, {p.id: template}, tmp_path)  # placement restarted
        assert restarted.reaped == [pid]
        # reap_leftovers returns once the kernel says the process has exited (pidfd)
        assert not alive(pid), state(pid)
        assert restarted.instances(p.id) == []
        assert reap_leftovers(tmp_path) == []  # nothing left to stop
    finally:
        if alive(pid):  # the test failed: do not leak it either
            os.kill(pid, 9)
