"""Provisioned cost: the capacity planner against static and autoscaled fleets, one day.

``python -m benchmarks.provisioned [--quick] [--scenario PATH ...] [--no-write]`` runs every
scenario in ``benchmarks/scenarios/`` through the fluid day model of
:mod:`benchmarks.costsim.provisioned` with the fleets of
:mod:`benchmarks.costsim.provisioned_fleets` (static peak, reactive HPA, SkyServe-like mix,
Switchyard's planner, offline optimum), times the planner on synthetic fleets of 10, 100 and
1,000 pools (:mod:`benchmarks.costsim.provisioned_solve`), and writes both sections into
``benchmarks/RESULTS.md``. ``--quick``: the day in 5-minute buckets (same demand process)
and the solve-time fleets up to 100 pools.

Today's demand is the scenario's day with its bursts; the planner's forecaster learned
"yesterday": the same daily cycle at 0.9 × the load and without bursts, so today runs ~11 %
above what it learned and every burst is a surprise.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from benchmarks.common import BENCH_DIR, ROOT, Section, command_for, md_table, progress
from benchmarks.cost import write_section
from benchmarks.costsim import provisioned as sim
from benchmarks.costsim.provisioned_fleets import (
    OracleFleet,
    PlannerFleet,
    PlanRefused,
    ReactiveFleet,
    SkyServeFleet,
    StaticFleet,
    demand_classes,
    solve_or_fail,
    without,
)
from benchmarks.costsim.provisioned_solve import NODE_LIMIT, SAFETY_NET_S, solve_section
from benchmarks.costsim.scenario import Scenario, load_scenario
from benchmarks.planner import keys, problem_of
from placement.forecast import ClassKey, DemandForecaster, ForecastSettings
from placement.plan_cadence import CadenceSettings
from placement.plan_scale import ScaleSettings
from placement.plan_types import DemandClass, Plan, PlannerSettings, Problem, reclaim_reserve
from placement.replan import ChurnCost
from services.capacity.settings import CapacityConfig
from services.capacity.settings import cadence as live_cadence
from services.capacity.settings import churn as live_churn
from services.capacity.settings import forecast as live_forecast

ESTIMATE_S = (900, 3600)  # on 2 cores shared with other work
SCENARIOS = pathlib.Path(BENCH_DIR, "scenarios")
RESULTS = pathlib.Path(BENCH_DIR, "RESULTS.md")
TITLE = "Provisioned cost: the planner against static and autoscaled fleets (one day)"
YESTERDAY_SCALE = 0.9
SEED = 13
TARGETS = {"attainment": 0.995, "vs_static": 0.6, "vs_optimum": 1.15}
SYNC_S = 15.0  # every fleet acts this long into a bucket (an HPA's sync period)


def settings_for(n_pools: int, quick: bool) -> PlannerSettings:
    """Exact MILP on small fleets; relaxation + restricted MILP (and pruning) on large.

    Each MILP run stops at ``NODE_LIMIT`` branch-and-bound nodes, so a day's plans do not
    depend on the host's load (the 10 s wall-clock limit before did: tight-three-variant's
    planner cost $256/day in the 8-scenario run on a loaded host, $193 alone on a lighter
    one, same code); ``SAFETY_NET_S`` is the wall-clock safety net, counted when hit
    (``Plan.cut_short``).
    """
    return PlannerSettings(time_limit_s=SAFETY_NET_S, node_limit=NODE_LIMIT, mip_rel_gap=0.05,
                           spot_rule_where_possible=True, full_milp=n_pools <= 12,
                           max_pools_per_class=8 if n_pools > 30 else 0,
                           carry_what_fits=True)


@dataclasses.dataclass
class ScenarioRun:
    name: str
    pools: int
    results: list[sim.DayResult]
    planner_solve_s: list[float]
    planner_gap: float
    adopted: int
    infeasible: list[str]
    spot_alone: int
    oracle_milp_usd: float
    oracle_notes: list[str] = dataclasses.field(default_factory=list)
    planner_cut_short: int = 0  # planner solver runs the wall-clock safety net stopped
    oracle_gap: float = 0.0  # the offline optimum's hourly plans' worst MIP gap
    oracle_cut_short: int = 0  # its solver runs the wall-clock safety net stopped


@dataclass(frozen=True, slots=True)
class PlannerConfig:
    """How the planner fleet forecasts, re-plans and prices churn (one switch at a time
    before :data:`PLANNER`, so ``benchmarks.provisioned_diag`` can measure each)."""

    name: str = "switchyard planner"
    churn: ChurnCost = dataclasses.field(default_factory=ChurnCost)
    forecast: ForecastSettings = dataclasses.field(default_factory=ForecastSettings)
    # lead_s and react_window_s are set per run from the bucket (planner_fleet)
    cadence: CadenceSettings = dataclasses.field(default_factory=CadenceSettings)
    # > 0: spot pools count as 1 - reclaim_reserve(rate, this) of their GPUs (the reclaims
    # expected before a replacement serves), not benchmarks.planner's flat 0.1
    reclaim_exposure_s: float = 0.0
    # the plan's pools sized between re-plans on observed busy servers (placement.plan_scale)
    scale: ScaleSettings | None = None
    # each spot pool planned with one GPU held for a reclaim (PlannerSettings.spot_spare)
    spot_spare: bool = False
    # N+1 across pools per class (PlannerSettings.pool_loss, pool_loss_boost)
    pool_loss: bool = False
    pool_loss_boost: float = 0.0
    # route rounds plan the flows the edges' rule draws beyond the plan (route_drawn;
    # None: PlannerSettings' default, which every other fleet's plans use too)
    route_drawn: bool | None = None
    # route rounds also try the plan without the pairs a drawn class pins (route_unpin)
    route_unpin: bool | None = None
    # the margin the planner is told its demand carries (PlannerSettings.demand_margin):
    # spot GPUs count for the reclaims it does not cover; None: the default (1, none)
    demand_margin: float | None = None


# Before: a flat $0.5 per GPU change (above a cheap GPU's hourly price, so such GPUs were
# never let go), hourly plans for the peak of two whole hours × 1.1. Then one switch at a
# time on top of the last (benchmarks.provisioned_diag measures each).
BEFORE = PlannerConfig("planner (before)")
CHURN = dataclasses.replace(BEFORE, name="+ churn by cold start", churn=ChurnCost(
    usd_per_gpu_change=0.0, cold_start_s=sim.PROVISION_DELAY_S))
RESIZE = dataclasses.replace(CHURN, name="+ 15-min right-sizing",
                             forecast=ForecastSettings(within_hour=True),
                             cadence=CadenceSettings(resize_every_s=900.0))
REACT = dataclasses.replace(RESIZE, name="+ reacting to drift", cadence=CadenceSettings(
    resize_every_s=900.0, react_tolerance=0.05))
QUANTILE = dataclasses.replace(REACT, name="+ error quantile", forecast=ForecastSettings(
    within_hour=True, error_quantile=0.9))
RESERVE = dataclasses.replace(QUANTILE, name="+ reclaim reserve",
                              reclaim_exposure_s=900.0 + sim.PROVISION_DELAY_S + SYNC_S)
# The planner placement's capacity loop runs: [capacity]'s defaults, read the way the loop
# reads them (services.capacity.settings), cold start as the simulated provider's.
LIVE = CapacityConfig(cold_start_s=sim.PROVISION_DELAY_S)
PLANNER = PlannerConfig("switchyard planner", live_churn(LIVE), live_forecast(LIVE),
                        live_cadence(LIVE))
SCALE = dataclasses.replace(PLANNER, name="+ pools sized on busy-ness", scale=ScaleSettings())
# placement.plan_scale's settings measured by `provisioned_diag --scale NAME` on the planner's
# own day of plans (ReplayedPlanner: the plans do not depend on the counts a scaler sets)
SCALES = {
    "hpa": ScaleSettings(),  # the HPA's rule: 0.9 × the plan's cap, 10 % tolerance, 300 s
    "cap-0.95": ScaleSettings(target_share=0.95),
    "cap-1.0": ScaleSettings(target_share=1.0),
    "up-only": ScaleSettings(min_gpus=1_000_000),  # never below the plan's count
    "down-only": ScaleSettings(above_plan=False),  # never above it
    "hold-900": ScaleSettings(down_window_s=900.0),
    "cap-0.95-hold-900": ScaleSettings(target_share=0.95, down_window_s=900.0),
}
# N+1 on spot pools (PlannerSettings.spot_spare): spot GPUs still count 90 %, or for what
# one cold start's reclaims leave (the spare GPU covers the loss the flat 10 % stood for)
SPARE = dataclasses.replace(PLANNER, name="+ a spot GPU spare", spot_spare=True)
SPARE_EXPOSED = dataclasses.replace(SPARE, name="+ a spot GPU spare, reclaims of a cold start",
                                    reclaim_exposure_s=sim.PROVISION_DELAY_S + SYNC_S)
# N+1 across pools per class (PlannerSettings.pool_loss): each class's calls/s on any one pool
# fit into the other pools' room at their planned tier, or at 0.1 above it for a cold start
POOL_LOSS = dataclasses.replace(PLANNER, name="+ N+1 across pools", pool_loss=True)
POOL_LOSS_HOT = dataclasses.replace(POOL_LOSS, name="+ N+1 across pools, +0.1 utilisation",
                                    pool_loss_boost=0.1)
# Route rounds that also plan the calls/s the edges' rule draws beyond the plan's flows
# (PlannerSettings.route_drawn, on by default since 2026-11-28), and without them
DRAWN = dataclasses.replace(PLANNER, name="+ drawn flows in route rounds", route_drawn=True)
NO_DRAWN = dataclasses.replace(PLANNER, name="planner, route rounds without drawn flows",
                               route_drawn=False)
# Route rounds that also try the plan without the (pool, variant) pairs a drawn class pins
# below the plan's cap there (PlannerSettings.route_unpin, on by default since 2026-11-28,
# ninth session), and the planner without it
UNPIN = dataclasses.replace(PLANNER, name="+ pinned pairs unloaded in route rounds",
                            route_unpin=True)
NO_UNPIN = dataclasses.replace(PLANNER, name="planner, route rounds plan for pinned pairs",
                               route_unpin=False)
# The planner told the forecast's margin (PlannerSettings.demand_margin = peak_factor, 1.1):
# a spot GPU counts for min(1, 0.9 × 1.1) of its servers, the reserve only what the margin
# does not cover; or told half of it (0.9 × 1.05); or none (the default)
MARGIN = dataclasses.replace(PLANNER, name="+ reclaims within the margin",
                             demand_margin=PLANNER.forecast.peak_factor)
HALF_MARGIN = dataclasses.replace(PLANNER, name="+ reclaims within half the margin",
                                  demand_margin=1 + (PLANNER.forecast.peak_factor - 1) / 2)
NO_MARGIN = dataclasses.replace(PLANNER, name="planner, reclaims on top of the margin",
                                demand_margin=1.0)
CONFIGS = {"before": BEFORE, "churn": CHURN, "resize": RESIZE, "react": REACT,
           "quantile": QUANTILE, "reserve": RESERVE, "planner": PLANNER, "scale": SCALE,
           "spare": SPARE, "spare-exposed": SPARE_EXPOSED, "pool-loss": POOL_LOSS,
           "pool-loss-hot": POOL_LOSS_HOT, "drawn": DRAWN,
           "no-drawn": NO_DRAWN, "unpin": UNPIN, "no-unpin": NO_UNPIN, "margin": MARGIN,
           "half-margin": HALF_MARGIN, "no-margin": NO_MARGIN}


def describe(c: PlannerConfig) -> str:
    cad = c.cadence
    churn = (f"churn priced at each added GPU's cold start ({c.churn.cold_start_s:g} s of its "
             "price)" if c.churn.cold_start_s else
             f"churn ${c.churn.usd_per_gpu_change:g} per GPU change")
    cadence = (f"full plans every {cad.plan_every_s / 60:g} minutes and on surprises, new "
               f"classes or outages, GPU counts right-sized every "
               f"{cad.resize_every_s / 60:g} minutes for the forecast's peak over the next "
               f"{cad.resize_every_s / 60:g} minutes + lead" if cad.resize_every_s else
               "plans hourly (for the peak of the whole hours ahead) and on surprises or "
               "outages")
    f = c.forecast
    margin = (f"margin the {f.error_quantile:.0%} quantile of observed / forecast"
              if f.error_quantile else f"margin × {f.peak_factor:g}")
    curve = "the forecast a curve through hourly means" if f.within_hour else "hourly forecast"
    kept = 1 - reclaim_reserve(sim.SPOT_RECLAIMS_PER_GPU_HOUR, c.reclaim_exposure_s)
    reserve = (f"; spot GPUs count {kept:.1%} (reclaims expected before a replacement "
               "serves)" if c.reclaim_exposure_s else "; spot GPUs count 90 %")
    react = (f"; a class observed above its plan by > {cad.react_tolerance:.0%} (and 3 σ of "
             "its count) right-sizes at once, every plan at least the last bucket's "
             "observed rate × margin" if cad.react_tolerance else "")
    floor = (f"; classes under {cad.min_class_rps:g} calls/s not planned for"
             if cad.min_class_rps else "")
    return f"{cadence}{react}; {curve}, {margin}; {churn}{reserve}{floor}"


@dataclass
class Setup:
    """What every fleet of one scenario shares."""

    of: Callable[..., Problem]
    base: Problem
    today: list[dict[ClassKey, float]]
    static: Plan
    bucket_s: float


def setup(s: Scenario, quick: bool) -> Setup:
    settings = settings_for(len(s.pools), quick)

    def of(demand: list[DemandClass], down: frozenset[str] = frozenset()) -> Problem:
        return without(problem_of(s, demand, settings), down)

    base = of([DemandClass(k.model, k.min_quality, k.slo_ms, k.edge_region, 0.0)
               for k in keys(s)])
    bucket_s = 300.0 if quick else sim.BUCKET_S
    today = sim.demand_day(s, 1.0, SEED, bucket_s=bucket_s)
    static = solve_or_fail(of(demand_classes(sim.peak_rates(today, 0, len(today)))),
                           f"{s.name}: static peak")
    return Setup(of, base, today, static, bucket_s)


def planner_fleet(s: Scenario, su: Setup, config: PlannerConfig = PLANNER) -> PlannerFleet:
    """The planner fleet, its forecaster trained on yesterday, its first plan made."""
    of = su.of
    if (config.reclaim_exposure_s > 0 or config.spot_spare or config.pool_loss
            or config.route_drawn is not None or config.route_unpin is not None
            or config.demand_margin is not None):
        risk = reclaim_reserve(sim.SPOT_RECLAIMS_PER_GPU_HOUR, config.reclaim_exposure_s)

        def of(demand: list[DemandClass], down: frozenset[str] = frozenset()) -> Problem:
            p = su.of(demand, down)
            if config.spot_spare:
                p = dataclasses.replace(p, settings=dataclasses.replace(p.settings,
                                                                        spot_spare=True))
            if config.pool_loss:
                p = dataclasses.replace(p, settings=dataclasses.replace(
                    p.settings, pool_loss=True, pool_loss_boost=config.pool_loss_boost))
            if config.route_drawn is not None:
                p = dataclasses.replace(p, settings=dataclasses.replace(
                    p.settings, route_drawn=config.route_drawn))
            if config.route_unpin is not None:
                p = dataclasses.replace(p, settings=dataclasses.replace(
                    p.settings, route_unpin=config.route_unpin))
            if config.demand_margin is not None:
                p = dataclasses.replace(p, settings=dataclasses.replace(
                    p.settings, demand_margin=config.demand_margin))
            if config.reclaim_exposure_s <= 0:
                return p
            return dataclasses.replace(p, pools=tuple(
                dataclasses.replace(q, reclaim_risk=risk) if q.price_class == "spot" else q
                for q in p.pools))

    forecaster = DemandForecaster(config.forecast)
    for b, rates in enumerate(sim.demand_day(s, YESTERDAY_SCALE, SEED + 1, bursts=False,
                                             bucket_s=su.bucket_s)):
        if (b * su.bucket_s) % 600 < su.bucket_s / 2:  # yesterday, observed every 10 minutes
            for k, r in rates.items():
                forecaster.observe(k, b * su.bucket_s, r)
    cadence = dataclasses.replace(config.cadence, react_window_s=su.bucket_s,
                                  lead_s=sim.PROVISION_DELAY_S + 2 * su.bucket_s)
    planner = PlannerFleet(of, forecaster, config.churn, cadence, day_offset_s=sim.DAY_S,
                           name=config.name, scale=config.scale)
    planner.start(0.0)
    return planner


def run_scenario(s: Scenario, quick: bool) -> ScenarioRun:
    su = setup(s, quick)
    of, base, today, static = su.of, su.base, su.today, su.static
    per_h = sim.buckets_per_hour(today)
    fleets: list[sim.Fleet] = [StaticFleet("static peak", static),
                               ReactiveFleet(static, {p.id: p for p in base.pools}),
                               SkyServeFleet(static, base)]
    planner = planner_fleet(s, su)
    fleets.append(planner)
    fleets.append(planner_fleet(s, su, BEFORE))  # the same fleet before this round's changes
    progress(f"provisioned: {s.name}: static peak ${static.usd_per_hour:,.2f}/h; "
             "the offline optimum's 24 hourly plans")
    plans, oracle_notes = [], []
    for h in range(24):
        down = frozenset().union(*(sim.down_pools(s, h * 3600 + m * 60) for m in range(60)))
        hour = of(demand_classes(sim.peak_rates(today, h * per_h, (h + 1) * per_h)), down)
        try:
            plans.append(solve_or_fail(hour, f"{s.name}: hour {h}"))
        except PlanRefused as exc:  # e.g. an outage leaves one region able to hold a variant
            loose = dataclasses.replace(hour, settings=dataclasses.replace(
                hour.settings, survive_region_loss=False))
            try:
                plans.append(solve_or_fail(loose, f"{s.name}: hour {h}"))
                oracle_notes.append(f"hour {h} without the region-loss rule ({exc})")
            except PlanRefused:  # no plan carries the hour's true peak: the static fleet runs
                plans.append(static)
                oracle_notes.append(f"hour {h} runs the static peak fleet ({exc})")
    fleets.append(OracleFleet(plans, lead_s=sim.PROVISION_DELAY_S + su.bucket_s))
    results = []
    for f in fleets:
        t0 = time.monotonic()
        r = sim.simulate(s, base, f, today, SEED + 2, sync_s=SYNC_S)
        progress(f"provisioned: {s.name}: {f.name}: {r.attainment:.2%} within SLO, "
                 f"${r.usd:,.0f}/day ({time.monotonic() - t0:.0f} s)")
        results.append(r)
    log = planner.log
    return ScenarioRun(s.name, len(s.pools), results, log.seconds, max(log.gaps, default=0.0),
                       log.adopted, log.infeasible, len(log.spot_alone),
                       sum(p.usd_per_hour for p in plans), oracle_notes, log.cut_short,
                       max((p.gap for p in plans), default=0.0),
                       sum(p.cut_short for p in plans))


def _row(run: ScenarioRun) -> list[object]:
    by = {r.fleet: r for r in run.results}
    static, hpa = by["static peak"], by["reactive autoscaler (HPA)"]
    sky, me, opt = by["SkyServe-like spot mix"], by["switchyard planner"], by["offline optimum"]
    att = " / ".join(f"{r.attainment:.2%}" for r in (static, hpa, sky, me, opt))
    usd = " / ".join(f"{r.usd:,.0f}" for r in (static, hpa, sky, me, opt))
    solve = (f"{statistics.median(run.planner_solve_s):.1f} / {max(run.planner_solve_s):.1f}"
             if run.planner_solve_s else "–")
    old = by[BEFORE.name]
    return [f"{run.name} ({run.pools})", att, usd, f"{me.usd / static.usd:.2f}",
            f"{me.usd / hpa.usd:.2f}", f"{me.usd / sky.usd:.2f}", f"{me.usd / opt.usd:.2f}",
            f"{old.attainment:.2%}, {old.usd:,.0f} ({100 * (me.attainment - old.attainment):+.2f} "
            f"pt, ×{me.usd / old.usd:.2f})", f"{run.adopted}", solve]


def out_of_reach(runs: list[ScenarioRun]) -> list[str]:
    """The cost targets the offline optimum's own day misses: the same MILP with each hour's
    true peak, known ahead. Not a bound on every planner: its plans are hourly (a planner
    right-sizing within the hour may be cheaper) and the best its node limit finds."""
    static, hpa = [], []
    for run in runs:
        by = {r.fleet: r for r in run.results}
        opt = by["offline optimum"]
        ratio = opt.usd / by["static peak"].usd
        if ratio > TARGETS["vs_static"]:
            static.append(f"{run.name} ×{ratio:.2f}")
        h = by["reactive autoscaler (HPA)"]
        if opt.usd >= h.usd:
            hpa.append(f"{run.name} ${opt.usd:,.0f} vs ${h.usd:,.0f}")
    return [f"Missed by the offline optimum's own day (hourly plans for each hour's true "
            "peak under the same node limit, so a reach for hourly plans, not a bound on a "
            "planner that right-sizes within the hour): "
            f"<= {TARGETS['vs_static']:.2f} × static peak on {len(static)} of {len(runs)} "
            "scenarios"
            + (f" (its bill over the static peak's: {', '.join(static)})" if static else "")
            + f"; cheaper than the HPA on {len(hpa)} of {len(runs)}"
            + (f" ({', '.join(hpa)})" if hpa else "") + "."]


def notes(runs: list[ScenarioRun], quick: bool) -> list[str]:
    bucket = 300 if quick else sim.BUCKET_S
    out = [f"A fluid model per {bucket:g}-second bucket over one day, not a per-call "
           "simulation (the module doc of `benchmarks/costsim/provisioned.py`): attainment is "
           "the share of calls routed within SLO by the brain's p95 model on the GPUs that "
           "exist in that bucket (cold start "
           f"{sim.PROVISION_DELAY_S:g} s, random spot reclaims "
           f"{sim.SPOT_RECLAIMS_PER_GPU_HOUR:g}/GPU-hour plus the scenarios' spot outages, "
           "outages down); $ is the simulated provider's bill (GPU-seconds × list price from "
           "`examples/prices.toml`, booting GPUs included).",
           "Attainment and USD columns: static peak / HPA / SkyServe-like / planner / offline "
           "optimum. The ratios are the planner's day bill over each fleet's.",
           f"Every fleet acts {SYNC_S:g} s into each bucket on that bucket's demand (an HPA's "
           "sync period) and a GPU serves pro rata of the bucket from when it is ready. The "
           "HPA is Kubernetes' documented behaviour on the static peak fleet's pools and "
           "variants: desired = ceil(busy / (concurrency × target)), 10 % tolerance, scale-up "
           "at once up to max(×2, +4) per 15-second sync, scale-down to the highest "
           "recommendation of the last 300 s, at least one GPU per pool, each pool on its own; "
           "its target is 0.9 × the utilisation the pool's SLOs allow (what a load test "
           "against the SLO would find), and its GPUs take the same cold start.",
           f"The planner: {describe(PLANNER)}.",
           f"Each HiGHS MILP run stops at {NODE_LIMIT} branch-and-bound nodes (or the "
           "5 % gap), a deterministic limit: the same day gives the same plans on any host "
           f"load; a {SAFETY_NET_S:g} s wall-clock limit per run is only a safety net, and "
           "the runs it stopped are counted per scenario below (0 = the planner's day is "
           "reproducible). The offline optimum's hourly plans are solved under the same "
           "limits (the same MILP with the hour's true peak demand): its worst gap against "
           "the relaxation's bound is given per scenario below, so it is the best plan "
           "those limits find, not a proven optimum."]
    targets: dict[str, list[str]] = {
        "attainment >= 99.5 %": [], "<= 0.60 × static peak": [],
        "cheaper than HPA at equal or better attainment": [], "<= 1.15 × offline optimum": []}
    for run in runs:
        by = {r.fleet: r for r in run.results}
        me = by["switchyard planner"]
        checks = [me.attainment >= TARGETS["attainment"],
                  me.usd <= TARGETS["vs_static"] * by["static peak"].usd,
                  me.usd < by["reactive autoscaler (HPA)"].usd
                  and me.attainment >= by["reactive autoscaler (HPA)"].attainment,
                  me.usd <= TARGETS["vs_optimum"] * by["offline optimum"].usd]
        for met, ok in zip(targets.values(), checks, strict=True):
            if ok:
                met.append(run.name)
    for name, met in targets.items():
        out.append(f"Target {name}: met on {len(met)} of {len(runs)} scenarios"
                   + (f" ({', '.join(met)})." if met else "."))
    out.extend(out_of_reach(runs))
    pairs = [({r.fleet: r for r in run.results}, run.name) for run in runs]
    deltas = sorted((100 * (by["switchyard planner"].attainment - by[BEFORE.name].attainment),
                     name) for by, name in pairs)
    if deltas:
        now = sum(by["switchyard planner"].usd for by, _ in pairs)
        then = sum(by[BEFORE.name].usd for by, _ in pairs)
        out.append(f"Against the planner before this round (same day, same simulator): "
                   f"USD/day summed over the scenarios ×{now / then:.3f}; attainment "
                   f"{', '.join(f'{n} {d:+.2f} pt' for d, n in deltas)}; "
                   f"{sum(d < -0.1 for d, _ in deltas)} scenario(s) lose more than 0.1 point.")
    for run in runs:
        by = {r.fleet: r for r in run.results}
        fails = ", ".join(f"{r.fleet} {r.failed / r.calls:.2%} failed, {r.late / r.calls:.2%} "
                          "late" for r in run.results if r.calls and r.met < r.calls)
        out.append(f"{run.name}: {by['switchyard planner'].reclaimed} spot GPUs reclaimed under "
                   f"the planner; offline optimum by the MILP alone (no cold start) "
                   f"${run.oracle_milp_usd:,.0f}/day, its hourly plans' worst MIP gap "
                   f"{run.oracle_gap:.0%} ({run.oracle_cut_short} solver runs stopped by the "
                   f"safety net); planner plans' worst MIP gap "
                   f"{run.planner_gap:.0%} (against the relaxation's bound); classes left on "
                   f"spot alone {run.spot_alone}; planner solver runs stopped by the "
                   f"wall-clock safety net {run.planner_cut_short}; misses: {fails or 'none'}"
                   + (f"; re-plans refused: {len(run.infeasible)}" if run.infeasible else "")
                   + (f"; offline optimum: {'; '.join(run.oracle_notes)}"
                      if run.oracle_notes else "") + ".")
    if quick:
        out.append("--quick: 5-minute buckets (the full run: 1-minute).")
    return out


def run(quick: bool, paths: list[pathlib.Path] | None = None, solve_times: bool = True,
        each: Callable[[Section, list[pathlib.Path]], None] | None = None,
        jobs: int = 1) -> list[Section]:
    """The cost section (and the solve-time one); ``each`` gets the cost section after
    every scenario, with the scenarios done so far (in the order given). ``jobs`` > 1: that
    many scenarios at a time, each in its own process (each day is seeded and node-limited,
    so the rows do not depend on it)."""
    t0 = time.monotonic()
    todo = paths or sorted(SCENARIOS.glob("*.toml"))
    outcomes: dict[pathlib.Path, ScenarioRun | str] = {}
    cost = None

    def finished(path: pathlib.Path, outcome: ScenarioRun | str) -> None:
        nonlocal cost
        outcomes[path] = outcome
        done = [p for p in todo if p in outcomes]
        runs = [o for p in done if isinstance(o := outcomes[p], ScenarioRun)]
        refused = [o for p in done if isinstance(o := outcomes[p], str)]
        table = md_table(["scenario (pools)", "attainment", "USD/day", "× static peak",
                          "× HPA", "× SkyServe-like", "× offline optimum",
                          "planner before this round (attainment, USD; planner's Δ)",
                          "re-plans adopted",
                          "planner solve s (median / max)"],
                         [_row(r) for r in runs], "lllrrrrlrl")
        cost = Section(TITLE, command_for(__name__, quick), table,
                       notes(runs, quick) + refused, elapsed_s=time.monotonic() - t0)
        if each is not None:
            each(cost, done)

    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_scenario, path, quick): path for path in todo}
            for fut in as_completed(futures):
                finished(futures[fut], fut.result())
    else:
        for path in todo:
            finished(path, _scenario(path, quick))
    assert cost is not None
    return [cost, solve_section(quick)] if solve_times else [cost]


def _scenario(path: pathlib.Path, quick: bool) -> ScenarioRun | str:
    """One scenario's run, or why it is not compared."""
    s = load_scenario(path)
    progress(f"provisioned: {s.name} ({len(s.pools)} pools)")
    try:
        return run_scenario(s, quick)
    except PlanRefused as exc:
        progress(f"provisioned: {s.name}: not compared, a baseline has no plan ({exc}).")
        return f"{s.name}: not compared, a baseline has no plan ({exc})."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--scenario", action="append", type=pathlib.Path, default=[])
    ap.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    ap.add_argument("--no-solve-times", action="store_true",
                    help="leave the solve-time section (planner.plan on synthetic fleets) as is")
    ap.add_argument("--solve-times-only", action="store_true",
                    help="only the solve-time section (no simulated day)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="scenarios run at a time, each in its own process (default: 1)")
    ap.add_argument("--results", type=pathlib.Path, default=RESULTS,
                    help="the file the sections are written into (default: RESULTS.md)")
    ap.add_argument("--pool-loss", action="store_true",
                    help="with --solve-times-only: each strategy also with N+1 across pools "
                         "(PlannerSettings.pool_loss), at 10 and 100 pools")
    args = ap.parse_args()

    if args.solve_times_only:
        sec = solve_section(args.quick, alone=True, pool_loss=args.pool_loss)
        if not args.no_write:
            write_section(sec, args.results)
            progress(f"provisioned: wrote '{sec.title}' into {args.results}")
        print(sec.markdown())
        return

    def written(sec: Section, done: list[pathlib.Path]) -> None:
        if done != sorted(SCENARIOS.glob("*.toml")):
            sec.command += "".join(
                f" --scenario {p.relative_to(ROOT) if p.is_absolute() else p}" for p in done)
        if not args.no_write:
            write_section(sec, args.results)
            progress(f"provisioned: wrote '{sec.title}' ({len(done)} scenarios) into "
                     f"{args.results}")

    sections = run(args.quick, args.scenario or None, not args.no_solve_times, written,
                   args.jobs)
    for sec in sections[1:]:  # the cost section is written as it grows
        if not args.no_write:
            write_section(sec, args.results)
            progress(f"provisioned: wrote '{sec.title}' into {args.results}")
    for sec in sections:
        print(sec.markdown())


if __name__ == "__main__":
    main()
