"""N+1 across pools per class (PlannerSettings.pool_loss): each class's calls/s on any one
pool fit, within its SLO, into the room the other pools' planned GPUs leave
(placement/plan_pool_loss.py)."""

from __future__ import annotations

import dataclasses

import pytest

from placement.plan_milp import build
from placement.plan_types import PlannerSettings
from tests.unit.test_planner import NO_SURVIVAL, demand, pool, problem, solved

N1 = dataclasses.replace(NO_SURVIVAL, pool_loss=True)


def test_a_class_on_one_pool_gets_capacity_elsewhere() -> None:
    # 10/s = 1 GPU of work: 2 GPUs of the cheap pool at 0.9 alone; with the rule, the dear
    # pool holds room for all of it (2 GPUs at 0.9), the loss of either pool covered.
    pools = [pool("a", price=1.0), pool("b", price=2.0)]
    assert solved(problem(pools, [demand(10)])).gpus() == {"a": 2}
    covered = solved(problem(pools, [demand(10)], settings=N1))
    assert covered.gpus() == {"a": 2, "b": 2}
    assert covered.usd_per_hour == pytest.approx(6.0)
    assert covered.pool_loss_uncovered == ()
    # each pool's flows fit in the other's room at its tier (0.9)
    work = {pp.pool: pp.utilisation * pp.gpus for pp in covered.pools}
    assert work["a"] <= 0.9 * 2 - work["b"] + 1e-6
    assert work["b"] <= 0.9 * 2 - work["a"] + 1e-6


def test_no_spare_where_another_pool_already_covers_it() -> None:
    # Two edge regions, a pool in each, both within SLO of both: 1 GPU each carries the
    # 1.0 of work (0.9 + 0.9) and leaves 0.8 of room; each class split over both pools has
    # its half on either pool (0.25) covered by the other's room (0.4): no GPU added.
    pools = [pool("a", region="r1"), pool("b", region="r2")]
    classes = [demand(5, edge="r1"), demand(5, edge="r2")]
    without = solved(problem(pools, classes))
    assert without.usd_per_hour == pytest.approx(2.0)
    covered = solved(problem(pools, classes, settings=N1))
    assert covered.gpus() == {"a": 1, "b": 1}
    assert covered.pool_loss_uncovered == ()


def test_a_class_with_one_pool_in_reach_is_left_out() -> None:
    # nothing else could take it: the rule asks nothing (no penalty, no GPU added)
    covered = solved(problem([pool("a")], [demand(10)], settings=N1))
    assert covered.gpus() == {"a": 2}
    assert covered.pool_loss_uncovered == ()


def test_the_pools_limits_leave_it_uncovered_rather_than_refuse() -> None:
    # the dear pool may run 1 GPU: 0.9 of room against the cheap pool's 1.0 of work
    pools = [pool("a", price=1.0), pool("b", price=2.0, max_gpus=1)]
    covered = solved(problem(pools, [demand(10)], settings=N1))
    assert covered.pool_loss_uncovered
    (key, rps), = covered.pool_loss_uncovered
    assert key == demand(10).key and rps > 0
    assert "pool" in covered.explain() and "lost" in covered.explain()


def test_the_emergency_boost_lets_the_other_pools_run_hotter() -> None:
    # 19/s = 1.9 of work, a loose SLO (ρ* = 0.95): at the 0.9 tier each pool must hold room
    # for all of it (3 GPUs each); at 0.9 + 0.1 (capped at 0.95) for the cold start, 2 each.
    pools = [pool("a"), pool("b")]
    assert solved(problem(pools, [demand(19)], settings=N1)).gpus() == {"a": 3, "b": 3}
    hot = dataclasses.replace(N1, pool_loss_boost=0.1)
    assert solved(problem(pools, [demand(19)], settings=hot)).gpus() == {"a": 2, "b": 2}


def test_the_boost_is_within_the_rerouted_class_slo() -> None:
    # ρ* = 0.5 for this SLO (231 ms, 100 ms compute, RTT 1); 11/s = 1.1 of work: room for
    # all of it at 0.5 is 3 GPUs a pool. At 0.6 it would be 2 a pool, but the rerouted
    # calls would miss their SLO there, so the boost buys nothing.
    pools = [pool("a"), pool("b")]
    strict = solved(problem(pools, [demand(11, slo=231)], settings=N1))
    assert strict.gpus() == {"a": 3, "b": 3}
    hot = solved(problem(pools, [demand(11, slo=231)],
                         settings=dataclasses.replace(N1, pool_loss_boost=0.1)))
    assert hot.gpus() == strict.gpus()
    assert hot.pool_loss_uncovered == ()


def test_off_adds_nothing_to_the_model() -> None:
    pools = [pool("a", price=1.0), pool("b", price=2.0)]
    off = build(problem(pools, [demand(10)], settings=PlannerSettings()))
    on = build(problem(pools, [demand(10)], settings=dataclasses.replace(
        PlannerSettings(), pool_loss=True)))
    assert not off.uncovered and "pool_loss" not in off.rows.family
    assert on.uncovered and len(on.cost) > len(off.cost)
