"""Telemetry drives routing (issue: hardware-aware placement), on real Triton.

The agent reads GPUs through ``FakeNvml`` — a fake at the pynvml function boundary, since
this machine has no GPU — so the real NVML reading code runs end to end. The i-th backend
sits on GPU i. Times from a change to the edge's route change are printed (run with ``-s``).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from services.agent.fake_nvml import FakeNvml
from services.api.switchyard.v1 import fleet_pb2, placement_pb2
from services.backends.repository import set_control
from services.backends.triton import TritonProcess
from services.config import MeshConfig
from tests.mesh_harness import (
    Mesh,
    call,
    eventually,
    mesh_config,
    running_mesh,
    why,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CHEAP = "central-cheap"  # backend index 1 → fake GPU 1
REROUTE_BOUND_S = 3.0    # agent interval 0.3 s + coalescing 20 ms + push; generous for 2 cores
# An SLO every backend meets with room to spare, even with the machine's load in its
# latency: calls under it go to the cheapest usable deployment. (Under a tighter one a few
# slow calls on a loaded host teach the edge a miss margin, placement.feedback, and move the
# class away on purpose: that is the brain working, not what these tests check.)
LOOSE = "2000"
# A call's cost is its GPU's price x the compute Triton measured for it (placement.cost), and
# the models here are CPU matmuls: on a loaded 2-core host one backend's measured compute was
# 7x another's of the same speed (central-cheap 38 ms, west-cheap 5.2 ms in a fresh-clone
# run), so the harness's 3x price gap (gcp $0.30 vs aws $0.90 an hour) put the cheapest
# deployment on west-cheap: the router was right and the tests asserted on the host's speed.
# Here the gaps are far past that noise: central-cheap (gcp) 30x below west-cheap (aws) an
# hour, and east-fast ($8, 4x the speed) 89x above west-cheap's price, 22x per call.
CHEAP_USD_H = 0.003   # gpu-cheap on gcp: central-cheap
WEST_USD_H = 0.09     # gpu-cheap on aws: west-cheap (east-fast's gpu-fast stays at $8, speed 4)
DEAR_USD_H = 50.0     # central-cheap's price in the price-change test


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    tmp = tmp_path_factory.mktemp("telemetry")
    cfg = mesh_config(tmp)
    prices = tmp / "prices.toml"
    text = prices.read_text()
    for old, new in (("usd_per_gpu_hour = 0.30", f"usd_per_gpu_hour = {CHEAP_USD_H}"),
                     ("usd_per_gpu_hour = 0.90", f"usd_per_gpu_hour = {WEST_USD_H}")):
        assert text.count(old) == 1, f"the harness's prices changed: {old!r} not found once"
        text = text.replace(old, new)
    prices.write_text(text)
    return cfg


@pytest.fixture(scope="module")
def nvml() -> FakeNvml:
    return FakeNvml(count=3)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(cfg: MeshConfig, tritons: dict[str, TritonProcess],
               nvml: FakeNvml) -> AsyncIterator[Mesh]:
    async with running_mesh(cfg, tritons, nvml=nvml) as m:
        yield m


def candidate(mesh: Mesh, deployment: str):  # type: ignore[no-untyped-def]
    return next(c for c in mesh.edge.router.store.candidates["summarize"]
                if c.deployment_id == deployment)


async def answered(mesh: Mesh, slo: str, n: int) -> set[str]:
    """The deployments that answered ``n`` calls, at whichever attempt."""
    return {(await asyncio.to_thread(call, mesh, [("x-slo-ms", slo)]))["x-served-by"]
            for _ in range(n)}


def settled(mesh: Mesh) -> bool:
    """The edge's own health view keeps nothing out and ramps nothing back (slow start)."""
    view = mesh.edge.router.health.view()
    return not view.unusable and not view.warming


async def served(mesh: Mesh, slo: str, n: int = 5) -> set[str]:
    """Where the edge sends such calls on a healthy fleet: the deployments that answered
    ``n`` calls at their first attempt while the edge's health view was settled. A call
    answered at a later attempt is sent again (up to ``3 n`` of them): its answer says where
    its retry went, not where the router sent it. On a loaded host an attempt on a stalled
    Triton outlives its cut (4 x p95, at least 250 ms) and the call is retried elsewhere, as
    it should be (a fresh-clone run: central-cheap's attempt cut, the call served by
    west-cheap after 518 ms, 'attempts': 2). Likewise a call while a backend failed its
    active checks, or ramped back after them, is sent again once the view settles: on a
    loaded host both cheap backends' checks timed out (677 ms) and their 10 s slow start sent
    the rest of the calls to east-fast, as it should (a fresh-clone run beside another test
    module); the health view's rules are tested on their own."""
    out: set[str] = set()
    first = retried = 0
    while first < n:
        await eventually(lambda: settled(mesh), 30.0,
                         "the edge's health view keeps nothing out and ramps nothing")
        trailers = await asyncio.to_thread(call, mesh, [("x-slo-ms", slo)])
        if trailers["x-attempts"] == "1" and settled(mesh):
            out.add(trailers["x-served-by"])
            first += 1
            continue
        retried += 1
        assert retried <= 3 * n, (f"{retried} calls under SLO {slo} ms needed a retry, "
                                  f"{first} did not: {why(mesh, [('x-slo-ms', slo)])}")
    return out


async def served_just_under(mesh: Mesh, dep: str, n: int = 5) -> set[str]:
    """Where the edge sends ``n`` calls, each with an SLO just under ``dep``'s penalised
    estimate in the table it is routed on (the unpenalised one is lower by at least a third
    of the compute share, as the penalty is ≥ ×1.5), answered at its first attempt. The
    estimate moves with every report (measured compute on a loaded host moved 2-5x from one
    report to the next), so an SLO taken from an earlier table can be above it by the time
    of the call (a fresh-clone run: central-cheap served under an SLO set from the first
    penalised row): a call during which the edge's table changed is sent again."""
    out: set[str] = set()
    first = again = 0
    while first < n:
        version, c = mesh.edge.router.store.version, candidate(mesh, dep)
        budget = c.latency_p95_ms - 0.2 * c.compute_ms * 1.3
        slo = f"{budget + mesh.cfg.routing.slo_margin_ms:.2f}"
        trailers = await asyncio.to_thread(call, mesh, [("x-slo-ms", slo)])
        if trailers["x-attempts"] == "1" and mesh.edge.router.store.version == version:
            out.add(trailers["x-served-by"])
            first += 1
            continue
        again += 1
        assert again <= 4 * n, (f"{again} calls sent again (table changed or retried), "
                                f"{first} not: {why(mesh, [('x-slo-ms', slo)])}")
    return out


@pytest.mark.parametrize("fault", ["throttle", "ecc", "lost"])
async def test_gpu_fault_moves_traffic_away_and_back(mesh: Mesh, nvml: FakeNvml,
                                                     fault: str) -> None:
    dep = f"{CHEAP}/summarize-small"
    assert await served(mesh, LOOSE) == {dep}, mesh.edge.router.store.candidates["summarize"]
    times = []
    for _ in range(3):
        {"throttle": lambda: nvml.throttle(1), "ecc": lambda: nvml.ecc_errors(1),
         "lost": lambda: nvml.lose(1)}[fault]()
        if fault == "throttle":
            # Throttling penalises compute (×clock ratio): an SLO between the estimates before
            # and after the penalty no longer fits the throttled GPU.
            times.append(await eventually(lambda: candidate(mesh, dep).penalty_reason.startswith(
                "GPU"), REROUTE_BOUND_S))
            assert CHEAP not in {s.split("/")[0] for s in await served_just_under(mesh, dep)}
        else:
            times.append(await eventually(lambda: bool(candidate(mesh, dep).dropped_reason),
                                          REROUTE_BOUND_S))
            assert CHEAP not in {s.split("/")[0] for s in await served(mesh, LOOSE)}
        nvml.recover(1)
        await eventually(lambda: not candidate(mesh, dep).dropped_reason
                         and not candidate(mesh, dep).penalty_reason, REROUTE_BOUND_S)
    assert await served(mesh, LOOSE) == {dep}  # recovered: the cheapest again
    print(f"\n{fault}: telemetry change → edge route change: median "
          f"{statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
          f"over {len(times)} runs")


async def test_price_change_makes_traffic_follow(mesh: Mesh) -> None:
    dep, west = f"{CHEAP}/summarize-small", "west-cheap/summarize-small"
    assert await served(mesh, LOOSE) == {dep}
    stub = mesh.placement.service
    up = placement_pb2.UpdatePricesRequest(prices=[fleet_pb2.Price(
        accelerator="gpu-cheap", cloud="gcp", region="*", price_class="spot",
        usd_per_gpu_hour=DEAR_USD_H, source="test", as_of="2026-11-22")])
    await stub.UpdatePrices(up, None)  # type: ignore[arg-type]
    # The edge's table has the new price: central-cheap dearer than west-cheap (at 555x the
    # price per GPU-second, whatever each one's measured compute on this host).
    await eventually(lambda: candidate(mesh, dep).cost_usd > candidate(mesh, west).cost_usd,
                     2.0)
    assert await served(mesh, LOOSE) == {west}
    up.prices[0].usd_per_gpu_hour = CHEAP_USD_H
    await stub.UpdatePrices(up, None)  # type: ignore[arg-type]
    await eventually(lambda: candidate(mesh, dep).cost_usd < candidate(mesh, west).cost_usd,
                     2.0)
    assert await served(mesh, LOOSE) == {dep}  # the price back: the traffic back


async def test_slower_backend_loses_tight_slo_traffic(mesh: Mesh,
                                                      tritons: dict[str, TritonProcess]
                                                      ) -> None:
    dep = f"{CHEAP}/summarize-small"
    await answered(mesh, "20000", n=10)  # warm: measured, not the prior estimate
    c = candidate(mesh, dep)
    # An SLO the cheap remote backend meets as it is (whatever the machine's load now),
    # far below what it takes once 40 times slower.
    slo = f"{1.5 * max(c.latency_p95_ms, mesh.edge.router.stats.p95.get(dep, 0.0)) + 20:.1f}"
    assert await served(mesh, slo) == {dep}
    normal_compute = c.compute_ms
    set_control(tritons[CHEAP].repository, slow_factor=40.0)
    try:
        t0 = time.monotonic()
        moved: set[str] = set()
        # Calls keep measuring it; the agent reports Triton's compute time; the table follows.
        while time.monotonic() - t0 < 10 and not moved:
            # Answered elsewhere, at any attempt: a call cut on the slowed backend and
            # retried elsewhere has left it too.
            out = await answered(mesh, slo, n=3)
            moved = {s for s in out if not s.startswith(CHEAP)}
        assert moved, "tight-SLO traffic never left the slowed backend"
        print(f"\nslowed backend: tight-SLO traffic moved after {time.monotonic() - t0:.2f} s")
        # And placement learns it from Triton's statistics through the agent. Tight calls
        # no longer go there, so loose-SLO calls (for which it is still the cheapest) keep
        # Triton measuring it, as other callers' traffic would.
        t1 = time.monotonic()
        while candidate(mesh, dep).compute_ms <= 3 * normal_compute:
            assert time.monotonic() - t1 < 10, "placement never learned the slower compute"
            await answered(mesh, "20000", n=1)
        print(f"placement's compute estimate followed after {time.monotonic() - t1:.2f} s")
    finally:
        set_control(tritons[CHEAP].repository, slow_factor=1.0)
