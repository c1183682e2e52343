"""Provisioned GPU cost of the capacity planner against static fleets, over one simulated day.

``python -m benchmarks.planner [--scenario PATH ...]`` reads cost-simulation scenarios
(``benchmarks/scenarios/*.toml``) and prints, per scenario, GPU-hours and USD for one day:

- **configured fleet**: the scenario's own ``gpus`` per pool, every allowed variant loaded;
- **everywhere, peak**: every pool runs >= 1 GPU with every variant it may load, GPUs sized
  by the same MILP for each class's peak rate of the day (``load_everywhere``);
- **planner, peak**: one plan for the day's peak, the planner choosing variants;
- **planner, hourly**: re-planned every hour (and on a sustained forecast error, checked every
  10 minutes) from :class:`placement.forecast.DemandForecaster`, trained on a previous day of
  the scenario's demand and observing today's as it comes, adopted only when it pays for its
  churn (:func:`placement.planner.decide`);
- **hourly oracle**: the MILP's optimum for each hour's true peak (the offline optimum).

"hours ok" counts the hours whose plan serves that hour's *true* peak demand within every
class's SLO by the planner's own latency model (the brain's p95 estimate) — not a
simulation; outages are not modelled (the region-loss rule stands in for them).

Assumptions the scenarios do not carry, printed with the table: GPU memory per accelerator
(public specs), a variant's footprint (by quality), spot reclaim risk, a per-pool GPU limit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, replace

from benchmarks.costsim.scenario import Scenario, load_scenario
from benchmarks.costsim.trace import rate
from placement.forecast import ClassKey, DemandForecaster
from placement.planner import (
    DemandClass,
    Infeasible,
    Plan,
    PlannerSettings,
    PlanPool,
    PlanVariant,
    PoolPlan,
    Problem,
    evaluate,
    plan,
)
from placement.replan import ChurnCost, decide

GPU_MEMORY_GB = {"nvidia-t4": 16, "nvidia-l4": 24, "nvidia-a10g": 24, "nvidia-a100-40gb": 40,
                 "nvidia-a100-80gb": 80, "nvidia-h100-80gb": 80}  # vendor datasheets
SMALL_GB, LARGE_GB = 10.0, 20.0  # declared footprints: quality < 0.8 is "small"
SPOT_RECLAIM_RISK = 0.1
MAX_GPUS = 64
SAMPLES_PER_HOUR = 6


def problem_of(s: Scenario, demand: list[DemandClass], settings: PlannerSettings) -> Problem:
    variants = tuple(PlanVariant(v.name, m.name, v.quality,
                                 SMALL_GB if v.quality < 0.8 else LARGE_GB, v.compute_ms)
                     for m in s.models.values() for v in m.variants)
    pools = tuple(PlanPool(p.id, p.cloud, p.region, p.accelerator, p.price_class,
                           p.usd_per_gpu_hour, GPU_MEMORY_GB.get(p.accelerator, 24), p.speed,
                           p.max_concurrency_per_gpu,
                           SPOT_RECLAIM_RISK if p.price_class == "spot" else 0.0, MAX_GPUS,
                           frozenset(p.variants)) for p in s.pools)

    def rtt(edge: str, region: str) -> float:
        if edge == region:
            return 1.0
        return s.rtt_ms.get((edge, region)) or s.rtt_ms[(region, edge)]

    return Problem(pools, variants, tuple(demand), rtt, settings)


def keys(s: Scenario) -> list[ClassKey]:
    return [ClassKey(c.model, c.min_quality, c.slo_ms, r)
            for r in sorted(s.regions) for c in s.classes()]


def class_rate(s: Scenario, k: ClassKey, hour: float, scale: float) -> float:
    share = next(c.share for c in s.models[k.model].classes
                 if (c.min_quality, c.slo_ms) == (k.min_quality, k.slo_ms))
    return share * rate(s, k.edge_region, k.model, hour / 24.0, 1.0, s.load_scale * scale)


def peak(s: Scenario, hours: range, scale: float) -> list[DemandClass]:
    steps = [h + i / SAMPLES_PER_HOUR for h in hours for i in range(SAMPLES_PER_HOUR)]
    return [DemandClass(k.model, k.min_quality, k.slo_ms, k.edge_region,
                        max(class_rate(s, k, t, scale) for t in steps)) for k in keys(s)]


@dataclass
class Row:
    name: str
    gpu_hours: float = 0.0
    usd: float = 0.0
    hours_ok: int = 0
    changes: int = 0
    solve_s: list[float] | None = None
    gap: float = 0.0  # the largest MIP gap left by a time-limited solve

    def add_hour(self, p: Plan, ok: bool, hours: float = 1.0) -> None:
        """Bill ``p`` for ``hours``; ``ok`` counts one more hour served (whole hours only)."""
        self.gpu_hours += sum(pp.gpus for pp in p.pools) * hours
        self.usd += p.usd_per_hour * hours
        self.hours_ok += ok
        self.gap = max(self.gap, p.gap)


def serves(s: Scenario, p: Plan, hour: int, scale: float, settings: PlannerSettings) -> bool:
    return not isinstance(evaluate(problem_of(s, peak(s, range(hour, hour + 1), scale),
                                              settings), p), Infeasible)


def solved(result: Plan | Infeasible, what: str) -> Plan:
    if isinstance(result, Infeasible):
        raise SystemExit(f"{what}: {result.explain()}")
    return result


def run(s: Scenario, settings: PlannerSettings, churn: ChurnCost, scale: float,
        hourly: bool) -> list[Row]:
    day = range(24)
    configured = Plan(tuple(PoolPlan(p.id, p.gpus, tuple(p.variants), 0, 0,
                                     p.gpus * p.usd_per_gpu_hour, ()) for p in s.pools),
                      sum(p.gpus * p.usd_per_gpu_hour for p in s.pools))
    rows = [Row("configured fleet"), Row("everywhere, peak"), Row("planner, peak"),
            Row("planner, hourly", solve_s=[]), Row("hourly oracle", solve_s=[])]
    if not hourly:
        rows = rows[:3]
    unchecked = replace(settings, load_everywhere=True)  # baselines: memory not checked
    everywhere = solved(plan(problem_of(s, peak(s, day, scale), unchecked)), "everywhere")
    t0 = time.perf_counter()
    static = solved(plan(problem_of(s, peak(s, day, scale), settings)), "planner, peak")
    rows[2].solve_s = [time.perf_counter() - t0]
    # Static fleets: serving the day's per-class peak serves every hour (less demand per
    # class never needs more capacity), so one check stands for all 24 hours.
    day_peak = problem_of(s, peak(s, day, scale), settings)
    for r, p, st in zip(rows[:3], (configured, everywhere, static),
                        (unchecked, unchecked, settings), strict=True):
        ok = not isinstance(evaluate(replace(day_peak, settings=st), p), Infeasible)
        for _ in day:
            r.add_hour(p, ok)
    if not hourly:
        return rows
    forecaster = DemandForecaster()
    for h in day:  # yesterday: the same scenario day at scale 1.0, observed every 10 min
        for i in range(SAMPLES_PER_HOUR):
            for k in keys(s):
                forecaster.observe(k, h * 3600 + i * 600, class_rate(s, k, h + i / 6, 1.0))
    current: Plan | None = None
    for h in day:
        now = 86_400 + h * 3600
        in_force: list[Plan] = []  # every plan that ran during this hour, billed per slot
        for i in range(SAMPLES_PER_HOUR):
            if i == 0 or forecaster.surprises():
                t0 = time.perf_counter()
                d = decide(problem_of(s, list(forecaster.forecast(now + i * 600, 3600 - i * 600)),
                                      settings), current, churn)
                assert rows[3].solve_s is not None
                rows[3].solve_s.append(time.perf_counter() - t0)
                if isinstance(d, Infeasible):
                    raise SystemExit(f"hour {h}: {d.explain()}")
                rows[3].changes += d.adopt and current is not None
                current = d.plan
            assert current is not None
            rows[3].add_hour(current, False, 1.0 / SAMPLES_PER_HOUR)
            if current not in in_force:
                in_force.append(current)
            for k in keys(s):
                forecaster.observe(k, now + i * 600, class_rate(s, k, h + i / 6, scale))
        rows[3].hours_ok += all(serves(s, p, h, scale, settings) for p in in_force)
        t0 = time.perf_counter()
        oracle = solved(plan(problem_of(s, peak(s, range(h, h + 1), scale), settings)), "oracle")
        assert rows[4].solve_s is not None
        rows[4].solve_s.append(time.perf_counter() - t0)
        rows[4].add_hour(oracle, True)
    return rows


def table(name: str, rows: list[Row]) -> str:
    base = rows[1].usd
    out = [f"### {name}", "",
           "| fleet | GPU-hours/day | USD/day | vs everywhere, peak | hours ok | re-plans "
           "adopted | solve s (median / max) | MIP gap left |",
           "| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        solve = (f"{statistics.median(r.solve_s):.2f} / {max(r.solve_s):.2f}"
                 if r.solve_s else "–")
        out.append(f"| {r.name} | {r.gpu_hours:.0f} | {r.usd:,.0f} | {r.usd / base - 1:+.0%} "
                   f"| {r.hours_ok}/24 | {r.changes if r.name == 'planner, hourly' else '–'} "
                   f"| {solve} | {r.gap:.1%} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", action="append", default=[])
    ap.add_argument("--scale", type=float, default=1.1,
                    help="today's demand against the day the forecaster learned (1.1 = +10 %%)")
    ap.add_argument("--churn-usd-per-gpu", type=float, default=0.5)
    ap.add_argument("--no-region-loss", action="store_true")
    ap.add_argument("--time-limit-s", type=float, default=20.0, help="per MILP solve")
    ap.add_argument("--hourly-max-pools", type=int, default=15,
                    help="run the hourly rows only on scenarios with at most this many pools")
    args = ap.parse_args(argv)
    paths = args.scenario or ["benchmarks/scenarios/small.toml",
                              "benchmarks/scenarios/far-edge.toml",
                              "benchmarks/scenarios/default.toml"]
    settings = PlannerSettings(survive_region_loss=not args.no_region_loss,
                               time_limit_s=args.time_limit_s, mip_rel_gap=0.02)
    churn = ChurnCost(usd_per_gpu_change=args.churn_usd_per_gpu)
    print("command: python -m benchmarks.planner " + " ".join(sys.argv[1:] if argv is None
                                                                 else argv))
    print(f"assumptions: GPU memory {GPU_MEMORY_GB} GB; footprint {SMALL_GB:g} GB (quality < "
          f"0.8) / {LARGE_GB:g} GB; spot reclaim risk {SPOT_RECLAIM_RISK}; <= {MAX_GPUS} GPUs "
          f"per pool; today = {args.scale:g} × the learned day; churn ${args.churn_usd_per_gpu:g}"
          f"/GPU, ${churn.usd_per_variant_change:g}/variant change; {settings}")
    for path in paths:
        s = load_scenario(path)
        print()
        print(table(f"{s.name} ({len(s.pools)} pools, {len(s.regions)} regions, "
                    f"{len(keys(s))} demand classes)",
                    run(s, settings, churn, args.scale, len(s.pools) <= args.hourly_max_pools)))


if __name__ == "__main__":
    main()
