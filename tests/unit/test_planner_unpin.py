"""Route rounds that try the plan without the (pool, variant) pairs a drawn class pins
(``PlannerSettings.route_unpin``, ``placement.plan_route.Shortfall.pinning``, ``without``).

A class that finds a pool cheaper per call takes it at the utilisation its own SLO allows
there; planning for that (``route_drawn``) buys the pinned pool more GPUs. Unloading the
variant there instead sends the drawn class to its next option and the pool's own classes
elsewhere, which can cost less (the default scenario's first plan: gcp's Iowa L4 spot loaded
summarize-large, pinned at 0.33 by Europe's calls, $22.23/h; without it $21.56/h)."""

from __future__ import annotations

from placement.plan_route import Shortfall, shortfall, without
from placement.plan_types import max_utilisation
from placement.planner import (
    DemandClass,
    Plan,
    PlannerSettings,
    PlanPool,
    PlanVariant,
    Problem,
    plan,
)

V = PlanVariant("m-small", "m", 0.7, memory_gb=12, compute_ms=100)
# hub: cheapest per call for both classes; the pinning class reaches it at ρ* 0.35
HUB = PlanPool("hub", "cloud", "hub", "gpu", "on-demand", 1.0, 80)
NEAR = PlanPool("near", "cloud", "near", "gpu", "on-demand", 1.5, 80)  # the pinning class's own
RTT = {("a-pin", "hub"): 216.0, ("a-pin", "near"): 1.0, ("a-pin", "alt"): 400.0,
       ("b-only", "hub"): 1.0, ("b-only", "near"): 400.0, ("b-only", "alt"): 1.0}


def problem(pin_rps: float, only_rps: float, alt_usd: float, unpin: bool | None) -> Problem:
    alt = PlanPool("alt", "cloud", "alt", "gpu", "on-demand", alt_usd, 80)  # the hub class's other
    return Problem((HUB, NEAR, alt), (V,),
                   (DemandClass("m", 0.0, 400, "a-pin", pin_rps),
                    DemandClass("m", 0.0, 400, "b-only", only_rps)),
                   lambda e, r: RTT[e, r],
                   PlannerSettings(survive_region_loss=False) if unpin is None else
                   PlannerSettings(survive_region_loss=False, route_unpin=unpin))


def solved(p: Problem) -> Plan:
    result = plan(p)
    assert isinstance(result, Plan), result.explain()
    return result


def test_the_instance_pins_the_hub() -> None:
    assert 0.35 < max_utilisation(216.0, 100, 1, 400) < 0.351  # the pinning class on the hub
    assert max_utilisation(400.0, 100, 1, 400) == 0.0  # each class has one other pool
    p = problem(6.0, 2.0, 1.4, unpin=False)
    first = solved(Problem(p.pools, p.variants, p.demand, p.rtt_ms,
                           PlannerSettings(survive_region_loss=False, route_rounds=0)))
    assert first.gpus() == {"hub": 1, "near": 1}
    check = Shortfall(p)
    routed = check.routed(first)
    assert check.short(routed) == {1: 2.0}  # the hub's own class is left out
    drawn = check.drawn(routed, first)
    assert drawn and {(pid, v) for _, pid, v in drawn} == {("hub", "m-small")}
    # the plan ran the hub at the pinning class's ρ* for 1.5 calls/s: the cap does not
    # name it, the hub class's higher ρ* does
    assert check.pinning(drawn, first) == {("hub", "m-small")}


def test_a_round_unloads_the_pinned_variant_when_that_is_cheaper() -> None:
    pinned = solved(problem(6.0, 2.0, 1.4, unpin=False))
    assert pinned.gpus() == {"hub": 3}  # route_drawn: the hub sized for the pinning class
    assert pinned.usd_per_hour == 3.0
    p = problem(6.0, 2.0, 1.4, unpin=None)  # the default: on
    unpinned = solved(p)
    assert unpinned.gpus() == {"alt": 1, "near": 1}
    assert abs(unpinned.usd_per_hour - 2.9) < 1e-9
    assert shortfall(p, unpinned) == {}


def test_a_round_keeps_the_pinned_plan_when_unloading_costs_more() -> None:
    p = problem(6.0, 2.0, 1.6, unpin=True)  # alt + near: $3.1 against the hub's $3.0
    found = solved(p)
    assert found.gpus() == {"hub": 3}
    assert shortfall(p, found) == {}


def test_a_round_unloads_the_pinned_variant_when_planning_for_it_leaves_calls_short() -> None:
    p = problem(20.0, 0.5, 1.1, unpin=False)
    pinned = solved(p)
    assert shortfall(p, pinned) == {1: 0.5}  # every round's hub is filled by the pinning class
    p = problem(20.0, 0.5, 1.1, unpin=True)
    unpinned = solved(p)
    assert "hub" not in unpinned.gpus()
    assert shortfall(p, unpinned) == {}


def test_without_drops_the_pairs_and_their_drawn_flows() -> None:
    w = PlanVariant("m-large", "m", 0.9, memory_gb=30, compute_ms=200)
    both = PlanPool("both", "cloud", "hub", "gpu", "on-demand", 1.0, 80)  # either variant
    small = PlanPool("small", "cloud", "hub", "gpu", "on-demand", 1.0, 80,
                     variants=frozenset({"m-small"}))
    p = Problem((small, both), (V, w), (), lambda e, r: 1.0,
                drawn=((0, "small", "m-small", 1.0), (0, "both", "m-large", 2.0),
                       (1, "both", "m-small", 3.0)))
    q = without(p, {("small", "m-small"), ("both", "m-small")})
    gone, rest = q.pools
    assert gone.max_gpus == 0  # no variant left: an empty set would allow every one
    assert rest.variants == frozenset({"m-large"}) and rest.max_gpus == both.max_gpus
    assert q.drawn == ((0, "both", "m-large", 2.0),)
    assert without(p, ()) is p
