"""benchmarks.costsim.queue_diag: one reason per 'queueing not foreseen' miss, from what the
edge predicted and what the backend held."""

from __future__ import annotations

from benchmarks.cost import SCENARIOS
from benchmarks.costsim import queue_diag
from benchmarks.costsim.misses import CAUSES
from benchmarks.costsim.queue_diag import REASONS, Seen, reason


def full(**kw: float) -> Seen:
    """A backend of 4 servers, all busy, this edge's share 1 slot."""
    return Seen(servers=4, busy=4, slots=1.0, **kw)  # type: ignore[arg-type]


def test_the_first_reason_that_applies() -> None:
    assert reason(full(strict=False, retry=True)) == REASONS[0]
    assert reason(full(retry=True, own_inflight=3)) == REASONS[1]
    assert reason(full(own_inflight=1, others_over=2.0)) == REASONS[2]
    assert reason(full(own_inflight=0, others_over=2.0)) == REASONS[3]
    behind = full(own_inflight=0, queued=2, ahead_work_ms=200.0, ahead_other_variant_ms=150.0)
    assert reason(behind) == REASONS[4]
    assert reason(full(own_inflight=0, queued=2, ahead_work_ms=200.0)) == REASONS[5]


def test_every_queueing_miss_gets_one_reason() -> None:
    d = queue_diag.run_one(str(SCENARIOS / "single-cloud-hetero.toml"), 0, quick=True)
    assert d.causes[CAUSES[4]] > 0
    assert sum(d.reasons.values()) == d.causes[CAUSES[4]]
    assert set(d.reasons) <= set(REASONS)
    for name in d.reasons:  # the means are of what the rows held: a miss waited
        assert d.means[name]["wait_ms"] > 0
    assert "single-cloud-hetero seed 0" in queue_diag.report([d])
