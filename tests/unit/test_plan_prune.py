"""The local search after the MILP (placement/plan_prune.py): the pools a plan runs that
it need not are taken out, and no rule of the MILP is traded for money."""

from __future__ import annotations

import dataclasses

import pytest

from placement import plan_prune
from placement.plan_milp import Model, build
from placement.planner import Plan, PlannerSettings, PoolPlan, Problem, _read, _solve, plan
from tests.unit.test_planner import SMALL, demand, pool, problem


def _pruned(p: Problem, gpus: dict[str, int]) -> Plan:
    """``p``'s plan after pruning its plan with these GPUs, each pool loading SMALL: a plan
    a node-limited search might have found."""
    md = build(p)
    fixed = Plan(tuple(PoolPlan(pid, n, (SMALL.name,), 0.0, 0.0, 0.0, ()) for pid, n in
                       gpus.items()), 0.0)
    found = _solve(md, fixed=fixed)
    assert found is not None

    def solve(sub: Model) -> plan_prune.FloatArray | None:
        s = _solve(sub)
        return None if s is None else s.x

    return _read(md, plan_prune.prune(md, found.x, solve))


def test_a_pool_the_others_carry_is_taken_out() -> None:
    # 3 calls/s × 0.1 s = 0.3 of a GPU: one GPU of either pool carries it.
    p = problem([pool("a"), pool("b", price=1.5)], [demand(3)])
    assert _pruned(p, {"a": 1, "b": 1}).gpus() == {"a": 1}


def test_counts_are_chosen_again_on_the_plans_pools() -> None:
    p = problem([pool("a"), pool("b", price=1.5)], [demand(3)])
    assert _pruned(p, {"a": 3}).gpus() == {"a": 1}


def test_spot_is_not_left_alone_to_save_money() -> None:
    # Spot at 0.3 would carry the class alone; the rule keeps an on-demand GPU, so only the
    # spot pool can go (a alone, $1.0, against $1.3).
    pools = [pool("a"), pool("s", price=0.3, price_class="spot")]
    for soft in (False, True):
        settings = dataclasses.replace(problem([], []).settings, spot_rule_where_possible=soft)
        p = problem(pools, [demand(3)], settings=settings)
        assert _pruned(p, {"a": 1, "s": 1}).gpus() == {"a": 1}


def test_region_loss_keeps_the_second_region() -> None:
    pools = [pool("a"), pool("a2", price=1.2), pool("b", region="r2", price=2.0)]
    p = problem(pools, [demand(3)], settings=PlannerSettings(survive_region_loss=True))
    result = _pruned(p, {"a": 1, "a2": 1, "b": 1})
    assert result.gpus() == {"a": 1, "b": 1}
    assert result.usd_per_hour == pytest.approx(3.0)


def test_the_planner_prunes_when_asked() -> None:
    p = problem([pool("a"), pool("b", price=1.5)], [demand(3)],
                settings=PlannerSettings(survive_region_loss=False, prune=True))
    result = plan(p)
    assert isinstance(result, Plan)
    assert result.gpus() == {"a": 1}
