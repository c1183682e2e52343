"""placement.tail_margins: per deployment, the excess over the expected p95 at the target tail."""

from __future__ import annotations

import random

import pytest

from placement.feedback import SloFeedback
from placement.filters.slo import SloFilter
from placement.model import CallContext, Candidate, Hints
from placement.tail_margins import TailMargins


def _cand(p95: float) -> Candidate:
    return Candidate(deployment_id="b1/v", backend_id="b1", endpoint="x", variant="v",
                     region="r", cloud="c", accelerator="a", quality=1.0, latency_p95_ms=p95,
                     rtt_ms=1.0, queue_ms=0.0, compute_ms=50.0, cost_usd=1e-6,
                     spare_capacity=10.0, concurrency=4, edge_slots=4.0)


def test_it_settles_at_the_tail_quantile_of_the_excess() -> None:
    """Latency = 100 ms × lognormal(σ = 0.3): the p95 is ~164 ms, the p99.5 ~217 ms; told
    to expect the p95, the margin settles near the 53 ms between them."""
    rng = random.Random(7)
    tm = TailMargins(tail=0.005, eta=0.01)
    samples = [100.0 * rng.lognormvariate(0.0, 0.3) for _ in range(200_000)]
    ordered = sorted(samples)
    p95, p995 = ordered[int(0.95 * len(ordered))], ordered[int(0.995 * len(ordered))]
    for x in samples:
        tm.record("b1/v", x, p95)
    assert tm.margins()["b1/v"] == pytest.approx(p995 - p95, rel=0.2)


def test_a_deployment_never_past_its_p95_gets_no_margin() -> None:
    tm = TailMargins()
    for i in range(1000):
        tm.record("b1/v", 50.0 + i % 30, 100.0)
    assert "b1/v" not in tm.margins()


def test_a_margin_shrinks_back_when_the_excess_stops() -> None:
    tm = TailMargins(tail=0.005, eta=0.05)
    for _ in range(10):
        tm.record("b1/v", 200.0, 100.0)  # ten calls far past the p95
    grown = tm.margins()["b1/v"]
    assert grown == pytest.approx(10 * 5.0 * 0.995)
    for _ in range(100):
        tm.record("b1/v", 90.0, 100.0)
    assert tm.margins()["b1/v"] == pytest.approx(grown - 100 * 5.0 * 0.005)


def test_feedback_adds_the_tail_margin_and_the_slo_filter_uses_it() -> None:
    fb = SloFeedback(tails=TailMargins(tail=0.005, eta=0.05))
    c = _cand(p95=90.0)
    hints = Hints(slo_ms=100.0)
    assert SloFilter().reject(c, CallContext(hints, slo_margins=fb.margins(100.0, 0.0))) is None
    for _ in range(6):  # met calls (under the SLO), but 49 ms past the 50 ms p95 expected
        fb.served("b1/v", 99.0, 50.0)
        fb.record("b1/v", 100.0, True, 0.0)
    m = fb.margins(100.0, 0.0)["b1/v"]
    assert m == pytest.approx(6 * 2.5 * 0.995)
    assert SloFilter().reject(c, CallContext(hints, slo_margins=fb.margins(100.0, 0.0)))
    fb.served("b1/v", 101.0, 50.0)
    fb.record("b1/v", 100.0, False, 0.0)  # a miss
    assert fb.margins(100.0, 0.0)["b1/v"] == pytest.approx(m + 2.5 * 0.995 + 30.0)
    # Every SLO class sees the deployment's tail margin; only the missed class its own.
    assert fb.margins(1000.0, 0.0)["b1/v"] == pytest.approx(m + 2.5 * 0.995)


def test_without_tails_the_latency_is_ignored() -> None:
    fb = SloFeedback()
    for _ in range(6):
        fb.served("b1/v", 99.0, 80.0)
    assert "b1/v" not in fb.margins(100.0, 0.0)
