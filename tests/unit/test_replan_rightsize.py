"""Re-planning that follows demand down (issue 13): churn priced by the cold start billed,
right-sizing GPU counts between full plans (placement/replan.py, placement/planner.py)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from placement.plan_types import reclaim_reserve
from placement.planner import (
    DemandClass,
    Infeasible,
    Plan,
    PlannerSettings,
    PlanPool,
    PlanVariant,
    Problem,
    plan,
    resize,
)
from placement.replan import ChurnCost, Decision, decide, right_size

SMALL = PlanVariant("m-small", "m", 0.7, memory_gb=12, compute_ms=100)
LARGE = PlanVariant("m-large", "m", 0.9, memory_gb=12, compute_ms=100)
SETTINGS = PlannerSettings(survive_region_loss=False)


def pool(pid: str, price: float, region: str = "r1") -> PlanPool:
    return PlanPool(pid, "cloud", region, "gpu", "on-demand", price, 80)


def problem(pools: list[PlanPool], rate: float, quality: float = 0.0,
            variants: tuple[PlanVariant, ...] = (SMALL,)) -> Problem:
    return Problem(tuple(pools), variants, (DemandClass("m", quality, 10_000, "r1", rate),),
                   lambda a, b: 1.0 if a == b else 200.0, SETTINGS)


def solved(p: Problem) -> Plan:
    result = plan(p)
    assert isinstance(result, Plan), result.explain()
    return result


def adopted(d: Decision | Infeasible) -> Decision:
    assert isinstance(d, Decision), d.explain()
    return d


CHEAP = pool("cheap", price=0.3)  # a GPU cheaper per hour than the flat $0.5 per change


def test_a_flat_price_per_gpu_change_never_lets_a_cheap_gpu_go() -> None:
    # 40 calls/s × 0.1 s = 4 busy servers: 5 GPUs at the 0.9 tier; at night 10/s needs 2.
    day = solved(problem([CHEAP], 40.0))
    night = problem([CHEAP], 10.0)
    assert solved(night).gpus() == {"cheap": 2}
    flat = adopted(decide(night, day, ChurnCost()))
    assert not flat.adopt and flat.plan.gpus() == day.gpus()  # $0.9 saved < $1.5 churn
    billed = adopted(decide(night, day, ChurnCost(usd_per_gpu_change=0.0, cold_start_s=180)))
    assert billed.adopt and billed.plan.gpus() == {"cheap": 2}


def test_churn_charges_each_added_gpu_its_own_price_for_the_cold_start() -> None:
    dear = pool("dear", price=10.0)
    one, three = solved(problem([dear], 5.0)), solved(problem([dear], 25.0))
    assert (one.gpus(), three.gpus()) == ({"dear": 1}, {"dear": 3})
    churn = ChurnCost(usd_per_gpu_change=0.0, usd_per_variant_change=0.0, cold_start_s=360)
    assert churn.of(one, three) == pytest.approx(2 * 10.0 * 0.1)  # 2 GPUs × $10/h × 0.1 h
    assert churn.of(three, one) == 0.0  # a removal bills nothing more


def test_resize_changes_gpu_counts_and_loads_nothing_new() -> None:
    both = (SMALL, LARGE)
    a, b = pool("a", 1.0), pool("b", 1.2)
    day = solved(problem([a, b], 60.0, variants=both))
    assert day.loaded() and all(v == frozenset({"m-small"}) for v in day.loaded().values())
    smaller = resize(problem([a, b], 15.0, variants=both), day)
    assert isinstance(smaller, Plan)
    assert sum(smaller.gpus().values()) < sum(day.gpus().values())
    assert all(smaller.loaded()[p] <= day.loaded()[p] for p in smaller.gpus())
    # A floor only the large variant meets needs a load: resize says so, plan() would load it.
    higher = problem([a, b], 15.0, quality=0.85, variants=both)
    refused = resize(higher, day)
    assert isinstance(refused, Infeasible) and refused.constraint == "current"
    assert "m-large" in solved(higher).pools[0].variants


def test_right_size_follows_demand_down_and_up_without_a_full_plan() -> None:
    churn = ChurnCost(usd_per_gpu_change=0.0, cold_start_s=180)
    day = solved(problem([CHEAP], 40.0))
    down = adopted(right_size(problem([CHEAP], 10.0), day, churn))
    assert down.adopt and down.plan.gpus() == {"cheap": 2}
    up = adopted(right_size(problem([CHEAP], 40.0), down.plan, churn))
    assert up.adopt and up.plan.gpus() == day.gpus()
    assert "no longer serves" in up.reason


def test_reclaim_reserve_is_what_reclaims_take_before_a_replacement_serves() -> None:
    assert reclaim_reserve(0.05, 3600) == pytest.approx(1 - math.exp(-0.05))
    assert reclaim_reserve(0.05, 1095) == pytest.approx(0.0151, abs=1e-4)
    assert reclaim_reserve(0.0, 1e6) == 0.0
    # a smaller reserve than a flat 0.1 counts more of each spot GPU: 26/s is 2.6 busy
    # servers, 0.9 on the on-demand GPU the spot rule needs, 1.7 on spot: 3 GPUs or 2
    spot = PlanPool("s", "cloud", "r1", "gpu", "spot", 0.3, 80, reclaim_risk=0.1)
    od = pool("od", price=5.0)
    flat = solved(problem([spot, od], 26.0))
    reserved = solved(problem([dataclasses.replace(
        spot, reclaim_risk=reclaim_reserve(0.05, 1095)), od], 26.0))
    assert (flat.gpus()["s"], reserved.gpus()["s"]) == (3, 2)
