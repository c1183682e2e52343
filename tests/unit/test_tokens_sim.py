"""The token simulator (benchmarks/costsim/tokensim.py) and its policies: TTFT, TPOT and
cost per stream by the stated formulas, the prefix cache, and what each policy chooses."""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest

from benchmarks.costsim.tokens_baselines import PrefixAffinity
from benchmarks.costsim.tokens_names import POLICIES, VARIANTS, make_policy
from benchmarks.costsim.tokens_policies import Switchyard
from benchmarks.costsim.tokens_report import measure
from benchmarks.costsim.tokens_workload import (
    Slowdown,
    Streams,
    TokenScenario,
    parse_token_scenario,
)
from benchmarks.costsim.tokensim import Outcome, TokenSim

SCENARIOS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "scenarios" / "tokens"
CHEAP_USD_H, FAST_USD_H = 0.349, 6.88  # aws-us-east-1 L4 spot, H100 on-demand


def scenario(ttft_ms: float = 5000.0, tpot_ms: float = 100.0, *, max_tokens: int = 10,
             l4_batch: int = 4, edge_regions: int = 1) -> TokenScenario:
    """aws-us-east-1's cheap L4 (spot) and fast H100 (on-demand), one class; the edges are
    in ``edge_regions`` regions of aws (us-east-1, then us-east-2, 5 ms apart)."""
    regions = ["aws-us-east-1", "aws-us-east-2"][:edge_regions]
    raw = {
        "scenario": {"warmup_s": 0},
        "workload": {"noise_sigma": 0.0},
        "regions": [{"name": r, "cloud": "aws", "load_rps": 1} for r in regions],
        "accelerators": {
            "nvidia-l4": {"prefill_ms_per_token": 1.0, "prefill_base_ms": 10, "decode_ms": 20,
                          "batch_slowdown": 0.5, "max_batch": l4_batch,
                          "cache_tokens": 10_000},
            "nvidia-h100-80gb": {"prefill_ms_per_token": 0.1, "prefill_base_ms": 5,
                                 "decode_ms": 5, "batch_slowdown": 0.1, "max_batch": 16,
                                 "cache_tokens": 10_000}},
        "variants": [{"name": "llm"}],
        "classes": [{"name": "c", "share": 1, "ttft_ms": ttft_ms, "tpot_ms": tpot_ms,
                     "max_tokens": max_tokens}],
        "pools": [{"region": "aws-us-east-1", "accelerator": "nvidia-l4",
                   "price_class": "spot", "variant": "llm"},
                  {"region": "aws-us-east-1", "accelerator": "nvidia-h100-80gb",
                   "price_class": "on-demand", "variant": "llm"}],
    }
    return parse_token_scenario(raw, SCENARIOS, "inline")


def streams(rows: list[tuple[float, int, int, int, int]]) -> Streams:
    """(t_ms, prompt, output, session, shared) per stream, one region, one class."""
    n = len(rows)
    col = list(zip(*rows, strict=True))
    return Streams(np.array(col[0], dtype=float), np.zeros(n, dtype=np.int64),
                   np.zeros(n, dtype=np.int64), np.array(col[1]), np.array(col[2]),
                   np.array(col[3]), np.array(col[4]), np.ones(n))


class Fixed:
    """A policy that sends every stream to one deployment (for the accounting tests)."""

    name = "fixed"

    def __init__(self, d: int) -> None:
        self.d = d
        self.first: list[int] = []
        self.done: list[int] = []

    def choose(self, sid: int, edge: int, now: float, sim: TokenSim) -> int:
        return self.d

    def first_token(self, sid: int, sim: TokenSim) -> None:
        self.first.append(sid)

    def finished(self, sid: int, sim: TokenSim) -> None:
        self.done.append(sid)


def test_one_stream_alone_follows_the_formulas() -> None:
    s = scenario()
    sim = TokenSim(s, streams([(0.0, 100, 11, -1, 0)]))
    policy = Fixed(0)
    out = sim.run(policy)
    rtt = 1.0  # same region
    assert out.ttft_ms[0] == pytest.approx(rtt + 10 + 100 * 1.0)
    assert out.tpot_ms[0] == pytest.approx(20.0)
    gpu_ms = 110 + 10 * 20.0  # prefill, then 10 decoded tokens alone
    assert out.cost_usd[0] == pytest.approx(gpu_ms * CHEAP_USD_H / 3.6e6)
    assert policy.first == [0] and policy.done == [0]


class MoveOnce(Fixed):
    """Sends every stream to the L4 and, at the first check, moves stream 0 to the H100."""

    def __init__(self, check_ms: float) -> None:
        super().__init__(0)
        self.check_every_ms = check_ms
        self.resumed_at: list[float] = []

    def check(self, now: float, sim: TokenSim) -> list[tuple[int, int]]:
        return [] if self.resumed_at or sim.out.moved_to[0] >= 0 else [(0, 1)]

    def resumed(self, sid: int, now: float, sim: TokenSim) -> None:
        self.resumed_at.append(now)


def test_a_moved_stream_pays_a_re_prefill_of_its_prompt_and_delivered_tokens() -> None:
    """A stream moved after 6 tokens: the H100 prefills the prompt plus those 6, decodes the
    rest; TTFT is the first attempt's, TPOT spans both attempts and the gap, the bill both
    servers' time."""
    s = scenario()
    sim = TokenSim(s, streams([(0.0, 100, 21, -1, 0)]))
    policy = MoveOnce(check_ms=210.5)  # first token at 110.5 (server), 5 decoded by 210.5
    out = sim.run(policy)
    assert out.moved_to[0] == 1 and out.deployment[0] == 0 and out.moved_ms[0] == 210.5
    assert out.ttft_ms[0] == pytest.approx(1.0 + 110)
    re_prefill = 5 + (100 + 6) * 0.1  # the prompt plus the 6 tokens delivered
    b_first = 210.5 + 0.5 + re_prefill
    assert policy.resumed_at == [pytest.approx(b_first)]
    end = b_first + (21 - 6 - 1) * 5.0  # 15 owed: one from the prefill, 14 decoded
    assert out.tpot_ms[0] == pytest.approx((end - 110.5) / 20)
    billed = ((110 + 5 * 20.0) * CHEAP_USD_H + (re_prefill + 14 * 5.0) * FAST_USD_H) / 3.6e6
    assert out.cost_usd[0] == pytest.approx(billed)
    assert policy.done == [0] and sim.servers[0].batch == []


def test_a_batch_slows_decode_and_splits_its_bill() -> None:
    s = scenario()
    # two streams prefilled back to back (FIFO), decoding together for a while
    sim = TokenSim(s, streams([(0.0, 100, 21, -1, 0), (0.0, 100, 21, -1, 0)]))
    out = sim.run(Fixed(0))
    assert out.ttft_ms[1] == pytest.approx(out.ttft_ms[0] + 110)  # waited for one prefill
    assert out.tpot_ms[0] > 20.0 and out.tpot_ms[1] > 20.0  # a batch of two: 30 ms a token
    # decode GPU time is billed once in total: the union of both streams' decode time
    decode_end = max(out.first_ms[i] + out.tpot_ms[i] * 20 for i in range(2))
    busy_ms = decode_end - out.first_ms[0]
    billed_decode = out.cost_usd.sum() * 3.6e6 / CHEAP_USD_H - 2 * 110
    assert billed_decode == pytest.approx(busy_ms)


def test_the_prefix_cache_saves_a_sessions_prefill() -> None:
    s = scenario()
    sim = TokenSim(s, streams([(0.0, 1000, 2, 7, 800), (5000.0, 1200, 2, 7, 800),
                               (10_000.0, 1200, 2, 8, 800)]))
    out = sim.run(Fixed(0))
    assert list(out.cache_hit) == [0, 800, 0]
    assert out.ttft_ms[1] == pytest.approx(1 + 10 + 400 * 1.0)
    assert out.ttft_ms[2] == pytest.approx(1 + 10 + 1200 * 1.0)


def test_prefix_affinity_sends_a_shared_prefix_to_its_holder() -> None:
    s = scenario()
    st = streams([(0.0, 1000, 50, 3, 900), (1.0, 1000, 50, -1, 0), (2.0, 1000, 50, 3, 900)])
    sim = TokenSim(s, st)
    sim.servers[1].admit(0, st, 1000)  # the H100 served session 3 before
    pa = PrefixAffinity(seed=1)
    assert pa.choose(0, 0, 0.0, sim) == 1
    sim.servers[1].waiting.extend([5, 6, 7])  # the holder is now the most loaded …
    assert pa.choose(2, 0, 0.0, sim) == 1  # … and still wins: 3 × 0.9 > 2 × 1
    assert pa.choose(1, 0, 0.0, sim) == 0  # no prefix: the shorter queue


@pytest.mark.parametrize("name", POLICIES + VARIANTS)
def test_every_policy_accounts_for_every_token_and_dollar(name: str) -> None:
    s = scenario()
    rng = np.random.default_rng(5)
    rows = [(float(t), int(p), int(m), int(k) if k < 4 else -1, int(p // 2) if k < 4 else 0)
            for t, p, m, k in zip(np.sort(rng.uniform(0, 20_000, 40)),
                                  rng.integers(50, 800, 40), rng.integers(2, 60, 40),
                                  rng.integers(0, 8, 40), strict=True)]
    st = streams(rows)
    sim = TokenSim(s, st)
    out = sim.run(make_policy(name, sim, seed=2))
    assert not np.isnan(out.ttft_ms).any() and np.all(out.deployment >= 0)
    r = measure(s, st, out, name)
    assert r.output_tokens == int(st.output.sum())
    assert r.cost_usd == pytest.approx(float(out.cost_usd.sum()))
    assert r.usd_per_1m_out == pytest.approx(r.cost_usd / r.output_tokens * 1e6)
    # billed GPU time lies between the cheapest and dearest server's price for that work
    assert CHEAP_USD_H / 3.6e6 < r.cost_usd / _gpu_ms(sim, out) < FAST_USD_H / 3.6e6 * 1.0001


def _gpu_ms(sim: TokenSim, out: Outcome) -> float:
    usd_ms = np.array([d.usd_per_hour / 3.6e6 for d in sim.deployments])[out.deployment]
    return float((out.cost_usd / usd_ms).sum())


def test_switchyard_learns_and_sends_what_the_cheap_one_cannot_serve_to_the_fast_one() -> None:
    s = scenario(ttft_ms=600.0, tpot_ms=100.0)
    # short prompts fit the L4's TTFT; 2,000-token prompts need the H100 (2,010 ms on the L4)
    rows = [(i * 400.0, 2000 if i % 4 == 3 else 200, 5, -1, 0) for i in range(80)]
    st = streams(rows)
    sim = TokenSim(s, st)
    sy = Switchyard(sim)
    out = sim.run(sy)
    est = sy.stats[0].estimates(sy.cands[0])
    assert est["aws-us-east-1.l4.spot.llm.0"].prefill_ms_per_token > (
        est["aws-us-east-1.h100-80gb.on-demand.llm.0"].prefill_ms_per_token)
    late = np.arange(len(st)) >= 20  # after both were measured
    long_ = st.prompt == 2000
    assert np.all(out.deployment[late & long_] == 1)
    assert np.all(out.deployment[late & ~long_] == 0)
    assert np.all(out.ttft_ms[late] <= 600.0)


def test_a_slowdown_mid_decode_slows_the_rest_of_the_stream() -> None:
    raw_s = scenario()
    slow = dataclasses.replace(raw_s, slowdowns=(Slowdown(at_s=0.211, prefix="aws-us-east-1.l4",
                                                          factor=3.0),))
    out = TokenSim(slow, streams([(0.0, 100, 11, -1, 0)])).run(Fixed(0))
    # the first token at 110.5 ms on the server (RTT / 2 + 110 ms prefill); 100.5 ms of decode
    # at 20 ms a token before the slowdown at 211 ms, the rest of the 10 tokens at 60 ms
    first = out.first_ms[0]
    at = 211.0 - first  # decode time before the slowdown
    rest = 10 - at / 20.0
    assert out.tpot_ms[0] == pytest.approx((at + rest * 60.0) / 10)
    untouched = dataclasses.replace(raw_s, slowdowns=(Slowdown(0.0, "aws-us-east-1.h100", 3.0),))
    assert TokenSim(untouched, streams([(0.0, 100, 11, -1, 0)])).run(Fixed(0)).tpot_ms[0] == (
        pytest.approx(20.0))


def test_switchyard_moves_a_stream_whose_gpu_slows_down_under_it() -> None:
    """The L4 decodes 10x slower from 11.5 s, under a stream that started there at 11 s:
    the edge's MoveWatch (placement/stream_move.py, fed the tokens as they arrive) moves it
    to the H100, which it then finishes within its TPOT; without moves it misses."""
    raw_s = scenario(tpot_ms=100.0, max_tokens=60)
    s = dataclasses.replace(raw_s, slowdowns=(Slowdown(11.5, "aws-us-east-1.l4", 10.0),))
    st = streams([(i * 2000.0 + 1000.0, 200, 60, -1, 0) for i in range(6)])
    outs = {}
    for move in (False, True):
        sim = TokenSim(s, st)
        outs[move] = sim.run(Switchyard(sim, move=move))
    before, after = outs[False], outs[True]
    assert before.deployment[5] == after.deployment[5] == 0  # the L4: cheapest, on pace
    assert before.tpot_ms[5] > 100.0 and np.all(before.moved_to == -1)
    assert after.moved_to[5] == 1 and after.tpot_ms[5] <= 100.0
    assert np.all(after.moved_to[:5] == -1)  # done before the slowdown: never moved


def test_a_slowdown_naming_no_deployment_is_refused() -> None:
    from placement.errors import ConfigError

    raw = {"scenario": {}, "regions": [{"name": "aws-us-east-1", "cloud": "aws",
                                        "load_rps": 1}],
           "accelerators": {"nvidia-l4": {"prefill_ms_per_token": 1.0, "decode_ms": 20,
                                          "max_batch": 4, "cache_tokens": 100}},
           "variants": [{"name": "llm"}], "classes": [{"name": "c", "share": 1,
                                                      "ttft_ms": 1, "tpot_ms": 1}],
           "pools": [{"region": "aws-us-east-1", "accelerator": "nvidia-l4",
                      "price_class": "spot", "variant": "llm"}],
           "slowdowns": [{"at_s": 1, "deployments": "gcp-", "factor": 2}]}
    with pytest.raises(ConfigError, match=r"slowdowns\[0\].deployments 'gcp-' matches no"):
        parse_token_scenario(raw, SCENARIOS, "inline")
