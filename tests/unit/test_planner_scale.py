"""The planner's settings for large fleets (placement/planner.py, placement/plan_regions.py):
candidate pruning, the soft spot rule, decomposition by region."""

from __future__ import annotations

import dataclasses

import numpy as np

from placement.plan_regions import split
from placement.planner import DemandClass, Infeasible, Plan, PlannerSettings, PlanPool, plan
from tests.unit.test_planner import SMALL, demand, pool, problem, solved


def test_pruning_keeps_the_cheapest_pools_and_an_on_demand_one() -> None:
    pools = [pool(f"spot{i}", price=0.1 * (i + 1), price_class="spot") for i in range(4)]
    pools.append(pool("od", price=5.0))
    settings = PlannerSettings(survive_region_loss=False, max_pools_per_class=1)
    pruned = solved(problem(pools, [demand(30)], settings=settings))
    full = solved(problem(pools, [demand(30)]))
    assert pruned.usd_per_hour == full.usd_per_hour
    assert set(pruned.gpus()) == {"spot0", "od"}  # the cheapest, and on-demand for the rule


def test_soft_spot_rule_plans_a_class_only_spot_can_serve_and_names_it() -> None:
    pools = [pool("s", price_class="spot")]
    strict = plan(problem(pools, [demand(1)]))
    assert isinstance(strict, Infeasible) and strict.constraint == "spot"
    soft = solved(problem(pools, [demand(1)],
                          settings=PlannerSettings(survive_region_loss=False,
                                                   spot_rule_where_possible=True)))
    assert soft.gpus() == {"s": 1}
    assert soft.spot_alone == ("m/q>=0/10000ms/r1",)
    assert "on spot alone" in soft.explain()


def test_soft_spot_rule_still_prefers_on_demand_where_it_exists() -> None:
    pools = [pool("s", price=0.1, price_class="spot"), pool("od", price=1.0)]
    soft = solved(problem(pools, [demand(1)], settings=PlannerSettings(
        survive_region_loss=False, spot_rule_where_possible=True)))
    assert soft.gpus().get("od", 0) >= 1 and not soft.spot_alone


def ring(n_regions: int) -> tuple[list[PlanPool], list[DemandClass]]:
    pools = [pool(f"r{i}-{j}", f"r{i}", price=1.0 + j) for i in range(n_regions)
             for j in range(2)]
    return pools, [demand(2, slo=1000, edge=f"r{i}") for i in range(n_regions)]


def test_decomposition_groups_nearby_regions_and_keeps_every_class() -> None:
    pools, classes = ring(5)
    whole = problem(pools, classes, (SMALL,), PlannerSettings(group_pools=4))
    parts = split(whole)
    assert len(parts) >= 2
    assert all(len({p.region for p in part.pools}) >= 2 for part in parts)  # region loss
    assert sorted(k.key for part in parts for k in part.demand) == sorted(k.key
                                                                          for k in classes)
    assert sorted(p.id for part in parts for p in part.pools) == sorted(p.id for p in pools)
    joined = plan(whole)
    assert isinstance(joined, Plan)
    single = solved(dataclasses.replace(whole, settings=PlannerSettings()))
    assert joined.usd_per_hour >= single.usd_per_hour  # never better than the whole MILP
    assert sum(gpus for gpus in joined.gpus().values()) >= len(parts) * 2


def test_decomposition_names_the_group_that_cannot_be_planned() -> None:
    pools, classes = ring(4)
    classes.append(demand(1, slo=1000, quality=0.95, edge="r3"))
    result = plan(problem(pools, classes, (SMALL,), PlannerSettings(group_pools=4)))
    assert isinstance(result, Infeasible) and result.constraint == "quality"
    assert "r3" in result.detail


def test_a_class_no_on_demand_pool_reaches_is_spot_alone_without_a_slack() -> None:
    # r1's tight class reaches only the spot pool in r1 (200 ms to r2's on-demand pool); its
    # loose class reaches both. A slack forced to 1 only added $1,000/h to every objective,
    # and the solver's relative gap then accepted plans 5 % of that dearer.
    from placement import plan_milp, planner

    pools = [pool("s", price=0.1, price_class="spot"), pool("od", region="r2", price=1.0)]
    tight, loose = demand(1, slo=300), demand(1, slo=10_000)
    p = problem(pools, [tight, loose], settings=PlannerSettings(
        survive_region_loss=False, spot_rule_where_possible=True))
    md = plan_milp.build(p)
    assert md.forced_alone == [0] and set(md.spot_slack) == {1}
    found = solved(p)
    assert found.spot_alone == (tight.key,)
    assert found.gpus() == {"s": 1, "od": 1}  # the loose class keeps its on-demand option
    x = planner._optimise(md)
    assert x is not None and float(np.dot(md.cost, x[0])) < 2.0  # GPUs and tie-breaks only
