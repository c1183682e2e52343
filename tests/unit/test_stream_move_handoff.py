"""A cost handoff (placement/stream_move.py, ``MoveWatch.handoff``, built and off): a stream on
pace on a dear GPU moves to a cheaper one once the time it banked against its TPOT objective
pays for the re-prefill there, for any length it may still end at; priced alone for as many
tokens as it delivered; not a rescue move."""

from __future__ import annotations

import math

import pytest

from placement.errors import ConfigError
from placement.stream_move import HANDOFF_EVERY, MoveWatch, move_options, stay_cost
from placement.streams import TTFT_HEADROOM, StreamAsk, StreamOption, TokenEstimate
from tests.stream_cases import cand

# a fast dear GPU the stream decodes on, and a slower one at a tenth of its price
DEAR = TokenEstimate(prefill_ms_per_token=0.05, tpot_base_ms=5.0, tpot_per_stream_ms=0.1,
                     usd_per_second=20.0 / 3600)
CHEAP = TokenEstimate(prefill_ms_per_token=0.2, tpot_base_ms=12.0, tpot_per_stream_ms=0.2,
                      usd_per_second=2.0 / 3600)
TPOT = 30.0
PROMPT = 200


def fed(w: MoveWatch, n: int, gap_ms: float = 5.0) -> float:
    """The stream's tokens up to ``n`` in all, ``gap_ms`` apart from a first at 0 s; the last
    one's time."""
    for i in range(w.count, n):
        w.tokens(i * gap_ms / 1000.0, i + 1)
    return (n - 1) * gap_ms / 1000.0


def targets(w: MoveWatch, prompt: int = PROMPT, **estimates: TokenEstimate
            ) -> list[StreamOption]:
    """``move_options`` as a handoff asks them: alone, for ``handoff_tokens``."""
    ask = StreamAsk(prompt_tokens=prompt + w.count, max_tokens=w.handoff_tokens, tpot_ms=TPOT)
    return move_options([cand(n) for n in estimates],
                        {f"{n}/llm": e for n, e in estimates.items()}, {}, ask,
                        share_batch=False)


def here(w: MoveWatch) -> float:
    return stay_cost(DEAR, 1, w.handoff_tokens)


def test_hands_an_on_pace_stream_to_a_cheaper_deployment_once_its_slack_pays() -> None:
    w = MoveWatch(tpot_ms=TPOT, total_tokens=400, max_handoffs=1)
    t = fed(w, HANDOFF_EVERY)
    assert not w.handoff_due(t)  # no pace yet: fewer than the window's 8 gaps
    t = fed(w, HANDOFF_EVERY + 1)
    assert w.handoff_due(t)
    c = w.handoff(t, here(w), targets(w, cheap=CHEAP))
    assert c.target is not None and c.target.deployment_id == "cheap/llm"
    assert c.reason.startswith("cheaper")
    assert w.handoffs == 1 and w.moves == 0  # a handoff is not a rescue move
    assert not w.handoff_due(t + 1.0)  # at most max_handoffs


def test_no_handoff_before_the_banked_slack_covers_the_re_prefill() -> None:
    w = MoveWatch(tpot_ms=TPOT, total_tokens=400, max_handoffs=1)
    t = fed(w, HANDOFF_EVERY + 1)
    # a 2,000-token context re-prefills in ~400 ms there (× 2 for other edges' prefills);
    # 9 tokens at 5 ms banked 9 × 27 − 40 = 203 ms
    c = w.handoff(t, stay_cost(DEAR, 1, w.handoff_tokens), targets(w, 2000, cheap=CHEAP))
    assert c.target is None and "banked" in c.reason
    assert w.handoffs == 0


def test_every_length_the_stream_may_end_at_keeps_its_tpot() -> None:
    """Handed off at the first check that allows it, with the target as fast as predicted:
    the stream's TPOT over its tokens so far is within the objective whichever token is its
    last (the edge knows only max_tokens)."""
    w = MoveWatch(tpot_ms=TPOT, total_tokens=400, max_handoffs=1)
    prompt = 700  # a re-prefill the first checks cannot pay for
    n, c = 1, None
    while c is None or c.target is None:
        n += HANDOFF_EVERY
        t = fed(w, n)
        assert w.handoff_due(t)
        c = w.handoff(t, here(w), targets(w, prompt, cheap=CHEAP))
    assert n > HANDOFF_EVERY + 1  # the first checks waited for more slack
    option = targets(w, prompt, cheap=CHEAP)[0]
    elapsed_ms = t * 1000.0
    gap = option.ttft_ms / (1.0 - TTFT_HEADROOM)
    for length in range(n + 1, 401):
        tpot = (elapsed_ms + gap + (length - n - 1) * option.tpot_ms) / (length - 1)
        assert tpot <= TPOT, length


def test_only_when_cheaper_by_the_saving_priced_for_the_tokens_delivered() -> None:
    w = MoveWatch(tpot_ms=TPOT, total_tokens=400, max_handoffs=1)
    t = fed(w, HANDOFF_EVERY)
    near = TokenEstimate(prefill_ms_per_token=0.05, tpot_base_ms=5.0, tpot_per_stream_ms=0.1,
                         usd_per_second=17.0 / 3600)  # 15 % cheaper: under HANDOFF_SAVING
    c = w.handoff(t, here(w), targets(w, near=near))
    assert c.target is None
    # priced for 9 more tokens, a re-prefill of 209 tokens at 0.3 ms and $10/h does not pay
    # (its gap, 2 × 64 ms, the slack covers); for all 391 owed it would (a 13-token stream
    # would pay the re-prefill and save nothing)
    w2 = MoveWatch(tpot_ms=TPOT, total_tokens=400, max_handoffs=1)
    t = fed(w2, HANDOFF_EVERY)
    slowfill = TokenEstimate(prefill_ms_per_token=0.3, tpot_base_ms=5.0,
                             tpot_per_stream_ms=0.1, usd_per_second=10.0 / 3600)
    opts = targets(w2, slowfill=slowfill)
    assert opts[0].ttft_ms / (1.0 - TTFT_HEADROOM) < (w2.count * TPOT * 0.9 - t * 1000.0)
    assert w2.handoff(t, here(w2), opts).target is None
    owed_ask = StreamAsk(prompt_tokens=PROMPT + w2.count, max_tokens=w2.owed, tpot_ms=TPOT)
    owed = move_options([cand("slowfill")], {"slowfill/llm": slowfill}, {}, owed_ask,
                        share_batch=False)
    assert owed[0].cost_usd < 0.75 * stay_cost(DEAR, 1, w2.owed)


def test_the_re_prefill_keeps_within_its_share_of_the_ttft_objective() -> None:
    # re-prefill ≤ 30 ms
    w = MoveWatch(tpot_ms=TPOT, total_tokens=400, max_handoffs=1, ttft_ms=60.0)
    t = fed(w, 4 * HANDOFF_EVERY)
    opts = targets(w, cheap=CHEAP)
    assert opts[0].ttft_ms > 30.0  # 1 ms RTT + 232 tokens × 0.2 ms
    assert w.handoff(t, here(w), opts).target is None
    w2 = MoveWatch(tpot_ms=TPOT, total_tokens=400, max_handoffs=1, ttft_ms=120.0)
    t = fed(w2, 4 * HANDOFF_EVERY)
    assert w2.handoff(t, here(w2), targets(w2, cheap=CHEAP)).target is not None


def test_a_handed_off_stream_can_still_be_rescued() -> None:
    w = MoveWatch(tpot_ms=TPOT, total_tokens=400, max_handoffs=1, window=4, confirm=0)
    t = fed(w, HANDOFF_EVERY)
    assert w.handoff(t, here(w), targets(w, cheap=CHEAP)).target is not None
    for _ in range(6):  # the target turns out slow: 80 ms per token
        t += 0.08
        w.tokens(t, w.count + 1)
    ask = StreamAsk(prompt_tokens=PROMPT + w.count, max_tokens=w.owed, tpot_ms=TPOT)
    rescue = w.decide(t, move_options([cand("dear")], {"dear/llm": DEAR}, {}, ask))
    assert rescue.target is not None and w.moves == 1


def test_off_unmeasured_or_on_a_slow_pace_no_handoff() -> None:
    off = MoveWatch(tpot_ms=TPOT, total_tokens=400)  # MAX_HANDOFFS: off by default
    assert not off.handoff_due(fed(off, 2 * HANDOFF_EVERY))
    w = MoveWatch(tpot_ms=TPOT, total_tokens=400, max_handoffs=1)
    t = fed(w, HANDOFF_EVERY)
    assert stay_cost(None, 1, 8) == 0.0  # where it is is unmeasured: nothing is cheaper
    assert w.handoff(t, stay_cost(None, 1, 8), targets(w, cheap=CHEAP)).target is None
    slow = MoveWatch(tpot_ms=TPOT, total_tokens=400, max_handoffs=1)
    assert not slow.handoff_due(fed(slow, HANDOFF_EVERY, gap_ms=40.0))  # a rescue's business


def test_stay_cost_is_the_decode_alone_at_the_batch_s_tpot() -> None:
    assert stay_cost(DEAR, 3, 100) == pytest.approx(20.0 / 3600 * 100 * (5.0 + 0.2) / 1000)
    assert math.isclose(stay_cost(DEAR, 0, 10), stay_cost(DEAR, 1, 10))


@pytest.mark.parametrize("kw", [{"max_handoffs": -1}, {"handoff_saving": 1.0},
                                {"handoff_saving": -0.1}])
def test_bad_settings_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        MoveWatch(tpot_ms=TPOT, total_tokens=10, **kw)  # type: ignore[arg-type]
