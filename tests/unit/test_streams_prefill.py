"""Issue 14, tenth session's candidates (built and off): the prefill learned as a wait plus a
rate (``placement.streams_prefill``), a stale rate relaxed, a TTFT reserve in prompt tokens."""

from __future__ import annotations

import pytest

from placement.model import Candidate
from placement.streams import StreamAsk, TokenEstimate, predict
from placement.streams_prefill import MIN_WEIGHT, PrefillLine, relaxed_rate


def _cand() -> Candidate:
    return Candidate(deployment_id="a/llm", backend_id="a", endpoint="a:1", variant="llm",
                     region="r", cloud="c", accelerator="x", quality=1.0,
                     latency_p95_ms=100.0, rtt_ms=10.0, queue_ms=0.0, compute_ms=1000.0,
                     cost_usd=0.001, spare_capacity=1.0)


def test_the_line_separates_a_wait_from_the_rate() -> None:
    line = PrefillLine(mode="mean")
    for tokens in (100, 2000, 400, 1500, 800, 1200, 300, 1800):
        line.observe(tokens, 200.0 + 0.1 * tokens)
    fit = line.fit()
    assert fit is not None
    assert fit[0] == pytest.approx(200.0, rel=1e-6)
    assert fit[1] == pytest.approx(0.1, rel=1e-6)
    # the per-token ratio over the same samples folds the wait in: a 2,000-token prompt
    # predicted at 200 + 200 ms by the line, far more by the ratio of its short samples
    assert 0.1 * 2000 + fit[0] < 2000 * (200.0 + 0.1 * 100) / 100


def test_one_short_prompt_that_waited_does_not_make_the_rate_slow() -> None:
    line = PrefillLine(mode="mean")
    for tokens in (1000, 500, 1500, 800):
        line.observe(tokens, 0.1 * tokens)
    line.observe(50, 300.0 + 0.1 * 50)  # waited 300 ms behind another edge's prefill
    fit = line.fit()
    assert fit is not None
    # the per-token sample was 6.1 ms: an EWMA at 0.2 would have gone from 0.1 to 1.3 ms; the
    # line's slope is ≤ 0 here, so it falls back to the ratio of its sums: 0.2 ms
    assert fit[1] == pytest.approx(0.2, abs=0.01)


def test_no_fit_before_enough_samples_and_a_ratio_without_spread() -> None:
    line = PrefillLine(mode="mean")
    line.observe(1000, 100.0)
    assert MIN_WEIGHT > 1
    assert line.fit() is None
    for _ in range(4):
        line.observe(1000, 100.0)
    assert line.fit() == (0.0, pytest.approx(0.1))


def test_the_recent_wait_follows_the_residuals() -> None:
    line = PrefillLine(mode="recent")
    for tokens in (1000, 500, 1500, 800, 1200):
        line.observe(tokens, 0.1 * tokens)
    for _ in range(20):
        line.observe(1000, 0.1 * 1000 + 150.0)
    fit = line.fit()
    assert fit is not None
    assert fit[0] > 50.0


def test_a_stale_rate_relaxes_toward_the_floor() -> None:
    assert relaxed_rate(1.0, 0.2, 0.0, 20.0) == 1.0
    assert relaxed_rate(1.0, 0.2, 20.0, 20.0) == pytest.approx(0.6)
    assert relaxed_rate(1.0, 0.2, 1e6, 20.0) == pytest.approx(0.2)
    assert relaxed_rate(0.1, 0.2, 100.0, 20.0) == 0.1  # never up to a floor above it
    assert relaxed_rate(1.0, 0.2, 100.0, 0.0) == 1.0  # off


def test_the_wait_enters_the_ttft_not_the_cost() -> None:
    ask = StreamAsk(prompt_tokens=1000, max_tokens=100, ttft_ms=600.0, tpot_ms=50.0)
    plain = TokenEstimate(0.1, 10.0, 1.0, 1.0)
    waited = TokenEstimate(0.1, 10.0, 1.0, 1.0, prefill_wait_ms=250.0)
    a, b = predict(_cand(), plain, 0, ask), predict(_cand(), waited, 0, ask)
    assert b.ttft_ms == pytest.approx(a.ttft_ms + 250.0)
    assert b.cost_usd == a.cost_usd
    assert a.feasible and not b.feasible  # 10 + 100 ms fits 300; + 250 ms does not


def test_a_reserve_in_tokens_shrinks_the_limit_by_the_deployments_rate() -> None:
    ask = StreamAsk(prompt_tokens=1000, max_tokens=100, ttft_ms=600.0, tpot_ms=50.0)
    est = TokenEstimate(0.2, 10.0, 1.0, 1.0)
    a = predict(_cand(), est, 0, ask)
    b = predict(_cand(), est, 0, ask, reserve_tokens=500.0)
    assert a.ttft_limit_ms == pytest.approx(300.0)
    assert b.ttft_limit_ms == pytest.approx(300.0 - 100.0)
    assert a.feasible and not b.feasible  # 10 + 200 ms: under 300, over 200
