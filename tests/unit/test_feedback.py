"""placement.feedback: margins learned from SLO misses, per deployment and SLO class."""

from __future__ import annotations

import pytest

from placement.feedback import SloFeedback, slo_class
from placement.filters.slo import SloFilter
from placement.model import CallContext, Candidate, Hints


def _cand(dep: str = "b1/v", p95: float = 80.0) -> Candidate:
    return Candidate(deployment_id=dep, backend_id="b1", endpoint="x", variant="v",
                     region="r", cloud="c", accelerator="a", quality=1.0, latency_p95_ms=p95,
                     rtt_ms=1.0, queue_ms=0.0, compute_ms=20.0, cost_usd=1e-6,
                     spare_capacity=10.0, concurrency=4, edge_slots=4.0)


def test_a_miss_raises_the_margin_of_that_deployment_and_class_only() -> None:
    fb = SloFeedback(step=0.1)
    fb.record("b1/v", 100.0, met=False, now=0.0)
    assert fb.margins(100.0, 0.0)["b1/v"] == pytest.approx(10.0)
    assert "b2/v" not in fb.margins(100.0, 0.0)
    assert "b1/v" not in fb.margins(1000.0, 0.0)  # another SLO class learns nothing
    assert fb.margins(101.0, 0.0)["b1/v"] == pytest.approx(10.0)  # same 10 % class


def test_met_calls_undo_a_miss_at_the_target_tail_rate() -> None:
    fb = SloFeedback(tail=0.005, step=0.1)
    fb.record("b1/v", 100.0, met=False, now=0.0)
    for _ in range(100):
        fb.record("b1/v", 100.0, met=True, now=0.0)
    half = fb.margins(100.0, 0.0)["b1/v"]
    assert 4.0 < half < 6.0  # (1 - τ)/τ = 199 met calls undo one miss
    for _ in range(120):
        fb.record("b1/v", 100.0, met=True, now=0.0)
    assert "b1/v" not in fb.margins(100.0, 0.0)


def test_margins_decay_in_time_so_a_deployment_pushed_out_is_tried_again() -> None:
    fb = SloFeedback(step=0.1, half_life_s=10.0, idle_s=5.0)
    fb.record("b1/v", 100.0, met=False, now=0.0)
    assert fb.margins(100.0, 5.0)["b1/v"] == pytest.approx(10.0)  # idle only from t = 5
    assert fb.margins(100.0, 15.0)["b1/v"] == pytest.approx(5.0)
    assert "b1/v" not in fb.margins(100.0, 200.0)


def test_a_deployment_still_taking_calls_is_not_decayed_in_time() -> None:
    """Its margin moves with its calls' outcomes only: 40 met calls over 40 s (1/s) take
    40 × τ/(1 − τ) of a step off, not the half a 40 s half-life would."""
    fb = SloFeedback(tail=0.005, step=0.1, half_life_s=40.0, idle_s=5.0)
    fb.record("b1/v", 100.0, met=False, now=0.0)
    for t in range(1, 41):
        fb.record("b1/v", 100.0, met=True, now=float(t))
    assert fb.margins(100.0, 40.0)["b1/v"] == pytest.approx(10.0 - 40 * 0.1 * 100 * 0.005
                                                           / 0.995)
    # The older rule (decay whether or not calls go there) had halved it.
    old = SloFeedback(tail=0.005, step=0.1, half_life_s=40.0, idle_s=None)
    old.record("b1/v", 100.0, met=False, now=0.0)
    for t in range(1, 41):
        old.record("b1/v", 100.0, met=True, now=float(t))
    assert old.margins(100.0, 40.0)["b1/v"] < 5.5


def test_the_idle_clock_is_per_deployment() -> None:
    fb = SloFeedback(step=0.1, half_life_s=10.0, idle_s=5.0)
    fb.record("b1/v", 100.0, met=False, now=0.0)
    fb.record("b2/v", 100.0, met=False, now=0.0)
    for t in range(1, 16):
        fb.record("b2/v", 100.0, met=True, now=float(t))  # b2 keeps taking calls
    m = fb.margins(100.0, 15.0)
    assert m["b1/v"] == pytest.approx(5.0)  # idle since t = 5: one half-life
    assert m["b2/v"] == pytest.approx(10.0 - 15 * 0.1 * 100 * 0.005 / 0.995)


def test_the_margins_view_is_read_only() -> None:
    fb = SloFeedback()
    fb.record("b1/v", 100.0, met=False, now=0.0)
    with pytest.raises(TypeError):
        fb.margins(100.0, 0.0)["b1/v"] = 0.0  # type: ignore[index]


def test_slo_classes_are_a_geometric_grid() -> None:
    assert slo_class(100.0) == slo_class(101.0) != slo_class(120.0)


def test_the_slo_filter_adds_the_learned_margin() -> None:
    c = _cand(p95=80.0)
    ctx = CallContext(Hints(slo_ms=100.0))
    assert SloFilter().reject(c, ctx) is None
    ctx = CallContext(Hints(slo_ms=100.0), slo_margins={"b1/v": 25.0})
    reason = SloFilter().reject(c, ctx)
    assert reason is not None and "25.0 ms learned from misses" in reason
    ctx = CallContext(Hints(slo_ms=100.0), slo_margins={"other/v": 25.0})
    assert SloFilter().reject(c, ctx) is None
