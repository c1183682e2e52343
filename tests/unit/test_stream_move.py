"""Moving a stream that is going to miss its TPOT (placement/stream_move.py): the pace over
the last tokens, the hysteresis, at most one move, only to a deployment predicted to meet the
objective, the cheapest of those."""

from __future__ import annotations

import math

import pytest

from placement.errors import ConfigError
from placement.stream_move import MoveWatch, move_options
from placement.streams import StreamAsk, StreamOption, TokenEstimate
from tests.stream_cases import FAST, SLOW, cand

# a second fast deployment, dearer per second than FAST
DEAR = TokenEstimate(prefill_ms_per_token=0.1, tpot_base_ms=5.0, tpot_per_stream_ms=1.0,
                     usd_per_second=20.0 / 3600)
ASK = StreamAsk(prompt_tokens=200, max_tokens=80, tpot_ms=30.0)


def fed(watch: MoveWatch, gaps_ms: list[float], start_s: float = 0.0) -> float:
    """Tokens arriving ``gaps_ms`` apart after a first token at ``start_s`` (or, once the
    stream has tokens, after its last one at ``start_s``); the last one's time."""
    t = start_s
    if not watch.count:
        watch.tokens(t, 1)
    for gap in gaps_ms:
        t += gap / 1000.0
        watch.tokens(t, watch.count + 1)
    return t


def options(ask: StreamAsk = ASK, **estimates: TokenEstimate) -> list[StreamOption]:
    cands = [cand(name) for name in estimates]
    return move_options(cands, {f"{n}/llm": e for n, e in estimates.items()}, {}, ask)


def test_pace_is_the_mean_gap_over_the_last_window_tokens() -> None:
    w = MoveWatch(tpot_ms=30.0, total_tokens=100, window=4)
    fed(w, [10.0] * 3)
    assert w.pace_ms() is None  # three gaps: fewer than the window
    fed(w, [10.0, 90.0, 90.0, 90.0, 90.0], start_s=1.0)
    assert w.count == 9
    assert w.pace_ms() == pytest.approx(90.0)  # the old 10 ms gaps are out of the window


def test_stays_while_on_pace() -> None:
    w = MoveWatch(tpot_ms=30.0, total_tokens=100, window=4, confirm=0)
    t = fed(w, [20.0] * 10)
    c = w.decide(t, options(fast=FAST))
    assert c.target is None and c.reason.startswith("on pace")
    assert c.stay_ms == pytest.approx(20.0)


def test_moves_a_slow_stream_to_the_cheapest_deployment_predicted_to_meet_it() -> None:
    w = MoveWatch(tpot_ms=30.0, total_tokens=100, window=4, confirm=0)
    t = fed(w, [60.0] * 10)  # 60 ms per token against 30: staying misses
    c = w.decide(t, options(dear=DEAR, fast=FAST, slow=SLOW))
    assert c.target is not None and c.target.deployment_id == "fast/llm"  # FAST < DEAR in $
    # 11 tokens came in 600 ms; 89 more at 60 ms
    assert c.reason.startswith("slow:") and c.stay_ms == pytest.approx((600 + 89 * 60) / 99)
    # after the move: the re-prefill (ASK's 200 tokens + 1 ms RTT) counted twice over (the
    # TTFT headroom), then the 88 tokens after its first at FAST's 5 ms
    ttft = 1.0 + 200 * FAST.prefill_ms_per_token
    assert c.moved_ms == pytest.approx((600.0 + ttft / 0.5 + 88 * 5.0) / 99)
    assert w.moves == 1


def test_no_move_without_a_deployment_predicted_to_meet_the_objective() -> None:
    w = MoveWatch(tpot_ms=30.0, total_tokens=100, window=4, confirm=0)
    t = fed(w, [60.0] * 10)
    c = w.decide(t, options(slow=SLOW))  # 40 ms per token at best: no better
    assert c.target is None and "no deployment" in c.reason
    assert w.moves == 0


def test_an_unmeasured_deployment_is_not_a_target() -> None:
    w = MoveWatch(tpot_ms=30.0, total_tokens=100, window=4, confirm=0)
    t = fed(w, [60.0] * 10)
    unmeasured = move_options([cand("new")], {}, {}, ASK)  # predicted optimistically
    assert w.decide(t, unmeasured).target is None


def test_too_late_to_save_the_stream_no_move() -> None:
    """Most of the tokens already came slowly: even an instant rest would miss."""
    w = MoveWatch(tpot_ms=30.0, total_tokens=100, window=4, confirm=0)
    t = fed(w, [60.0] * 90)
    assert w.decide(t, options(fast=FAST)).target is None


def test_hysteresis_a_miss_must_be_predicted_over_confirm_tokens_in_a_row() -> None:
    w = MoveWatch(tpot_ms=30.0, total_tokens=200, window=1, confirm=3)  # pace: the last gap
    fast = options(fast=FAST)
    t = fed(w, [20.0] * 8)
    decisions = []
    for gap in [120.0, 120.0, 120.0, 10.0, 10.0, 10.0, 10.0, 10.0, 120.0, 120.0, 120.0,
                120.0]:
        t += gap / 1000.0
        w.tokens(t, w.count + 1)
        decisions.append(w.decide(t, fast).target is not None)
    # a burst of 3 slow tokens (a miss predicted at 3 tokens in a row) moves nothing; a
    # lasting one moves the stream at its fourth slow token
    assert decisions == [False] * 11 + [True]


def test_at_most_one_move() -> None:
    w = MoveWatch(tpot_ms=30.0, total_tokens=200, window=4, confirm=0)
    t = fed(w, [60.0] * 10)
    assert w.decide(t, options(fast=FAST)).target is not None
    t = fed(w, [], start_s=t)  # the move restarts the pace: the new deployment is measured
    assert w.pace_ms() is None
    for _ in range(10):
        t += 0.06
        w.tokens(t, w.count + 1)
    again = w.decide(t, options(fast=FAST))
    assert again.target is None and "moved 1 time" in again.reason


def test_the_live_slowdown_factor_enters_the_targets_prediction() -> None:
    """A deployment this edge's streams now see 3x slower than its line is no target."""
    w = MoveWatch(tpot_ms=30.0, total_tokens=100, window=4, confirm=0)
    t = fed(w, [60.0] * 10)
    cands = [cand("fast")]
    slowed = move_options(cands, {"fast/llm": FAST}, {"fast/llm": 4}, ASK,
                          tpot_factors={"fast/llm": 4.0})  # (5 + 4) × 4 = 36 ms
    assert w.decide(t, slowed).target is None
    plain = move_options(cands, {"fast/llm": FAST}, {"fast/llm": 4}, ASK)
    assert w.decide(t, plain).target is not None


def test_nothing_owed_nothing_to_decide() -> None:
    w = MoveWatch(tpot_ms=30.0, total_tokens=10, window=4, confirm=0)
    t = fed(w, [60.0] * 9)
    c = w.decide(t, options(fast=FAST))
    assert c.target is None and math.isnan(c.stay_ms)


@pytest.mark.parametrize("kwargs", [{"tpot_ms": 0.0}, {"window": 0}, {"margin": 1.0},
                                    {"confirm": -1}, {"ttft_headroom": 1.0}])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    args: dict[str, float] = {"tpot_ms": 30.0, "total_tokens": 10, **kwargs}
    with pytest.raises(ConfigError):
        MoveWatch(**args)  # type: ignore[arg-type]
