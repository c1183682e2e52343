"""placement.splits: one backend is one FIFO over its variants, so a class's wait is planned at
the mean service time of everything the split puts there, not at its own variant's."""

from __future__ import annotations

import pytest

from placement import queueing
from placement.edge_learning import EdgeLearning
from placement.model import Candidate
from placement.splits import RATE_HEADROOM, Demand, max_utilisation, split


def cand(dep: str, cost: float, compute: float, concurrency: int = 4,
         latency: float = 20.0) -> Candidate:
    backend, variant = dep.split("/", 1)
    return Candidate(
        deployment_id=dep, backend_id=backend, endpoint=f"{backend}.test:8001",
        variant=variant, region="r", cloud="aws", accelerator="nvidia-h100-80gb",
        quality=0.8, latency_p95_ms=latency, rtt_ms=1.0, queue_ms=0.0, compute_ms=compute,
        cost_usd=cost, spare_capacity=100.0, concurrency=concurrency, edge_slots=0.0,
        observed=True)


FAST = cand("a/fast", 1e-6, 10.0)  # the tight class's variant on backend a
SLOW = cand("a/slow", 1e-6, 100.0, latency=150.0)  # a loose class's, on the same server
ELSEWHERE = cand("b/slow", 1e-5, 100.0, concurrency=64, latency=150.0)
TIGHT = Demand("tight", 60.0, 40.0, [FAST])  # slack 40 ms at a 10 ms service
LOOSE = Demand("loose", 2000.0, 100.0, [SLOW, ELSEWHERE])


def planned(got: dict[object, dict[str, float]], demands: list[Demand]
            ) -> tuple[float, float, float]:
    """Backend a's calls/s, Erlangs and mean service (ms) under the split."""
    calls = erlangs = 0.0
    for d in demands:
        for c in d.feasible:
            if c.backend_id == "a":
                x = got[d.key].get(c.deployment_id, 0.0) * d.rate * RATE_HEADROOM
                calls += x
                erlangs += x * c.compute_ms / 1000
    return calls, erlangs, erlangs / calls * 1000


def test_a_loose_class_with_long_calls_keeps_the_tight_class_wait_in_its_slack() -> None:
    """The old cap (the tight class's utilisation at its own 10 ms service) let the loose
    class fill a with 100 ms calls up to it: the shared queue's tail wait then ran several
    times the tight class's 40 ms slack (fails on the code before)."""
    got = split([TIGHT, LOOSE])
    assert got["tight"] == {"a/fast": 1.0}
    _, erlangs, mean_ms = planned(got, [TIGHT, LOOSE])
    rho = erlangs / FAST.slots
    assert queueing.wait_ms(mean_ms, FAST.concurrency, rho) <= 40.0 + 1e-6
    # and the loose class still uses what room that leaves on a, the rest elsewhere
    assert 0 < got["loose"]["a/slow"] < 1 and got["loose"]["b/slow"] > 0
    # planned at the tight class's own service time, a takes far more of the loose class
    assert rho < max_utilisation(40.0, 10.0, FAST.concurrency)


def test_one_service_time_plans_as_before() -> None:
    """A backend whose classes all run one variant: its utilisation alone bounds it (the
    same answer as the utilisation at that service time)."""
    big = cand("c/fast", 1e-5, 10.0, concurrency=64)  # room for the rest
    got = split([Demand("k", 60.0, 1000.0, [FAST, big])])["k"]
    rho = max_utilisation(40.0, 10.0, FAST.concurrency)
    assert got["a/fast"] == pytest.approx(FAST.slots * rho / 0.010 / (1000.0 * RATE_HEADROOM))


def test_reserved_calls_join_the_mix() -> None:
    """Another path's long calls on a (the slow path's, ``reserved`` with their calls/s)
    lengthen the mean service a's tight class waits behind: less of it fits there."""
    reserved = {"a": 0.5}  # Erlangs: 5 calls/s of 100 ms
    tight = Demand("tight", 60.0, 1000.0, [FAST, cand("c/fast", 1e-5, 10.0, concurrency=64)])
    alone = split([tight], reserved)["tight"]["a/fast"]
    mixed = split([tight], reserved, reserved_calls={"a": 5.0})["tight"]["a/fast"]
    assert 0 < mixed < alone


def test_edge_learning_reports_the_slow_paths_calls_with_their_erlangs() -> None:
    """What the slow path sent a backend reaches the split as Erlangs and as calls/s."""
    learning = EdgeLearning()
    learning.learned(0.0, {})
    for _ in range(10):
        learning.other_path("a/slow")
    got = learning.learned(1.0, {"a/slow": SLOW})
    assert got.reserved_calls["a"] > 0
    assert got.reserved["a"] == pytest.approx(got.reserved_calls["a"] * SLOW.compute_ms / 1e3)
