"""Provisioned cost over a simulated day (benchmarks/costsim/provisioned*.py): the fluid
router, the autoscalers, reclaims and the bill."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest

from benchmarks.costsim import provisioned as sim
from benchmarks.costsim.provisioned_fleets import (
    PlannerFleet,
    ReactiveFleet,
    SkyServeFleet,
    Stabiliser,
    StaticFleet,
)
from benchmarks.costsim.scenario import Outage, Scenario, load_scenario
from benchmarks.planner import keys, problem_of
from placement.forecast import ClassKey, DemandForecaster
from placement.plan_types import (
    DemandClass,
    Plan,
    PlannerSettings,
    PlanPool,
    PlanVariant,
    PoolPlan,
    Problem,
)
from placement.replan import ChurnCost

SMALL = pathlib.Path(__file__).parents[2] / "benchmarks" / "scenarios" / "small.toml"
V = PlanVariant("m-small", "m", 0.7, 10, 100)
TIGHT = ClassKey("m", 0.0, 250.0, "r1")
LOOSE = ClassKey("m", 0.0, 10_000.0, "r1")


def pool(pid: str, region: str = "r1", price: float = 1.0, kind: str = "on-demand",
         speed: float = 1.0) -> PlanPool:
    return PlanPool(pid, "c", region, "gpu", kind, price, 80, speed, 1)


def rtt(a: str, b: str) -> float:
    return 1.0 if a == b else 200.0


def problem(*pools: PlanPool) -> Problem:
    return Problem(tuple(pools), (V,), (), rtt, PlannerSettings(survive_region_loss=False))


def fixed(gpus: dict[str, int], cap: float = 0.9) -> Plan:
    return Plan(tuple(PoolPlan(p, n, ("m-small",), 0.0, cap, float(n), ())
                      for p, n in gpus.items()), float(sum(gpus.values())))


def test_router_meets_slo_on_the_cheapest_pool_with_room() -> None:
    router = sim.Router(problem(pool("cheap", price=1.0), pool("dear", price=3.0)), [LOOSE])
    # 5 calls/s × 0.1 s = 0.5 busy servers: the cheap pool's one GPU takes them all.
    r = router.route({LOOSE: 5.0}, {"cheap": 1, "dear": 1}, {"cheap": frozenset({"m-small"}),
                                                                "dear": frozenset({"m-small"})},
                     frozenset())
    assert r.met == pytest.approx(5.0)
    assert r.work == {"cheap": pytest.approx(0.5), "dear": 0.0}


def test_router_reports_a_fleet_that_cannot_meet_demand() -> None:
    router = sim.Router(problem(pool("a")), [TIGHT])
    # 20/s × 0.1 s = 2 busy servers on one GPU: at most ρ* of one server meets a 250 ms SLO.
    r = router.route({TIGHT: 20.0}, {"a": 1}, {"a": frozenset({"m-small"})}, frozenset())
    assert 0 < r.met < 10
    assert r.late + r.failed == pytest.approx(20.0 - r.met)
    assert r.failed > 0  # no room left even above the SLO cap
    down = router.route({TIGHT: 1.0}, {"a": 1}, {"a": frozenset({"m-small"})}, frozenset({"a"}))
    assert (down.met, down.failed) == (0.0, pytest.approx(1.0))


def test_router_keeps_a_tight_class_within_its_cap_when_loose_calls_share_the_pool() -> None:
    router = sim.Router(problem(pool("a")), [TIGHT, LOOSE])
    loaded = {"a": frozenset({"m-small"})}
    alone = router.route({TIGHT: 3.0}, {"a": 2}, loaded, frozenset())
    shared = router.route({TIGHT: 3.0, LOOSE: 30.0}, {"a": 2}, loaded, frozenset())
    assert shared.met - alone.met < 30.0  # the loose calls could not fill the pool to 0.98
    assert shared.late + shared.failed > 0


def test_stabiliser_scales_up_at_once_and_down_only_after_its_window() -> None:
    st = Stabiliser(up_delay_s=0.0, down_window_s=300.0)
    assert st.step(0.0, 5, 2) == 5
    assert st.step(60.0, 1, 5) == 5  # the 5 of t=0 is still in the window
    assert st.step(301.0, 1, 5) == 1
    slow = Stabiliser(up_delay_s=300.0, down_window_s=1200.0)
    assert slow.step(0.0, 4, 2) == 2
    assert slow.step(150.0, 4, 2) == 2
    assert slow.step(300.0, 4, 2) == 4


def observed(now: float, work: dict[str, float], ready: dict[str, int]) -> sim.Observed:
    return sim.Observed(now, {}, work, ready, ready, frozenset())


def test_reactive_autoscaler_scales_up_after_load_and_down_after_the_window() -> None:
    base = fixed({"a": 1}, cap=0.9)
    hpa = ReactiveFleet(base, {"a": pool("a")}, target_share=0.5)  # target ρ = 0.45
    hpa.control(observed(60.0, {"a": 0.9}, {"a": 1}))
    assert hpa.targets() == {"a": 2}
    hpa.control(observed(120.0, {"a": 0.01}, {"a": 2}))
    assert hpa.targets() == {"a": 2}  # scale-down waits for the stabilisation window
    for t in range(180, 500, 60):
        hpa.control(observed(float(t), {"a": 0.01}, {"a": 2}))
    assert hpa.targets() == {"a": 1}  # never below one GPU


def test_skyserve_puts_replicas_on_spot_and_falls_back_to_on_demand() -> None:
    od, spot = pool("od", price=2.0), pool("spot", price=0.8, kind="spot")
    sky = SkyServeFleet(fixed({"od": 2}), problem(od, spot))
    assert sky.targets() == {"spot": 3, "od": 2}  # 2 + one extra on spot; no spot serving yet
    sky.control(observed(60.0, {"spot": 0.5}, {"spot": 3, "od": 2}))
    assert sky.targets()["od"] == 0  # spot serves: on-demand only as fallback
    assert sky.loaded()["spot"] == frozenset({"m-small"})


def scenario(outages: tuple[Outage, ...] = ()) -> Scenario:
    return dataclasses.replace(load_scenario(SMALL), outages=outages)


def test_a_day_bills_static_gpus_for_24_hours_and_reclaims_spot() -> None:
    s = scenario((Outage("gcp-us-central1", "", "", "spot", 12.0, 2.0),))
    settings = PlannerSettings(spot_rule_where_possible=True)
    base = problem_of(s, [], settings)
    gpus = {"gcp-us-central1.l4.spot": 2, "aws-us-east-1.h100-80gb.on-demand": 1}
    gpus = {p.id: gpus.get(p.id, 0) for p in base.pools}
    plan = Plan(tuple(PoolPlan(p, n, ("summarize-small", "summarize-large"), 0, 0.9, 0, ())
                      for p, n in gpus.items() if n), 0.0)
    demand = sim.demand_day(s, 1.0, seed=1, bucket_s=600.0)
    r = sim.simulate(s, base, StaticFleet("static", plan), demand, seed=2)
    prices = {p.id: p.usd_per_gpu_hour for p in base.pools}
    full_day = sum(prices[p] * n * 24 for p, n in gpus.items())
    assert r.reclaimed >= 2  # the spot outage takes both spot GPUs back
    assert r.usd < full_day  # reclaimed GPUs are not billed until replaced
    assert r.usd > full_day - prices["gcp-us-central1.l4.spot"] * 2 * 3
    assert r.calls > 0 and r.met + r.late + r.failed == pytest.approx(r.calls)


def test_the_planner_fleet_follows_its_forecast_and_replans_on_an_outage() -> None:
    s = scenario((Outage("gcp-europe-west4", "", "", "", 6.0, 1.0),))
    settings = PlannerSettings(spot_rule_where_possible=True, time_limit_s=5)

    def of(demand: list[DemandClass], down: frozenset[str]) -> Problem:
        from benchmarks.costsim.provisioned_fleets import without
        return without(problem_of(s, demand, settings), down)

    forecaster = DemandForecaster()
    for b, rates in enumerate(sim.demand_day(s, 0.9, seed=3, bursts=False, bucket_s=600.0)):
        for k, r in rates.items():
            forecaster.observe(k, b * 600.0, r)
    fleet = PlannerFleet(of, forecaster, ChurnCost(), day_offset_s=sim.DAY_S)
    fleet.start(0.0)
    demand = sim.demand_day(s, 1.0, seed=1, bucket_s=600.0)
    r = sim.simulate(s, problem_of(s, [], settings), fleet, demand, seed=2)
    assert fleet.log.seconds and not fleet.log.infeasible
    assert len(fleet.log.seconds) >= 24 + 2  # hourly, and when the outage starts and ends
    assert r.attainment > 0.9
    assert set(keys(s)) == set(demand[0])


def test_router_takes_the_better_order_when_one_strands_calls() -> None:
    # A cheap pool the tight class needs at low utilisation, and a dear roomy one: loose
    # calls placed first would fill the cheap pool past the tight class's cap.
    cheap, dear = pool("cheap", price=1.0), pool("dear", price=2.0, region="r2")
    router = sim.Router(problem(cheap, dear), [TIGHT, LOOSE])
    loaded = {"cheap": frozenset({"m-small"}), "dear": frozenset({"m-small"})}
    rates = {TIGHT: 3.0, LOOSE: 15.0}
    ready = {"cheap": 2, "dear": 4}
    loose_first = router._route(rates, ready, loaded, frozenset(),
                                lambda k: (-k.slo_ms, k.min_quality, k))
    both = router.route(rates, ready, loaded, frozenset())
    assert loose_first.met < both.met == pytest.approx(18.0)


def test_the_offline_optimum_requests_the_next_hours_plan_ahead() -> None:
    from benchmarks.costsim.provisioned_fleets import OracleFleet
    fleet = OracleFleet([fixed({"a": 1})] + [fixed({"a": 3})] * 23, lead_s=240.0)
    fleet.control(observed(3000.0, {}, {}))
    assert fleet.targets() == {"a": 1}
    fleet.control(observed(3400.0, {}, {}))
    assert fleet.targets() == {"a": 3}  # hour 1's GPUs requested before hour 1
    assert fleet.loaded() == {"a": frozenset({"m-small"})}


def test_router_lets_a_class_take_a_pool_back_from_a_far_class_that_pinned_its_cap() -> None:
    # Both classes are cheapest on "near" (r1). The far class (r0, 60 ms away) comes first
    # and may run it only to 0.375; the local class to 0.54. Pinned at 0.375 the local
    # class strands calls; taking the pool back serves it, and the far class's calls move
    # to its own region's pool, as edges move calls off a deployment that now misses.
    def near_far(a: str, b: str) -> float:
        return 1.0 if a == b else 60.0

    far, local = ClassKey("m", 0.0, 250.0, "r0"), ClassKey("m", 0.0, 250.0, "r1")
    near, other = pool("near", "r1", price=1.0), pool("other", "r0", price=2.0)
    router = sim.Router(Problem((near, other), (V,), (), near_far,
                                PlannerSettings(survive_region_loss=False)), [far, local])
    loaded = {"near": frozenset({"m-small"}), "other": frozenset({"m-small"})}
    r = router.route({far: 2.0, local: 10.0}, {"near": 2, "other": 1}, loaded, frozenset())
    assert r.met == pytest.approx(12.0) and r.late + r.failed == 0.0
    assert r.work == {"near": pytest.approx(1.0), "other": pytest.approx(0.2)}
    # a class never takes a pool from flows that tolerate more than it does
    tight_first = router._route({far: 2.0, local: 10.0}, {"near": 2, "other": 0}, loaded,
                                frozenset(), lambda k: (k.slo_ms, k.edge_region != "r1", k))
    assert (tight_first.met, tight_first.late) == (pytest.approx(10.0), pytest.approx(2.0))
