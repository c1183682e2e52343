"""Route rounds plan the calls the edges' rule draws to a pool beyond the plan's flows
(``PlannerSettings.route_drawn``, ``Problem.drawn``, ``placement.plan_milp.drawn_rows``).

A class that finds a pool cheaper per call takes it at the utilisation its own SLO allows
there, whatever the plan kept the pool for: it pins the pool low and a class with no other
pool is left short. Adding the short class's shortfall to its demand (the route round
before) does not help: the plan's flows already fit the pool at its planned tier (the
far-edge scenario's nights: Tokyo's 250 ms class on Virginia's A100 at ρ* 0.36, São Paulo's
250 ms class late on it for five hours)."""

from __future__ import annotations

import dataclasses

import pytest

from placement.plan_route import Shortfall, shortfall
from placement.plan_types import max_utilisation
from placement.planner import (
    DemandClass,
    Plan,
    PlannerSettings,
    PlanPool,
    PlanVariant,
    Problem,
    plan,
    resize,
)

V = PlanVariant("m-small", "m", 0.7, memory_gb=12, compute_ms=100)
# hub: cheapest per call for both classes; near: dearer per call, but the pinning class runs
# it at its own high ρ*, so the MILP plans that class there.
HUB = PlanPool("hub", "cloud", "hub", "gpu", "on-demand", 1.0, 80)
NEAR = PlanPool("near", "cloud", "near", "gpu", "on-demand", 1.5, 80)
RTT = {("a-pin", "hub"): 216.0, ("a-pin", "near"): 1.0,
       ("b-only", "hub"): 1.0, ("b-only", "near"): 400.0}
PIN = DemandClass("m", 0.0, 400, "a-pin", 6.0)  # sorts first in both of the router's orders
ONLY = DemandClass("m", 0.0, 400, "b-only", 2.0)  # reaches the hub alone


def problem(drawn: bool, rounds: int = 3) -> Problem:
    return Problem((HUB, NEAR), (V,), (PIN, ONLY), lambda e, r: RTT[e, r],
                   PlannerSettings(survive_region_loss=False, route_rounds=rounds,
                                   route_drawn=drawn))


def solved(p: Problem) -> Plan:
    result = plan(p)
    assert isinstance(result, Plan), result.explain()
    return result


def test_the_instance_is_what_the_test_says() -> None:
    assert max_utilisation(216.0, 100, 1, 400) == pytest.approx(0.3506, abs=1e-3)  # pin, hub
    assert max_utilisation(1.0, 100, 1, 400) == pytest.approx(0.729, abs=1e-3)
    assert max_utilisation(400.0, 100, 1, 400) == 0.0  # the only class has no other pool
    lean = solved(problem(drawn=False, rounds=0))
    # the hub at its 0.35 tier carries the pinning class's 1.5 calls/s and the hub's own 2;
    # the rest of the pinning class planned on the near pool, at its 0.73 there
    assert lean.gpus() == {"hub": 1, "near": 1}
    # edges send the pinning class to the hub first (cheaper per call): 3.5 of its 6 calls/s
    # fill the hub to 0.35 and the hub's own class finds no room; taking the hub back would
    # lose more calls (3.5) than it serves (2), so the router does not
    assert shortfall(problem(drawn=False), lean) == {1: pytest.approx(2.0, abs=1e-6)}


def test_the_shortfall_alone_plans_the_same_pools_again() -> None:
    # the round before this rule: the short class's demand + its shortfall fits the hub's
    # one GPU at the planned tier, so the rounds plan the same until the shortfall piled on
    # its demand (2 + 3 × 2 calls/s) buys a second hub GPU, and the pinning class takes that
    # one's room too: still short after three rounds
    found = solved(problem(drawn=False))
    assert found.gpus() == {"hub": 2, "near": 1}
    assert shortfall(problem(drawn=False), found) == {1: pytest.approx(1.0, abs=0.02)}


def test_a_round_plans_the_flow_the_edges_draw() -> None:  # fails with route_drawn a no-op
    found = solved(problem(drawn=True))
    assert shortfall(problem(drawn=True), found) == {}
    hub = next(pp for pp in found.pools if pp.pool == "hub")
    assert hub.utilisation_cap < 0.36  # the pinning class's ρ* there bounds the tier
    assert any(key == PIN.key for key, _, _ in hub.serves)


def test_right_sizing_plans_the_drawn_flow_too() -> None:
    lean = solved(problem(drawn=False, rounds=0))
    sized = resize(problem(drawn=True), lean)
    assert isinstance(sized, Plan)
    assert shortfall(problem(drawn=True), sized) == {}


def test_drawn_is_what_the_router_sends_beyond_the_plan() -> None:
    p = problem(drawn=True)
    lean = solved(problem(drawn=False, rounds=0))
    check = Shortfall(p)
    # 3.5 calls/s routed to the hub against the 1.5 the plan put there
    assert check.drawn(check.routed(lean), lean) == {(0, "hub", "m-small"): pytest.approx(2.0,
                                                                                         abs=0.01)}
    # a plan whose flows are where the edges send them draws nothing more
    found = solved(p)
    assert check.drawn(check.routed(found), found) == {}


def test_a_drawn_pair_holds_where_its_variant_is_loaded_and_only_there() -> None:
    # the hub must load the variant (its own class has no other pool): a drawn 6 calls/s of
    # the pinning class there is planned there, at the hub's tier under its ρ*
    p = dataclasses.replace(problem(drawn=True, rounds=0), drawn=((0, "hub", "m-small", 6.0),))
    hub = next(pp for pp in solved(p).pools if pp.pool == "hub")
    assert {key: rps for key, _, rps in hub.serves}[PIN.key] == pytest.approx(6.0)
    assert hub.utilisation_cap < 0.36
    # without the hub's own class, nothing needs the hub: the drawn pair binds only if it is
    # loaded, so the pinning class is planned on the near pool, cheaper at its high ρ*
    alone = dataclasses.replace(p, demand=(PIN, dataclasses.replace(ONLY, rate_rps=0)))
    assert solved(alone).gpus() == {"near": 1}
