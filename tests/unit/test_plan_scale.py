"""Between plans, the plan's pools sized on observed busy-ness (placement/plan_scale.py).

Each test fails with the rule off (the plan's own counts: ``Plan.gpus()``)."""

from __future__ import annotations

from placement.plan_scale import PoolScaler, ScaleSettings, desired
from placement.plan_types import Plan, PlanPool, PoolPlan

POOLS = {p.id: p for p in (
    PlanPool("a", "cloud", "r1", "gpu", "on-demand", 1.0, 80, concurrency_per_gpu=2, max_gpus=10),
    PlanPool("b", "cloud", "r2", "gpu", "spot", 0.5, 80, concurrency_per_gpu=1, max_gpus=3),
)}


def plan(a: int, b: int = 0, cap: float = 0.8) -> Plan:
    pp = [PoolPlan("a", a, ("v",), 0.5, cap, float(a), ())]
    if b:
        pp.append(PoolPlan("b", b, ("v",), 0.5, cap, 0.5 * b, ()))
    return Plan(tuple(pp), sum(x.usd_per_hour for x in pp))


def test_desired_is_the_hpa_rule_with_its_tolerance() -> None:
    assert desired(7.2, 2, 0.9, 4, 0.1) == 4  # 7.2 / (2 × 0.9 × 4) = 1.0: no change
    assert desired(10.0, 2, 0.9, 4, 0.1) == 6  # ceil(10 / 1.8)
    assert desired(1.0, 2, 0.9, 4, 0.1) == 1


def test_a_planned_pool_shrinks_to_what_it_is_observed_to_need_after_the_window() -> None:
    p, s = plan(8), PoolScaler()
    assert s.targets(0.0, p, POOLS, {"a": 1.0}, {"a": 8})["a"] == 8  # the plan's count, new
    # busy 1 server of 2 × 0.72 per GPU: 1 GPU wanted, held at 8 while the window has 8
    assert s.targets(100.0, p, POOLS, {"a": 1.0}, {"a": 8})["a"] == 8
    assert s.targets(301.0, p, POOLS, {"a": 1.0}, {"a": 8})["a"] == 1
    assert p.gpus()["a"] == 8  # the rule off: the plan's count all the while


def test_a_burst_scales_up_at_once_up_to_the_pools_limit() -> None:
    p, s = plan(2, 1), PoolScaler()
    s.targets(0.0, p, POOLS, {"a": 2.0, "b": 0.5}, {"a": 2, "b": 1})
    out = s.targets(15.0, p, POOLS, {"a": 7.0, "b": 9.0}, {"a": 2, "b": 1})
    assert out == {"a": 5, "b": 3}  # ceil(7 / 1.44); b capped at its max_gpus


def test_every_planned_pool_keeps_a_gpu_and_unplanned_pools_get_none() -> None:
    p, s = plan(3), PoolScaler(ScaleSettings(down_window_s=0.0))
    s.targets(0.0, p, POOLS, {}, {"a": 3})
    assert s.targets(15.0, p, POOLS, {}, {"a": 3, "b": 2}) == {"a": 1}


def test_a_pool_not_serving_yet_runs_the_plans_count() -> None:
    p, s = plan(4), PoolScaler(ScaleSettings(down_window_s=0.0))
    assert s.targets(0.0, p, POOLS, {}, {})["a"] == 4
    assert s.targets(15.0, p, POOLS, {}, {"a": 0})["a"] == 4


def test_a_plan_that_raises_a_pool_is_taken_at_once_and_held_for_the_window() -> None:
    s = PoolScaler()
    s.targets(0.0, plan(2), POOLS, {"a": 1.0}, {"a": 2})
    assert s.targets(400.0, plan(2), POOLS, {"a": 1.0}, {"a": 2})["a"] == 1
    # a re-plan for a rise the forecast sees coming: 6 now, though 1 is observed busy
    assert s.targets(415.0, plan(6), POOLS, {"a": 1.0}, {"a": 1})["a"] == 6
    assert s.targets(600.0, plan(6), POOLS, {"a": 1.0}, {"a": 6})["a"] == 6
    assert s.targets(716.0, plan(6), POOLS, {"a": 1.0}, {"a": 6})["a"] == 1
