"""The learned TTFT margin (placement/stream_guard.py) and how choose_stream uses it."""

from __future__ import annotations

import pytest

from placement.errors import ConfigError
from placement.model import Candidate
from placement.stream_guard import TtftGuard, quantile, tpot_factors
from placement.streams import GUARDED_HEADROOM, StreamAsk, TokenEstimate, choose_stream

EST = TokenEstimate(prefill_ms_per_token=0.1, tpot_base_ms=10.0, tpot_per_stream_ms=0.0,
                    usd_per_second=0.001)
DEAR = TokenEstimate(0.1, 10.0, 0.0, 0.01)


def cand(name: str) -> Candidate:
    return Candidate(deployment_id=f"{name}/llm", backend_id=name, endpoint=f"{name}:1",
                     variant="llm", region="r", cloud="c", accelerator="a", quality=1.0,
                     latency_p95_ms=50.0, rtt_ms=0.0, queue_ms=0.0, compute_ms=1000.0,
                     cost_usd=0.001, spare_capacity=1.0)


def test_no_margin_before_min_samples_then_the_quantile_of_the_gaps() -> None:
    g = TtftGuard(window=10, quantile=0.9, min_samples=3, max_age_s=60)
    g.observed("d", 100.0, 150.0, now_s=1.0)
    g.observed("d", 100.0, 130.0, now_s=1.0)
    assert "d" not in g.margins(1.0)
    g.observed("d", 100.0, 300.0, now_s=1.0)
    assert g.margins(1.0)["d"] == pytest.approx(quantile([30.0, 50.0, 200.0], 0.9))
    assert g.margins(1.0)["d"] == pytest.approx(170.0)


def test_an_over_prediction_gives_no_negative_margin() -> None:
    g = TtftGuard(window=5, quantile=0.5, min_samples=1, max_age_s=60)
    g.observed("d", 500.0, 100.0, now_s=0.0)
    assert g.margins(0.0)["d"] == 0.0


def test_old_gaps_age_out_and_the_margin_goes_away() -> None:
    g = TtftGuard(window=10, quantile=1.0, min_samples=2, max_age_s=30)
    g.observed("d", 0.0, 900.0, now_s=0.0)
    g.observed("d", 0.0, 800.0, now_s=10.0)
    assert g.margins(20.0)["d"] == 900.0
    assert "d" not in g.margins(35.0)  # one gap left: below min_samples
    assert g.samples("d") == 1


def test_a_stream_still_waiting_past_its_prediction_raises_the_margin_now() -> None:
    g = TtftGuard(window=10, quantile=1.0, min_samples=5, max_age_s=60)
    g.sent("s1", "d", predicted_ms=200.0, now_s=10.0)
    assert g.margins(10.1) == {}  # not late yet
    assert g.margins(11.0)["d"] == pytest.approx(800.0)  # 1000 ms waited, 200 predicted
    g.first_token("s1", now_s=11.5)
    assert g.margins(11.5) == {} and g.samples("d") == 1  # learned, one gap < min_samples
    g.sent("s2", "d", 100.0, now_s=20.0)
    g.abandoned("s2")
    assert g.margins(30.0) == {}
    g.first_token("s2", now_s=31.0)  # forgotten: nothing learned
    assert g.samples("d") == 1


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="quantile"):
        TtftGuard(quantile=0.0)
    with pytest.raises(ConfigError, match="min_samples"):
        TtftGuard(window=5, min_samples=6)


def test_a_learned_margin_moves_a_stream_off_a_late_deployment() -> None:
    cands = [cand("cheap"), cand("dear")]
    est = {"cheap/llm": EST, "dear/llm": DEAR}
    ask = StreamAsk(prompt_tokens=1000, max_tokens=10, ttft_ms=1000)  # 100 ms predicted
    assert choose_stream(cands, est, {}, ask).candidate.backend_id == "cheap"
    limit = 1000 * (1 - GUARDED_HEADROOM)
    small = choose_stream(cands, est, {}, ask, ttft_margins={"cheap/llm": limit - 100.0})
    assert small.candidate.backend_id == "cheap"
    assert small.chosen.margin_ms == limit - 100.0 and small.chosen.ttft_limit_ms == 100.0
    late = choose_stream(cands, est, {}, ask, ttft_margins={"cheap/llm": limit - 99.0})
    assert late.candidate.backend_id == "dear" and late.slo_met
    cheap = next(o for o in late.options if o.candidate.backend_id == "cheap")
    assert not cheap.feasible and cheap.ttft_limit_ms == pytest.approx(99.0)


def test_the_fixed_band_still_bounds_a_deployment_with_a_zero_margin() -> None:
    cands = [cand("cheap"), cand("dear")]
    est = {"cheap/llm": EST, "dear/llm": DEAR}
    ask = StreamAsk(prompt_tokens=6000, max_tokens=10, ttft_ms=1000)  # 600 ms predicted
    choice = choose_stream(cands, est, {}, ask, ttft_margins={"cheap/llm": 0.0,
                                                              "dear/llm": 0.0})
    assert not choice.slo_met  # 600 > 1000 × (1 − 0.5) on both
    assert all(o.ttft_limit_ms == 500.0 for o in choice.options)
    free = choose_stream(cands, est, {}, ask, ttft_headroom=0.0,
                         ttft_margins={"cheap/llm": 0.0})
    assert free.candidate.backend_id == "cheap" and free.slo_met


def test_tpot_factors_are_the_mean_slowdown_of_streams_decoding_now() -> None:
    f = tpot_factors([("a", 10.0, 30.0), ("a", 10.0, 10.0), ("b", 20.0, 10.0),
                      ("c", 0.0, 50.0), ("d", 10.0, float("nan"))])
    assert f == {"a": pytest.approx(2.0), "b": 1.0}  # faster than predicted: left at 1


def test_a_slowed_deployment_stops_meeting_a_tight_tpot() -> None:
    cands = [cand("cheap"), cand("dear")]
    est = {"cheap/llm": EST, "dear/llm": DEAR}  # both predict TPOT 10 ms
    ask = StreamAsk(prompt_tokens=100, max_tokens=10, tpot_ms=25)
    assert choose_stream(cands, est, {}, ask).candidate.backend_id == "cheap"
    slowed = choose_stream(cands, est, {}, ask, tpot_factors={"cheap/llm": 3.0})
    assert slowed.candidate.backend_id == "dear"
    cheap = next(o for o in slowed.options if o.candidate.backend_id == "cheap")
    assert cheap.tpot_ms == pytest.approx(30.0) and not cheap.feasible
