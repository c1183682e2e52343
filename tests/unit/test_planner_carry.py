"""When the pools' GPU limits cannot carry the forecast (an outage took a cloud's pools, a
burst passed every limit), the planner with ``carry_what_fits`` plans what they can carry
rather than refusing and leaving the plan in force (placement/planner.py)."""

from __future__ import annotations

import pytest

from placement.planner import (
    DemandClass,
    Infeasible,
    Plan,
    PlannerSettings,
    PlanPool,
    PlanVariant,
    Problem,
    plan,
)
from placement.replan import ChurnCost, Decision, decide

V = PlanVariant("m-small", "m", 0.7, memory_gb=12, compute_ms=100)
CARRY = PlannerSettings(survive_region_loss=False, carry_what_fits=True)


def pool(pid: str, price: float, max_gpus: int, memory: float = 80) -> PlanPool:
    return PlanPool(pid, "cloud", "r1", "gpu", "on-demand", price, memory, max_gpus=max_gpus)


def problem(pools: tuple[PlanPool, ...], rates: tuple[float, ...],
            settings: PlannerSettings = CARRY) -> Problem:
    demand = tuple(DemandClass("m", 0.0, 10_000 - i, "r1", r) for i, r in enumerate(rates))
    return Problem(pools, (V,), demand, lambda e, r: 1.0, settings)


def test_what_the_limits_carry_is_planned_and_the_rest_named() -> None:
    # one GPU serves 10 calls/s at 100 ms up to the 0.9 tier: 2 GPUs carry 18 of 25
    found = plan(problem((pool("a", 1.0, max_gpus=2),), (25.0,)))
    assert isinstance(found, Plan), found.explain()
    assert found.gpus() == {"a": 2}
    assert len(found.not_carried) == 1
    assert found.not_carried[0][1] == pytest.approx(25.0 - 2 * 10 * 0.9, abs=1e-6)
    assert "not carried" in found.explain()
    assert found.usd_per_hour == pytest.approx(2.0)  # the penalty is not in the bill


def test_every_pool_at_its_limit_even_the_dear_one() -> None:
    found = plan(problem((pool("cheap", 1.0, 1), pool("dear", 9.0, 1)), (25.0,)))
    assert isinstance(found, Plan)
    assert found.gpus() == {"cheap": 1, "dear": 1}  # a dear GPU beats a call not carried
    assert found.not_carried[0][1] == pytest.approx(25.0 - 18.0, abs=1e-6)


def test_off_it_still_refuses_and_names_the_limits() -> None:
    off = problem((pool("a", 1.0, 2),), (25.0,), PlannerSettings(survive_region_loss=False))
    result = plan(off)
    assert isinstance(result, Infeasible) and result.constraint == "max_gpus"


def test_a_plan_that_fits_carries_everything() -> None:
    found = plan(problem((pool("a", 1.0, 8),), (25.0,)))
    assert isinstance(found, Plan) and found.not_carried == () and found.gpus() == {"a": 3}


def test_memory_is_still_refused_not_carried() -> None:
    result = plan(problem((pool("a", 1.0, 8, memory=10),), (5.0,)))
    assert isinstance(result, Infeasible) and result.constraint == "memory"


def test_replan_adopts_what_fits_over_a_plan_on_pools_now_down() -> None:
    before = plan(problem((pool("a", 1.0, 8),), (25.0,)))
    assert isinstance(before, Plan)
    # pool a is down (no GPUs), b is left with a limit that cannot carry the demand
    after = problem((pool("a", 1.0, 0), pool("b", 2.0, 2)), (25.0,))
    d = decide(after, before, ChurnCost())
    assert isinstance(d, Decision) and d.adopt
    assert d.plan.gpus() == {"b": 2}
