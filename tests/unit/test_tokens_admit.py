"""Servers that refuse a stream they cannot serve in time (issue 14, fifth round): the edge's
half, ``placement.streams.after_refusal`` (the cheapest feasible option left, nothing marked
failed), and the simulator's server-side check, ``benchmarks/costsim/tokens_admit.py``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from benchmarks.costsim.tokens_admit import SwitchyardAdmit
from benchmarks.costsim.tokens_policies import Switchyard
from benchmarks.costsim.tokensim import TokenSim
from placement.streams import StreamAsk, TokenEstimate, after_refusal, choose_stream
from tests.stream_cases import FAST, SLOW, cand
from tests.unit.test_tokens_sim import scenario, streams

MID = TokenEstimate(prefill_ms_per_token=0.5, tpot_base_ms=20.0, tpot_per_stream_ms=4.0,
                    usd_per_second=1.0 / 3600)


def test_after_a_refusal_the_cheapest_feasible_option_left() -> None:
    cands = [cand("fast"), cand("mid"), cand("slow")]
    est = {"fast/llm": FAST, "mid/llm": MID, "slow/llm": SLOW}
    choice = choose_stream(cands, est, {}, StreamAsk(200, 50, ttft_ms=1000, tpot_ms=100))
    assert choice.candidate.backend_id == "slow"
    nxt = after_refusal(choice, {"slow/llm"})
    assert nxt is not None and nxt.candidate.backend_id == "mid" and nxt.slo_met
    assert nxt.options == choice.options  # the predictions stand: only the refused are out
    last = after_refusal(choice, {"slow/llm", "mid/llm"})
    assert last is not None and last.candidate.backend_id == "fast"
    assert after_refusal(choice, {"slow/llm", "mid/llm", "fast/llm"}) is None


def test_the_time_refusals_cost_drops_options_it_pushes_past_their_ttft_limit() -> None:
    cands = [cand("fast"), cand("mid"), cand("slow")]
    est = {"fast/llm": FAST, "mid/llm": MID, "slow/llm": SLOW}
    choice = choose_stream(cands, est, {}, StreamAsk(200, 50, ttft_ms=1000, tpot_ms=100))
    mid = next(o for o in choice.options if o.candidate.backend_id == "mid")
    assert mid.ttft_ms == pytest.approx(101.0) and mid.ttft_limit_ms == pytest.approx(500.0)
    nxt = after_refusal(choice, {"slow/llm"}, waited_ms=450.0)  # mid: 551 ms > 500
    assert nxt is not None and nxt.candidate.backend_id == "fast"


def test_no_feasible_option_is_offered_after_a_refusal() -> None:
    cands = [cand("fast"), cand("slow")]
    est = {"fast/llm": FAST, "slow/llm": SLOW}
    choice = choose_stream(cands, est, {}, StreamAsk(200, 50, ttft_ms=1000, tpot_ms=20))
    assert choice.candidate.backend_id == "fast"  # slow's TPOT (40 ms) misses 20 ms
    assert after_refusal(choice, {"fast/llm"}) is None


def _trained(policy: Switchyard, sim: TokenSim) -> Switchyard:
    """Both edges have measured both servers alone (the L4: 110 ms to prefill 100 tokens,
    20 ms a token; the H100: 15 ms, 5 ms)."""
    l4, h100 = (d.id for d in sim.deployments)
    for stats in policy.stats:
        for _ in range(5):
            stats.observe(l4, prefill_ms=110.0, uncached_tokens=100, tpot_ms=20.0, load=0)
            stats.observe(h100, prefill_ms=15.0, uncached_tokens=100, tpot_ms=5.0, load=0)
    return policy


@pytest.mark.parametrize("admit", [False, True])
def test_the_cheap_server_refuses_what_another_edges_stream_holds_it_for(admit: bool) -> None:
    # edge 1's stream holds the L4's one batch slot for 4 s (200 tokens × 20 ms, its
    # max_tokens); edge 0 sees only its own streams and predicts the L4 idle
    s = scenario(ttft_ms=500.0, tpot_ms=100.0, max_tokens=200, l4_batch=1, edge_regions=2)
    st = streams([(0.0, 100, 200, -1, 0), (1_000.0, 100, 20, -1, 0)])
    st = dataclasses.replace(st, region=np.array([1, 0]))
    sim = TokenSim(s, st)
    policy = _trained(SwitchyardAdmit(sim, "switchyard-admit") if admit else Switchyard(sim),
                      sim)
    out = sim.run(policy)
    assert int(out.deployment[0]) == 0  # the first stream: the cheap L4, admitted
    if not admit:  # it waits on the L4 behind the other edge's stream and misses its TTFT
        assert int(out.deployment[1]) == 0 and out.ttft_ms[1] > 500.0
        return
    assert isinstance(policy, SwitchyardAdmit)
    assert policy.refused == 1 and policy.refused_out == 0
    assert int(out.deployment[1]) == 1  # the L4 refused: the H100, a round trip later
    h100 = sim.deployments[1]
    assert out.ttft_ms[1] == pytest.approx(sim.rtt[0, 0] + sim.rtt[0, 1] + h100.prefill_ms(100))
    # the edge learned the H100's prefill from its own attempt, not the refusal's round trip
    est = policy.stats[0].estimates(policy.cands[0])[h100.id]
    assert est.prefill_ms_per_token == pytest.approx(0.15, rel=0.05)
