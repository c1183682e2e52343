"""placement.meet: the fallback's choice by each row's chance of meeting the call's SLO
(``pipeline.FALLBACK_CHANCE``, on; ``benchmarks.cost_check``'s ``fallback-fastest`` is the
rule before it)."""

from __future__ import annotations

import math
import random
from statistics import NormalDist

import pytest

from placement import meet, pipeline
from placement.errors import NothingFeasible
from placement.model import CallContext, Hints
from placement.registry import build_profile
from tests.meet_rows import meet_row


def test_sigma_puts_the_lognormals_p95_where_the_row_says() -> None:
    for ratio in (1.1, 1.5, 2.5):
        s = meet.sigma(40.0, 40.0 * ratio)
        mu = math.log(40.0) - s * s / 2
        assert math.exp(mu + s * NormalDist().inv_cdf(0.95)) == pytest.approx(40.0 * ratio)
    assert meet.sigma(40.0, 30.0) == meet.MIN_SIGMA  # p95 under the mean: no spread known
    assert meet.sigma(40.0, 40.0 * 100) == meet.MAX_SIGMA


def test_chance_is_95_percent_at_an_idle_rows_p95_and_falls_with_load() -> None:
    c = meet_row("l4/v", "l4", compute=25.0, slots=1.0, conc=4)
    at_p95 = CallContext(Hints(slo_ms=c.latency_p95_ms))
    assert meet.chance(c, at_p95) == pytest.approx(0.95)
    ctx = CallContext(Hints(slo_ms=70.0))
    past = CallContext(Hints(slo_ms=70.0), inflight={"l4/v": 2})  # 2 past a share of 1
    full = CallContext(Hints(slo_ms=70.0), inflight={"l4/v": 4})  # 4 of its 4 servers
    assert meet.excess(c, ctx) == 0.0
    assert meet.excess(c, past) == pytest.approx(2.0)
    assert meet.chance(c, full) == 0.0  # this edge alone saturates it
    assert meet.chance(c, past) < meet.chance(c, ctx)
    assert meet.chance(c, ctx) > 0.99
    # the servers other edges keep busy, as the table reports them
    busy = meet_row("l4/v", "l4", compute=25.0, slots=1.0, conc=4, busy=0.7)
    assert meet.chance(busy, past) < meet.chance(c, past)
    assert meet.chance(busy, ctx) < meet.chance(c, ctx)
    # the margin learned from misses on the row comes off the budget
    learned = CallContext(Hints(slo_ms=70.0), slo_margins={"l4/v": 30.0})
    assert meet.chance(c, learned) < meet.chance(c, ctx)
    assert meet.chance(c, CallContext(Hints(slo_ms=1.0))) == 0.0  # the RTT alone is over


def test_the_fallback_takes_the_row_likelier_to_meet_not_the_lower_worst_case(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # held-out-near-capacity's case: a T4 within its share whose p95 (76 ms) is over a
    # 70 ms SLO even idle, an L4 one call past its share of 2 slots of 8
    t4 = meet_row("t4/v", "t4", compute=50.0, slots=2.0)
    l4 = meet_row("l4/v", "l4", compute=25.0, slots=2.0, conc=8, busy=0.5)
    ctx = CallContext(Hints(slo_ms=70.0), inflight={"l4/v": 2})
    assert ctx.latency_ms(l4) > ctx.latency_ms(t4) > 70.0  # nothing meets the SLO
    assert meet.chance(l4, ctx) > meet.chance(t4, ctx) + meet.EPS
    profile = build_profile("cheapest")
    monkeypatch.setattr(pipeline, "FALLBACK_CHANCE", False)
    d = profile.choose([t4, l4], ctx, random.Random(0))
    assert not d.slo_met and d.candidate is t4  # the rule before: the lower worst case
    monkeypatch.setattr(pipeline, "FALLBACK_CHANCE", True)
    for seed in range(20):
        d = profile.choose([t4, l4], ctx, random.Random(seed))
        assert not d.slo_met and d.candidate is l4


def test_calls_the_edge_sends_move_the_fallback_off_a_row_it_fills(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No herd from one edge: each call it sends lengthens its own wait on that backend."""
    monkeypatch.setattr(pipeline, "FALLBACK_CHANCE", True)
    t4 = meet_row("t4/v", "t4", compute=50.0, slots=2.0)
    l4 = meet_row("l4/v", "l4", compute=25.0, slots=2.0, conc=8, busy=0.5)
    profile = build_profile("cheapest")
    inflight = {"l4/v": 2, "t4/v": 2}
    rng = random.Random(1)
    chosen = []
    for _ in range(6):
        ctx = CallContext(Hints(slo_ms=70.0), inflight=dict(inflight))
        d = profile.choose([t4, l4], ctx, rng)
        chosen.append(d.candidate.deployment_id)
        inflight[d.candidate.deployment_id] += 1
    assert chosen[:2] == ["l4/v", "l4/v"]
    assert "t4/v" in chosen  # once its own calls fill the L4's idle servers


def test_rows_within_eps_of_the_best_are_drawn_and_without_rng_the_best_wins() -> None:
    a = meet_row("a/v", "a", compute=30.0, slots=1.0, cost=2e-6)
    b = meet_row("b/v", "b", compute=30.0, slots=1.0, cost=1e-6)
    hopeless = meet_row("c/v", "c", compute=300.0, slots=1.0)
    ctx = CallContext(Hints(slo_ms=45.0))
    picks = {meet.choose([a, b, hopeless], ctx, random.Random(s)).deployment_id  # type: ignore[union-attr]
             for s in range(40)}
    assert picks == {"a/v", "b/v"}
    assert meet.choose([a, b, hopeless], ctx, None) is b  # a tie: the cheaper
    # no row has any chance: the fastest by the strict test's estimate
    slow = meet_row("d/v", "d", compute=400.0, slots=1.0)
    assert meet.choose([slow, hopeless], CallContext(Hints(slo_ms=5.0)), None) is hopeless


def test_with_no_chance_anywhere_a_row_whose_rtt_is_over_the_slo_is_not_taken() -> None:
    """held-out-many-models: 80 ms embed calls sent to a row 82 ms away (the fastest by the
    strict test's estimate) while the local rows' queues had every chance at 0."""
    far = meet_row("far/v", "far", compute=3.0, slots=1.0, rtt=82.0)
    near = meet_row("near/v", "near", compute=20.0, slots=1.0, busy=0.99)
    ctx = CallContext(Hints(slo_ms=80.0), inflight={"near/v": 4})
    assert meet.chance(far, ctx) == meet.chance(near, ctx) == 0.0
    assert ctx.latency_ms(far) < ctx.latency_ms(near)
    assert meet.choose([far, near], ctx, random.Random(0)) is near


def test_idle_first_keeps_rows_that_fit_with_a_free_slot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    t4 = meet_row("t4/v", "t4", compute=50.0, slots=2.0)
    l4 = meet_row("l4/v", "l4", compute=25.0, slots=2.0, conc=8)
    ctx = CallContext(Hints(slo_ms=70.0), inflight={"l4/v": 10})  # saturated by this edge
    assert meet.choose([t4, l4], ctx, None) is t4
    monkeypatch.setattr(meet, "IDLE_FIRST", True)
    assert meet.choose([t4, l4], ctx, None) is l4  # no chance there: its fastest


def test_fail_fast_still_names_the_fastest_by_estimate(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "FALLBACK_CHANCE", True)
    t4 = meet_row("t4/v", "t4", compute=50.0, slots=2.0)
    ctx = CallContext(Hints(slo_ms=70.0, fail_fast=True))
    with pytest.raises(NothingFeasible, match="t4/v"):
        build_profile("cheapest").choose([t4], ctx, random.Random(0))
