"""Envoy's outlier detection against a slow backend and a dead one: real Envoy (configured by
placement over ADS), real Triton backends, tritonclient callers.

A backend that answers late makes Envoy's per-try timeouts fire (the backend's requests are
parked by the demo model's ``hang`` knob: EMULATED slowness, no CPU spent); those attempts
are retried elsewhere and eject nothing. A backend whose port refuses is taken out (Envoy's
active TCP check) and calls keep succeeding elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import pytest_asyncio

from services.backends.repository import set_control
from services.backends.triton import TritonProcess
from services.config import MeshConfig
from tests.envoy_harness import EnvoyMesh, running_envoy_mesh
from tests.mesh_harness import eventually, mesh_config

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    return mesh_config(tmp_path_factory.mktemp("envoy-outlier"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(cfg: MeshConfig, tritons: dict[str, TritonProcess],
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EnvoyMesh]:
    async with running_envoy_mesh(cfg, tmp_path_factory.mktemp("envoy-outlier-run")) as m:
        yield m


def host_stat(m: EnvoyMesh, backend: str, stat: str) -> dict[str, str]:
    """Each deployment cluster of ``backend`` -> its host's ``stat`` (Envoy's /clusters)."""
    got = {}
    for line in m.envoy.admin("/clusters").splitlines():
        if line.startswith(f"dep:{backend}/") and f"::{stat}::" in line:
            got[line.split("::", 1)[0]] = line.rsplit("::", 1)[1]
    return got


def host_flags(m: EnvoyMesh, backend: str) -> dict[str, str]:
    return host_stat(m, backend, "health_flags")


def timeouts(m: EnvoyMesh, backend: str) -> int:
    """Attempts on ``backend``'s hosts that Envoy timed out (per-try or the call's own)."""
    return sum(int(v) for v in host_stat(m, backend, "rq_timeout").values())


def first_backend(m: EnvoyMesh) -> str:
    """The backend of the first deployment in the summarize default route's order."""
    assert m.placement.ads is not None
    order = m.placement.ads.region_config(m.envoy.node.region).orders["summarize"]
    return order[0].split("/", 1)[0]


def calls(m: EnvoyMesh, n: int, concurrency: int) -> list[dict[str, str]]:
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda _: m.call(), range(n)))


async def test_per_try_timeouts_on_a_slow_backend_eject_nothing(
        mesh: EnvoyMesh, tritons: dict[str, TritonProcess]) -> None:
    slow = first_backend(mesh)
    before = timeouts(mesh, slow)
    set_control(tritons[slow].repository, hang=True)
    try:
        # Concurrent callers: a run of timeouts on one host is what ejected it before.
        answers = await asyncio.to_thread(calls, mesh, 24, 6)
    finally:
        set_control(tritons[slow].repository, hang=False)
    assert all(a["x-served-by"] for a in answers), answers  # every call was served
    per_try = timeouts(mesh, slow) - before
    assert per_try >= 3, f"only {per_try} timed-out attempts on {slow}: nothing was tested"
    ejections = [line for line in mesh.envoy.admin(
        "/stats?filter=outlier_detection.ejections_enforced_total").splitlines()
        if slow in line]
    assert ejections and all(line.endswith(": 0") for line in ejections), ejections
    assert not any("failed_outlier_check" in f for f in host_flags(mesh, slow).values())


async def test_a_backend_whose_port_refuses_is_taken_out_and_calls_succeed(
        mesh: EnvoyMesh, tritons: dict[str, TritonProcess]) -> None:
    """Last in the module: the killed backend stays down."""
    dead = first_backend(mesh)
    await tritons[dead].stop_async(0.5)
    answers = await asyncio.to_thread(calls, mesh, 6, 1)
    assert not any(a["x-served-by"].startswith(f"{dead}/") for a in answers), answers

    def out() -> bool:
        flags = host_flags(mesh, dead)
        return bool(flags) and all("failed_active_hc" in f or "failed_outlier_check" in f
                                   for f in flags.values())

    await eventually(out, 15, f"Envoy takes {dead}'s deployments out")
    answers = await asyncio.to_thread(calls, mesh, 4, 1)
    assert all(a["x-attempts"] == "1" for a in answers), answers  # no attempt spent on it
