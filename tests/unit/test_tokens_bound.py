"""Where a token run's money goes and the offline lower bound (benchmarks/costsim/
tokens_bound.py): the spend adds up, the bound follows its formula, obeys capacity and
objectives, and is never above what a simulated policy within its objectives paid."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from benchmarks.costsim.tokens_bound import (
    full_batch_usd_per_1m,
    lower_bound,
    pool_of,
    spend,
    spend_summary,
)
from benchmarks.costsim.tokens_report import measure
from benchmarks.costsim.tokensim import TokenSim
from benchmarks.tokens_diag import full_batch_usd
from tests.unit.test_tokens_sim import CHEAP_USD_H, FAST_USD_H, Fixed, scenario, streams

L4, H100 = 0, 1


def test_one_stream_is_bounded_by_its_cheapest_servers_full_batch_formula() -> None:
    s = scenario(ttft_ms=5000.0, tpot_ms=100.0)
    st = streams([(0.0, 100, 11, -1, 0)])
    b = lower_bound(s, st, TokenSim(s, st).rtt)
    # L4: prefill 10 + 100 × 1 ms; TPOT 100 ms allows a mean batch of (100 / 20 − 1) / 0.5 +
    # 1 = 9, capped at max_batch 4: 10 decoded tokens × 20 × (1 + 0.5 × 3) / 4 ms each
    l4 = CHEAP_USD_H / 3.6e6 * (110.0 + 10 * 50.0 / 4)
    # H100: 5 + 10 ms prefill, batch 16 (of 191 allowed): 10 × 5 × 2.5 / 16 ms
    h100 = FAST_USD_H / 3.6e6 * (15.0 + 10 * 12.5 / 16)
    assert l4 < h100
    assert b.usd == pytest.approx(l4)
    assert b.usd_per_1m_out == pytest.approx(l4 / 11 * 1e6)
    assert b.missed == 0 and b.no_server == 0
    assert set(b.by_pool) == {pool_of(s.deployments[L4])}


def test_a_ttft_the_cheap_server_cannot_meet_moves_the_bound_to_the_fast_one() -> None:
    s = scenario(ttft_ms=50.0, tpot_ms=100.0)  # L4's prefill of 100 tokens takes 110 ms
    st = streams([(0.0, 100, 11, -1, 0)])
    b = lower_bound(s, st, TokenSim(s, st).rtt)
    assert b.usd == pytest.approx(FAST_USD_H / 3.6e6 * (15.0 + 10 * 12.5 / 16))
    assert set(b.by_pool) == {pool_of(s.deployments[H100])}


def test_a_stream_no_server_can_serve_is_missed_and_billed_at_the_cheapest_full_batch() -> None:
    s = scenario(ttft_ms=1.0, tpot_ms=100.0)  # no server prefills in 1 ms
    st = streams([(0.0, 100, 11, -1, 0)])
    b = lower_bound(s, st, TokenSim(s, st).rtt)
    assert b.no_server == 1 and b.missed == 1 and not b.by_pool
    assert b.usd == pytest.approx(CHEAP_USD_H / 3.6e6 * (110.0 + 10 * 50.0 / 4))


def test_the_cheap_servers_capacity_sends_the_rest_to_the_dear_one() -> None:
    # 40 streams in 0.4 s, each 200 decoded tokens: at a batch of 4 the L4 decodes them in
    # 40 × 200 × 12.5 ms = 100 s, more than the period plus the longest a stream may last
    s = scenario(ttft_ms=5000.0, tpot_ms=100.0, max_tokens=201)
    st = streams([(10.0 * k, 100, 201, -1, 0) for k in range(40)])
    b = lower_bound(s, st, TokenSim(s, st).rtt)
    alone = 40 * CHEAP_USD_H / 3.6e6 * (110.0 + 200 * 50.0 / 4)
    assert b.by_pool[pool_of(s.deployments[H100])] > 0
    assert b.usd > alone


@pytest.mark.parametrize("d", [L4, H100])
def test_the_bound_is_never_above_a_run_within_its_objectives(d: int) -> None:
    s = scenario(ttft_ms=5000.0, tpot_ms=100.0, max_tokens=40)
    rng = np.random.default_rng(3)
    rows = [(float(t), int(p), int(o), -1, 0) for t, p, o in zip(
        np.sort(rng.uniform(0, 20_000, 30)), rng.integers(20, 400, 30),
        rng.integers(2, 40, 30), strict=True)]
    st = streams(rows)
    sim = TokenSim(s, st)
    out = sim.run(Fixed(d))
    r = measure(s, st, out, "fixed")
    assert r.both == 1.0  # the run met every objective: the bound may not exceed its cost
    b = lower_bound(s, st, sim.rtt)
    assert b.usd <= float(out.cost_usd.sum()) * (1 + 1e-9)


def test_the_spend_per_pool_adds_up_to_the_run() -> None:
    s = scenario(ttft_ms=5000.0, tpot_ms=100.0)
    st = streams([(0.0, 100, 11, -1, 0), (5.0, 50, 5, -1, 0), (9.0, 80, 3, -1, 0)])
    sim = TokenSim(s, st)
    out = sim.run(Fixed(H100))
    rows = spend(s, st, out)
    assert [r.pool for r in rows] == [pool_of(s.deployments[H100])]
    (row,) = rows
    assert row.streams == 3 and row.tokens_out == 19
    assert row.usd == pytest.approx(float(out.cost_usd.sum()))
    assert row.gpu_s == pytest.approx(row.usd / FAST_USD_H * 3600)
    assert row.usd_per_1m_out == pytest.approx(row.usd / 19 * 1e6)
    floor = full_batch_usd_per_1m(s.deployments[H100])
    assert floor == pytest.approx(FAST_USD_H / 3.6e6 * 12.5 / 16 * 1e6)
    assert f"{row.usd_per_1m_out / floor:.1f}× that pool's full-batch floor" in \
        spend_summary(s, "fixed", rows)


def test_the_bound_splits_its_dollars_by_class_and_they_add_up() -> None:
    s = scenario(ttft_ms=5000.0, tpot_ms=100.0)
    loose = s.classes[0]
    tight = dataclasses.replace(loose, name="tight", ttft_ms=50.0)  # only the H100 prefills
    s = dataclasses.replace(s, classes=(loose, tight))
    st = streams([(0.0, 100, 11, -1, 0), (10.0, 100, 21, -1, 0)])
    st.klass[1] = 1
    b = lower_bound(s, st, TokenSim(s, st).rtt)
    l4 = CHEAP_USD_H / 3.6e6 * (110.0 + 10 * 50.0 / 4)
    h100 = FAST_USD_H / 3.6e6 * (15.0 + 20 * 12.5 / 16)
    assert b.by_class["c"] == (pytest.approx(l4), 11)
    assert b.by_class["tight"] == (pytest.approx(h100), 21)
    assert sum(usd for usd, _ in b.by_class.values()) == pytest.approx(b.usd)


def test_same_choices_at_full_batches_bill_prefill_as_served_and_decode_at_the_floor() -> None:
    s = scenario()
    st = streams([(0.0, 100, 11, -1, 0), (5.0, 100, 11, -1, 0)])
    out = TokenSim(s, st).run(Fixed(L4))
    # both alone or two in a batch of max 4: billed above the full-batch floor
    floor = CHEAP_USD_H / 3.6e6 * (110.0 + 10 * 50.0 / 4)
    assert full_batch_usd(s, st, out, 0) == pytest.approx(floor)
    assert float(out.cost_usd[0]) > floor
