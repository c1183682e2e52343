"""placement.filters.slo's probe rule for unmeasured deployments, placement.feedback's
class headroom and placement.pipeline's idle-fit fallback (all off by default; switched on by
``benchmarks.cost_check`` variants)."""

from __future__ import annotations

import random

import pytest

from placement import feedback, pipeline
from placement.feedback import SloFeedback
from placement.filters import slo
from placement.filters.slo import SloFilter, probe_ms, unmeasured
from placement.model import CallContext, Candidate, Hints
from placement.registry import build_profile


def _cand(dep: str = "b1/v", p95: float = 80.0, observed: bool = False) -> Candidate:
    return Candidate(deployment_id=dep, backend_id="b1", endpoint="x", variant="v",
                     region="r", cloud="c", accelerator="a", quality=1.0, latency_p95_ms=p95,
                     rtt_ms=20.0, queue_ms=0.0, compute_ms=40.0, cost_usd=1e-6,
                     spare_capacity=10.0, concurrency=4, edge_slots=4.0, observed=observed)


def test_unmeasured_means_no_edge_measured_it_unless_own_is_asked() -> None:
    ctx = CallContext(Hints(slo_ms=200.0))
    assert unmeasured(_cand(), ctx)
    assert not unmeasured(_cand(observed=True), ctx)  # other edges measured it
    assert unmeasured(_cand(observed=True), ctx, own=True)
    own = CallContext(Hints(slo_ms=200.0), observed_p95_ms={"b1/v": 70.0})
    assert not unmeasured(_cand(), own, own=True)


def test_an_unmeasured_row_takes_only_calls_with_slack_over_its_modelled_part() -> None:
    c = _cand(p95=80.0)  # rtt 20 + modelled 60
    ctx = CallContext(Hints(slo_ms=100.0))
    assert probe_ms(c, ctx, 80.0, slack=1.0) == 80.0  # off
    assert probe_ms(c, ctx, 80.0, slack=2.0) == pytest.approx(20.0 + 2 * 60.0)
    assert probe_ms(_cand(observed=True), ctx, 80.0, slack=2.0) == 80.0


def test_the_slo_filter_applies_the_probe_slack_only_when_switched_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    f, c = SloFilter(), _cand(p95=80.0)
    tight = CallContext(Hints(slo_ms=100.0))
    loose = CallContext(Hints(slo_ms=200.0))
    assert f.reject(c, tight) is None
    monkeypatch.setattr(slo, "PROBE_SLACK", 2.0)
    assert f.reject(c, tight) is not None  # 140 ms > 100 ms: no bet of a tight call
    assert f.reject(c, loose) is None  # 140 ms fits 200 ms: a probe
    assert f.reject(_cand(p95=80.0, observed=True), tight) is None


def test_class_headroom_rises_with_the_class_misses_on_any_deployment() -> None:
    fb = SloFeedback(step=0.1, class_step=0.02)
    fb.record("b1/v", 100.0, met=False, now=0.0)
    m = fb.margins(100.0, 0.0)
    assert fb.headroom(100.0) == pytest.approx(2.0)
    assert m.get("b1/v", 0.0) == pytest.approx(10.0 + 2.0)
    assert m.get("b2/v", 0.0) == pytest.approx(2.0)  # a deployment that never missed
    assert fb.headroom(1000.0) == 0.0  # another class learns nothing
    assert SloFilter().reject(_cand("b2/v", p95=99.0),
                              CallContext(Hints(slo_ms=100.0), slo_margins=m)) is not None


def test_class_headroom_falls_with_met_calls_and_stays_in_its_range(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fb = SloFeedback(tail=0.005, class_step=0.02)
    fb.record("b1/v", 100.0, met=False, now=0.0)
    for _ in range(500):
        fb.record("b1/v", 100.0, met=True, now=0.0)
    assert fb.headroom(100.0) == 0.0  # the range's floor (0 by default)
    for _ in range(100):
        fb.record("b1/v", 100.0, met=False, now=0.0)
    assert fb.headroom(100.0) == pytest.approx(feedback.CLASS_RANGE[1] * 100.0)
    monkeypatch.setattr(feedback, "CLASS_RANGE", (-0.1, 0.3))
    spend = SloFeedback(tail=0.005, class_step=0.02)
    for _ in range(100_000):
        spend.record("b1/v", 100.0, met=True, now=0.0)
    assert spend.headroom(100.0) == pytest.approx(-10.0)
    assert spend.margins(100.0, 0.0).get("b9/v", 0.0) == pytest.approx(-10.0)


def test_class_headroom_is_off_by_default() -> None:
    fb = SloFeedback()
    fb.record("b1/v", 100.0, met=False, now=0.0)
    assert fb.headroom(100.0) == 0.0
    assert fb.margins(100.0, 0.0).get("b2/v", 0.0) == 0.0


def _row(dep: str, backend: str, p95: float, slots: float) -> Candidate:
    return Candidate(deployment_id=dep, backend_id=backend, endpoint="x", variant="v",
                     region="r", cloud="c", accelerator="a", quality=1.0, latency_p95_ms=p95,
                     rtt_ms=1.0, queue_ms=0.0, compute_ms=p95 / 1.5, cost_usd=1e-6,
                     spare_capacity=10.0, concurrency=2, edge_slots=slots)


def test_fallback_idle_fit_prefers_a_row_that_fits_with_a_free_slot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    slow = _row("t4/v", "t4", p95=76.0, slots=2.0)  # within its share, too slow even idle
    fast = _row("h100/v", "h100", p95=12.0, slots=0.5)  # fits idle, past its share
    ctx = CallContext(Hints(slo_ms=70.0), inflight={"h100/v": 4})
    assert ctx.latency_ms(fast) > ctx.latency_ms(slow) > 70.0  # nothing meets the SLO
    monkeypatch.setattr(pipeline, "FALLBACK_CHANCE", False)  # the rule it was measured on
    profile = build_profile("cheapest")
    d = profile.choose([slow, fast], ctx, random.Random(0))
    assert not d.slo_met and d.candidate is slow  # off: the lower worst case
    monkeypatch.setattr(pipeline, "FALLBACK_IDLE_FIT", True)
    d = profile.choose([slow, fast], ctx, random.Random(0))
    assert not d.slo_met and d.candidate is fast
