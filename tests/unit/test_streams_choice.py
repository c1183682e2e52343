"""The token-based stream choice (placement/streams.py): predictions, feasibility, cost,
prefix-holder preference and bounded-load consistent hashing, without gRPC."""

from __future__ import annotations

import collections

import pytest

from placement.errors import NoHealthyDeployment
from placement.streams import (
    FALLBACK_BAND,
    TTFT_HEADROOM,
    UNMEASURED_PROBES,
    StreamAsk,
    TokenEstimate,
    choose_stream,
    explain,
    load_bound,
    predict,
    ring_order,
)
from tests.stream_cases import FAST, SLOW, cand


def test_prediction_follows_the_formulas() -> None:
    c = cand("a", rtt=3.0)
    o = predict(c, SLOW, load=2, ask=StreamAsk(prompt_tokens=100, max_tokens=10))
    assert o.ttft_ms == pytest.approx(3.0 + 100 * 1.0)
    assert o.tpot_ms == pytest.approx(40.0 + 8.0 * 2)
    assert o.cost_usd == pytest.approx(0.3 / 3600 * (100 * 1.0 + 10 * 56.0 / 3) / 1000)


def test_cheapest_feasible_wins_and_tight_objectives_move_the_stream() -> None:
    cands = [cand("fast"), cand("slow")]
    est = {"fast/llm": FAST, "slow/llm": SLOW}
    loose = choose_stream(cands, est, {}, StreamAsk(200, 50, ttft_ms=1000, tpot_ms=100))
    assert loose.candidate.backend_id == "slow" and loose.slo_met
    tight_tpot = choose_stream(cands, est, {}, StreamAsk(200, 50, ttft_ms=1000, tpot_ms=20))
    assert tight_tpot.candidate.backend_id == "fast" and tight_tpot.slo_met
    tight_ttft = choose_stream(cands, est, {}, StreamAsk(2000, 50, ttft_ms=500))
    assert tight_ttft.candidate.backend_id == "fast"


def test_the_edges_own_streams_waiting_to_prefill_delay_the_first_token() -> None:
    cands = [cand("fast"), cand("slow")]
    est = {"fast/llm": FAST, "slow/llm": SLOW}
    ask = StreamAsk(300, 50, ttft_ms=800)
    assert choose_stream(cands, est, {}, ask).candidate.backend_id == "slow"  # 301 ms
    # 600 tokens of this edge's streams still prefill on the slow one: 1 + 900 × 1.0 ms
    queued = choose_stream(cands, est, {}, ask, pending={"slow/llm": 600})
    assert queued.candidate.backend_id == "fast"
    assert queued.options[1].ttft_ms == pytest.approx(1.0 + 900 * 1.0)
    assert not queued.options[1].feasible


def test_a_ttft_guard_band_leaves_part_of_the_objective_free() -> None:
    cands = [cand("fast"), cand("slow")]
    est = {"fast/llm": FAST, "slow/llm": SLOW}
    ask = StreamAsk(300, 50, ttft_ms=500)  # slow predicts 301 ms
    assert choose_stream(cands, est, {}, ask, ttft_headroom=0.0).candidate.backend_id == "slow"
    guarded = choose_stream(cands, est, {}, ask)  # by default it must be ≤ 250 ms
    assert TTFT_HEADROOM == 0.5
    assert guarded.candidate.backend_id == "fast" and guarded.slo_met
    assert not guarded.options[1].feasible and guarded.options[1].ttft_ms < 500


def test_the_load_bound_averages_over_the_cheap_tier_not_every_deployment() -> None:
    cands = [cand("fast1"), cand("fast2"), cand("slow1"), cand("slow2")]
    est = {"fast1/llm": FAST, "fast2/llm": FAST, "slow1/llm": SLOW, "slow2/llm": SLOW}
    loads = {"slow1/llm": 3, "slow2/llm": 3}
    ask = StreamAsk(100, 10, session_key="k")
    # over all four, ceil(1.25 × 7 / 4) = 3 would push the stream onto a dear GPU; the bins
    # are the two equally cheap ones: ceil(1.25 × 7 / 2) = 5
    choice = choose_stream(cands, est, loads, ask)
    assert choice.candidate.backend_id.startswith("slow") and choice.chosen.bound == 5
    # a TPOT objective the loaded cheap ones cannot meet still moves it
    tight = choose_stream(cands, est, loads, StreamAsk(100, 10, tpot_ms=60, session_key="k"))
    assert tight.candidate.backend_id.startswith("fast")


def test_load_raises_tpot_until_the_cheap_one_misses() -> None:
    cands = [cand("fast"), cand("slow")]
    est = {"fast/llm": FAST, "slow/llm": SLOW}
    ask = StreamAsk(100, 50, tpot_ms=60)
    # (A loose load bound: this is about TPOT under load, not about spreading.)
    assert choose_stream(cands, est, {"slow/llm": 2}, ask,
                         load_factor=10).candidate.backend_id == "slow"
    # 3 streams in flight: 40 + 8 × 3 = 64 ms > 60 ms.
    assert choose_stream(cands, est, {"slow/llm": 3}, ask,
                         load_factor=10).candidate.backend_id == "fast"


def test_nothing_feasible_serves_the_fastest_and_says_so() -> None:
    cands = [cand("fast"), cand("slow")]
    choice = choose_stream(cands, {"fast/llm": FAST, "slow/llm": SLOW}, {},
                           StreamAsk(100, 50, tpot_ms=1.0))
    assert choice.candidate.backend_id == "fast" and not choice.slo_met
    assert "no deployment meets" in choice.reason


def test_nothing_feasible_takes_the_cheapest_of_the_nearly_fastest() -> None:
    # Two fast GPUs within 10 % of each other on TTFT + M × TPOT, the dearer one a little
    # faster; a slow cheap one far behind. Nothing meets a 1 ms TPOT objective.
    dear = TokenEstimate(0.1, 5.0, 1.0, 12.0 / 3600)
    cheap = TokenEstimate(0.1, 5.4, 1.0, 6.0 / 3600)
    cands = [cand("dear"), cand("cheap"), cand("slow")]
    est = {"dear/llm": dear, "cheap/llm": cheap, "slow/llm": SLOW}
    ask = StreamAsk(100, 50, tpot_ms=1.0)
    choice = choose_stream(cands, est, {}, ask)
    assert FALLBACK_BAND == 0.1
    assert choice.candidate.backend_id == "cheap" and not choice.slo_met
    assert "the cheapest within 10% of it" in choice.reason
    # without the band: the fastest, whatever it costs (the rule before)
    fastest = choose_stream(cands, est, {}, ask, fallback_band=0.0)
    assert fastest.candidate.backend_id == "dear"
    # a cheaper deployment beyond the band is not taken: 11 + 50 × 7.4 = 381 ms against
    # 1.1 × the fastest's 11 + 50 × 5 = 261 ms
    slower = TokenEstimate(0.1, 7.4, 1.0, 1.0 / 3600)
    est["cheap/llm"] = slower
    assert choose_stream(cands, est, {}, ask).candidate.backend_id == "dear"


def test_the_best_effort_is_nearly_as_fast_on_each_objective_not_only_on_the_sum() -> None:
    # two tokens: the 11 ms TTFT dominates the sum, so a 20 % slower TPOT (6 against 5 ms)
    # is within 10 % of the fastest's TTFT + M × TPOT (23 against 21 ms) but not on TPOT
    dear = TokenEstimate(0.1, 5.0, 1.0, 12.0 / 3600)
    slow_decode = TokenEstimate(0.1, 6.0, 1.0, 1.0 / 3600)
    cands = [cand("dear"), cand("cheap")]
    choice = choose_stream(cands, {"dear/llm": dear, "cheap/llm": slow_decode}, {},
                           StreamAsk(100, 2, ttft_ms=1.0, tpot_ms=1.0))
    assert choice.candidate.backend_id == "dear" and not choice.slo_met
    near_decode = TokenEstimate(0.1, 5.4, 1.0, 1.0 / 3600)  # 8 % slower: within the band
    choice = choose_stream(cands, {"dear/llm": dear, "cheap/llm": near_decode}, {},
                           StreamAsk(100, 2, ttft_ms=1.0, tpot_ms=1.0))
    assert choice.candidate.backend_id == "cheap"


def test_the_best_effort_gives_up_no_objective_the_fastest_meets() -> None:
    dear = TokenEstimate(0.1, 5.0, 1.0, 12.0 / 3600)
    cheap = TokenEstimate(0.1, 5.4, 1.0, 6.0 / 3600)
    cands = [cand("dear"), cand("cheap")]
    est = {"dear/llm": dear, "cheap/llm": cheap}
    # nothing meets a 1 ms TTFT; the fastest meets TPOT ≤ 5.2 ms, the cheaper one (5.4 ms,
    # within the band) would not: the fastest keeps the stream
    keep_tpot = choose_stream(cands, est, {}, StreamAsk(100, 50, ttft_ms=1.0, tpot_ms=5.2))
    assert keep_tpot.candidate.backend_id == "dear" and not keep_tpot.slo_met
    # with a TPOT objective neither meets, the cheaper one within the band takes it
    both_miss = choose_stream(cands, est, {}, StreamAsk(100, 50, ttft_ms=1.0, tpot_ms=4.0))
    assert both_miss.candidate.backend_id == "cheap"
    # the same for TTFT: the fastest meets 11.5 ms (its 11 ms, no headroom), a cheaper one
    # 2 ms farther would not; it is within the band on TTFT + M × TPOT
    far = cand("cheap", rtt=3.0)
    est["cheap/llm"] = TokenEstimate(0.1, 5.0, 1.0, 6.0 / 3600)
    keep_ttft = choose_stream([cand("dear"), far], est, {},
                              StreamAsk(100, 50, ttft_ms=11.5, tpot_ms=1.0))
    assert keep_ttft.candidate.backend_id == "dear"


def test_the_prefix_holders_cache_hit_makes_it_feasible() -> None:
    # Two equal slow deployments; 3000 prompt tokens take 3 s cold, the TTFT objective is 1 s.
    cands = [cand("a"), cand("b")]
    est = {"a/llm": SLOW, "b/llm": SLOW}
    cold = choose_stream(cands, est, {}, StreamAsk(3000, 10, ttft_ms=1000))
    assert not cold.slo_met
    warm = choose_stream(cands, est, {}, StreamAsk(3000, 10, ttft_ms=1000, holder="b/llm",
                                                   cached_tokens=2900, session_key="s"))
    assert warm.candidate.backend_id == "b" and warm.slo_met
    assert warm.chosen.cache_hit_tokens == 2900


def test_the_holder_is_preferred_among_equally_cheap_but_not_past_the_load_bound() -> None:
    cands = [cand(n) for n in "abcd"]
    est = {c.deployment_id: SLOW for c in cands}
    ask = StreamAsk(10, 10, holder="c/llm", cached_tokens=0, session_key="s")
    assert choose_stream(cands, est, {}, ask).candidate.backend_id == "c"
    # c holds the 5 streams in flight; the bound is ceil(1.25 × 6 / 4) = 2.
    loads = {"c/llm": 5}
    assert load_bound(loads, [c.deployment_id for c in cands]) == 2
    moved = choose_stream(cands, est, loads, ask)
    assert moved.candidate.backend_id != "c"
    assert moved.candidate.deployment_id == next(
        d for d in ring_order("s", [c.deployment_id for c in cands])
        if d != "c/llm")


def test_a_hot_session_spreads_under_bounded_load() -> None:
    cands = [cand(n) for n in "abcd"]
    est = {c.deployment_id: SLOW for c in cands}
    loads: collections.Counter[str] = collections.Counter()
    for _ in range(40):  # one hot prefix, streams that never finish
        d = choose_stream(cands, est, loads, StreamAsk(10, 10, session_key="hot",
                                                       holder="a/llm")).candidate
        loads[d.deployment_id] += 1
    assert len(loads) == 4 and max(loads.values()) <= 13  # ceil(1.25 × 40 / 4)


def test_sessions_hash_consistently_and_spread_over_equal_deployments() -> None:
    ids = [f"{n}/llm" for n in "abcdefgh"]
    assert ring_order("session-1", ids) == ring_order("session-1", list(reversed(ids)))
    firsts = collections.Counter(ring_order(f"s{i}", ids)[0] for i in range(800))
    assert len(firsts) == 8 and min(firsts.values()) > 40
    # Removing one deployment moves only the sessions that were on it.
    moved = sum(ring_order(f"s{i}", ids)[0] != ring_order(f"s{i}", ids[1:])[0]
                for i in range(800) if ring_order(f"s{i}", ids)[0] != ids[0])
    assert moved == 0


def test_unmeasured_deployments_are_tried_first() -> None:
    choice = choose_stream([cand("known"), cand("new")], {"known/llm": SLOW}, {},
                           StreamAsk(10, 10))
    assert choice.candidate.backend_id == "new" and not choice.chosen.measured


def test_an_unmeasured_deployment_takes_one_probe_at_a_time() -> None:
    """An unmeasured deployment predicts cost 0: without a limit (the default) every stream
    an edge routes before the first one ends goes to it (its queue grows unseen). With
    ``unmeasured_probes=1`` and one of this edge's streams on it, it is no option until that
    probe ends; the stream goes to a measured one."""
    cands = [cand("known"), cand("new")]
    est, ask = {"known/llm": SLOW}, StreamAsk(10, 10, ttft_ms=1000, tpot_ms=100)
    one = UNMEASURED_PROBES
    assert choose_stream(cands, est, {}, ask, unmeasured_probes=one).candidate.backend_id == \
        "new"
    busy = choose_stream(cands, est, {"new/llm": 1}, ask, unmeasured_probes=one)
    assert busy.candidate.backend_id == "known" and busy.slo_met
    assert not busy.options[1].feasible and not busy.options[1].measured
    # the default: the busy probe still wins on its zero cost
    assert choose_stream(cands, est, {"new/llm": 1}, ask).candidate.backend_id == "new"


def test_a_best_effort_does_not_pile_onto_a_busy_probe() -> None:
    """Nothing feasible: the fastest is judged among measured deployments; an unmeasured
    one (no decode time predicted) would otherwise always look fastest."""
    cands = [cand("known"), cand("new")]
    ask = StreamAsk(2000, 10, ttft_ms=100)  # SLOW predicts 2,001 ms: nothing feasible
    choice = choose_stream(cands, {"known/llm": SLOW}, {"new/llm": 1}, ask,
                           unmeasured_probes=UNMEASURED_PROBES)
    assert not choice.slo_met and choice.candidate.backend_id == "known"
    # with nothing measured, the busy probes are all there is: still a best effort
    none = choose_stream([cand("a"), cand("b")], {}, {"a/llm": 1, "b/llm": 1}, ask,
                         unmeasured_probes=UNMEASURED_PROBES)
    assert not none.slo_met and not none.chosen.measured


def test_no_candidates_is_no_healthy_deployment() -> None:
    with pytest.raises(NoHealthyDeployment):
        choose_stream([], {}, {}, StreamAsk(1, 1))


def test_explain_names_every_deployment_and_the_choice() -> None:
    choice = choose_stream([cand("fast"), cand("slow")], {"fast/llm": FAST, "slow/llm": SLOW},
                           {}, StreamAsk(100, 10, tpot_ms=20))
    lines = explain(choice)
    assert any(line.startswith("→ fast/llm") for line in lines)
    assert any("slow/llm" in line and "misses an objective" in line for line in lines)
    assert lines[-1].startswith("chose fast/llm")


def test_priced_alone_a_stream_ignores_the_discount_of_this_edges_own_batch() -> None:
    # same speed; "dear" costs 1.5x as much per second but this edge has a stream there
    def est(usd_h: float) -> TokenEstimate:
        return TokenEstimate(prefill_ms_per_token=0.1, tpot_base_ms=10.0,
                             tpot_per_stream_ms=0.1, usd_per_second=usd_h / 3600)

    cands = [cand("cheap"), cand("dear")]
    estimates = {"cheap/llm": est(1.0), "dear/llm": est(1.5)}
    loads = {"dear/llm": 1}
    ask = StreamAsk(100, 200, ttft_ms=1000, tpot_ms=50)
    shared = choose_stream(cands, estimates, loads, ask)
    assert shared.candidate.backend_id == "dear"  # its decode shared by 2: 1530 < 2010
    alone = choose_stream(cands, estimates, loads, ask, share_batch=False)
    assert alone.candidate.backend_id == "cheap"
    dear = next(o for o in alone.options if o.candidate.backend_id == "dear")
    assert dear.cost_usd == pytest.approx(1.5 / 3600 * (100 * 0.1 + 200 * 10.1) / 1000)


def test_shared_by_prices_the_decode_at_the_batch_named_not_this_edges_load() -> None:
    # "dear" holds another edge's stream, which this edge does not count: priced at its own
    # load (none) it is dearer; priced as shared with that stream it is cheaper. The TPOT
    # predicted (and so feasibility) stays at this edge's own load
    def est(usd_h: float) -> TokenEstimate:
        return TokenEstimate(prefill_ms_per_token=0.1, tpot_base_ms=10.0,
                             tpot_per_stream_ms=0.1, usd_per_second=usd_h / 3600)

    cands = [cand("cheap"), cand("dear")]
    estimates = {"cheap/llm": est(1.0), "dear/llm": est(1.5)}
    ask = StreamAsk(100, 200, ttft_ms=1000, tpot_ms=50)
    own = choose_stream(cands, estimates, {}, ask)
    assert own.candidate.backend_id == "cheap"
    shared = choose_stream(cands, estimates, {}, ask, shared_by={"dear/llm": 1})
    assert shared.candidate.backend_id == "dear"
    dear = shared.chosen
    assert dear.tpot_ms == pytest.approx(10.0)
    assert dear.cost_usd == pytest.approx(1.5 / 3600 * (100 * 0.1 + 200 * 10.0 / 2) / 1000)
