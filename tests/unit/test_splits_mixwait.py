"""placement.splits.MIX_WAIT (built and off): a class whose calls are more than MIX_FACTOR
times longer than the mix the split already put on a backend keeps the shared FIFO's wait,
at the mix's mean service time, within the tightest slack placed there."""

from __future__ import annotations

import pytest

from placement import queueing, splits
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


def on_a(got: dict[object, dict[str, float]]) -> tuple[float, float]:
    """Backend a's planned Erlangs and mean service time (ms)."""
    calls = erlangs = 0.0
    for d in (TIGHT, LOOSE):
        for c in d.feasible:
            if c.backend_id == "a":
                x = got[d.key].get(c.deployment_id, 0.0) * d.rate * RATE_HEADROOM
                calls += x
                erlangs += x * c.compute_ms / 1000
    return erlangs, erlangs / calls * 1000


def test_on_a_long_class_keeps_the_tight_class_wait_in_its_slack(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Off, the loose class fills a with 100 ms calls up to the tight class's utilisation
    at 10 ms, and the queue's tail wait at the mix's mean runs past the tight class's 40 ms
    slack (the assertion on the wait fails with MIX_WAIT off)."""
    monkeypatch.setattr(splits, "MIX_WAIT", False)
    off = split([TIGHT, LOOSE])
    erlangs, mean_ms = on_a(off)
    assert queueing.wait_ms(mean_ms, FAST.concurrency, erlangs / FAST.slots) > 40.0
    monkeypatch.setattr(splits, "MIX_WAIT", True)
    got = split([TIGHT, LOOSE])
    assert got["tight"] == {"a/fast": 1.0}
    erlangs, mean_ms = on_a(got)
    assert queueing.wait_ms(mean_ms, FAST.concurrency, erlangs / FAST.slots) <= 40.0 + 1e-6
    # the loose class still takes what room that leaves on a, the rest elsewhere
    assert 0 < got["loose"]["a/slow"] < off["loose"]["a/slow"]
    assert got["loose"]["b/slow"] > 0


def test_alike_service_times_plan_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls within MIX_FACTOR of the mix's mean: the utilisation cap alone bounds them,
    the same fractions as with it off."""
    near = cand("a/near", 1e-6, 10.0 * splits.MIX_FACTOR, latency=30.0)
    loose = Demand("loose", 2000.0, 100.0, [near, cand("b/near", 1e-5, 20.0, 64)])
    monkeypatch.setattr(splits, "MIX_WAIT", True)
    on = split([TIGHT, loose])
    monkeypatch.setattr(splits, "MIX_WAIT", False)
    assert on == split([TIGHT, loose])
    rho = max_utilisation(40.0, 10.0, FAST.concurrency)
    assert on["loose"]["a/near"] > 0 and rho > 0


def test_it_is_off_by_default() -> None:
    assert splits.MIX_WAIT is False
