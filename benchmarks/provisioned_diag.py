"""Why a fleet wins or loses the provisioned-cost day: GPU-hours by pool and misses by cause.

``python -m benchmarks.provisioned_diag [--quick] [--scenario PATH ...] [--fleet NAME ...]``
runs the day of :mod:`benchmarks.provisioned` (same demand, same seeds) for the HPA-like
autoscaler and the planner before and after this round's changes
(:data:`benchmarks.provisioned.BEFORE`, :data:`benchmarks.provisioned.PLANNER`), and prints
per scenario and fleet:

- attainment, the bill, GPU-hours on-demand and spot;
- each bucket's missed calls (late or failed) put on one cause, the first that holds:
  ``outage`` (a pool is down), ``reclaim`` (a spot GPU was taken back within the cold start
  before), ``cold start`` (GPUs requested and not serving yet), ``under forecast`` (the
  planner's plan was made for fewer calls/s than came), else ``steady`` (the GPUs that
  exist, sized for the demand, and the fluid router's cap per pool: granularity and the
  routing of the plan's flows);
- the pools whose bill differs most between the planner and the HPA;
- where the planner misses (:func:`held`): the buckets it misses calls in, each cause's
  share, and per pool the GPUs the HPA held ready there beyond the planner's (GPU-buckets,
  summed over those buckets): capacity the planner did not hold where it missed.

``--scale NAME`` (:data:`benchmarks.provisioned.SCALES`) adds, for each planner
configuration without a scaler, its own day of plans run again with
:class:`placement.plan_scale.PoolScaler` sizing the plan's pools between re-plans
(:class:`benchmarks.costsim.provisioned_fleets.ReplayedPlanner`: the same plans, not solved
again; a scaler changes GPU counts, and the plans depend only on call rates and the plan in
force).

``--write`` puts the table into ``benchmarks/RESULTS.md`` (after the provisioned-cost
sections); there is no ``run``, so ``run_all`` leaves it out.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from benchmarks.common import ROOT, Section, md_table, progress
from benchmarks.cost import write_section
from benchmarks.costsim import provisioned as sim
from benchmarks.costsim.provisioned_fleets import PlannerFleet, ReactiveFleet, ReplayedPlanner
from benchmarks.costsim.scenario import Scenario, load_scenario
from benchmarks.provisioned import (
    BEFORE,
    CONFIGS,
    PLANNER,
    RESULTS,
    SCALES,
    SCENARIOS,
    SEED,
    SYNC_S,
    PlannerConfig,
    planner_fleet,
    setup,
)
from placement.plan_types import PlanPool

CAUSES = ("outage", "reclaim", "cold start", "under forecast", "steady")
TITLE = "Provisioned cost: where the bill and the misses come from (planner vs HPA)"


@dataclass
class Recorded:
    """A fleet, and the calls/s its plan was made for at each bucket (planner only)."""

    fleet: sim.Fleet
    planned: list[float] = field(default_factory=list)
    name: str = ""  # the fleet's (sim.Fleet's name is a plain attribute)

    def __post_init__(self) -> None:
        self.name = self.fleet.name

    def control(self, seen: sim.Observed) -> None:
        self.fleet.control(seen)
        self.planned.append(_planned(self.fleet))

    def targets(self) -> Mapping[str, int]:
        return self.fleet.targets()

    def loaded(self) -> Mapping[str, frozenset[str]]:
        return self.fleet.loaded()


def _planned(fleet: sim.Fleet) -> float:
    if not isinstance(fleet, PlannerFleet | ReplayedPlanner) or fleet.current is None:
        return math.inf
    return sum(rps for pp in fleet.current.pools for _, _, rps in pp.serves)


def causes(trace: list[sim.Bucket], planned: list[float], bucket_s: float) -> dict[str, float]:
    """Missed calls per cause over the day (module doc); ``planned[i]``: the calls/s the
    plan in force in bucket ``i`` was made for (the fleet acts within the bucket)."""
    out = dict.fromkeys(CAUSES, 0.0)
    for i, b in enumerate(trace):
        missed = (b.late_rps + b.failed_rps) * bucket_s
        if missed > 0:
            out[cause_of(trace, i, planned, bucket_s)] += missed
    return out


def cause_of(trace: list[sim.Bucket], i: int, planned: list[float], bucket_s: float) -> str:
    """Bucket ``i``'s cause (the first of :data:`CAUSES` that holds; module doc)."""
    b, window = trace[i], math.ceil(sim.PROVISION_DELAY_S / bucket_s)
    before = planned[i] if i < len(planned) else math.inf  # the fleet acted in-bucket
    if b.down:
        return "outage"
    if any(x.reclaimed for x in trace[max(0, i - window):i + 1]):
        return "reclaim"
    if sum(b.active.values()) > sum(b.ready.values()):
        return "cold start"
    return "under forecast" if b.calls_rps > before + 1e-9 else "steady"


def diagnose(s: Scenario, quick: bool, configs: list[PlannerConfig], hpa: bool,
             scales: tuple[str, ...] = ()) -> tuple[list[list[object]], list[str]]:
    """Table rows (one per fleet) and notes (the pools whose bill differs most)."""
    su = setup(s, quick)
    prices = {p.id: p.usd_per_gpu_hour for p in su.base.pools}
    kinds = {p.id: p.price_class for p in su.base.pools}
    fleets: list[sim.Fleet] = []
    if hpa:
        fleets.append(ReactiveFleet(su.static, {p.id: p for p in su.base.pools}))
    fleets += [planner_fleet(s, su, c) for c in configs]
    rows: list[list[object]] = []
    results, traces = [], []
    pools = {p.id: p for p in su.base.pools}
    for f in _then_replayed(fleets, scales, pools):
        t0 = time.monotonic()
        rec, trace = Recorded(f), list[sim.Bucket]()
        r = sim.simulate(s, su.base, rec, su.today, sim_seed(), trace=trace, sync_s=SYNC_S)
        results.append(r)
        traces.append((trace, rec.planned))
        by = causes(trace, rec.planned, su.bucket_s)
        od = sum(h for pid, h in r.gpu_hours_by_pool.items() if kinds[pid] != "spot")
        spot = sum(h for pid, h in r.gpu_hours_by_pool.items() if kinds[pid] == "spot")
        rows.append([s.name, f.name, f"{r.attainment:.2%}", f"{r.usd:,.0f}", f"{od:,.0f}",
                     f"{spot:,.0f}", *(f"{by[c] / r.calls:.2%}" for c in CAUSES)])
        progress(f"diag: {s.name}: {f.name}: {r.attainment:.2%}, ${r.usd:,.0f} "
                 f"({time.monotonic() - t0:.0f} s)")
        if isinstance(f, PlannerFleet):
            log = f.log
            progress(f"diag: {s.name}: {f.name}: {len(log.seconds)} solves, "
                     f"{sum(log.seconds):.0f} s solving, {log.adopted} adopted, "
                     f"{len(log.infeasible)} refused, {log.cut_short} solver runs cut short "
                     "by the wall-clock safety net" + "".join(
                         f"\n  refused {x}" for x in log.infeasible))
    notes = []
    if hpa:
        base = results[0]
        for r in results[1:]:
            diff = sorted(((r.gpu_hours_by_pool[p] - base.gpu_hours_by_pool[p]) * prices[p], p)
                          for p in prices)
            top = [d for d in diff[::-1][:3] if d[0] > 0.5] + [d for d in diff[:2] if d[0] < -0.5]
            notes.append(f"{s.name}: {r.fleet} − HPA, USD/day by pool: " + (", ".join(
                f"{p} {d:+,.0f} ({r.gpu_hours_by_pool[p]:.0f} vs "
                f"{base.gpu_hours_by_pool[p]:.0f} GPU-h)" for d, p in top) or "none over $0.5")
                + f"; total {r.usd - base.usd:+,.0f}.")
        notes += [f"{s.name}: {r.fleet}: {held(traces[0][0], *t, su.bucket_s)}"
                  for r, t in zip(results[1:], traces[1:], strict=True)]
    return rows, notes


def held(hpa: list[sim.Bucket], trace: list[sim.Bucket], planned: list[float],
         bucket_s: float, top: int = 4) -> str:
    """Where a fleet misses calls against the HPA's day (same demand, bucket by bucket):
    its missed buckets by cause (the HPA's misses in the same buckets), the hours they fall
    in, and the pools where the HPA had more GPUs ready in them (GPU-buckets summed)."""
    missed = [i for i, b in enumerate(trace) if (b.late_rps + b.failed_rps) > 1e-9]
    if not missed:
        return "no bucket with a missed call."
    per_hour = 3600.0 / bucket_s
    by_cause: dict[str, list[int]] = {}
    for i in missed:
        by_cause.setdefault(cause_of(trace, i, planned, bucket_s), []).append(i)
    parts = []
    for cause, idx in by_cause.items():
        mine = sum((trace[i].late_rps + trace[i].failed_rps) * bucket_s for i in idx)
        theirs = sum((hpa[i].late_rps + hpa[i].failed_rps) * bucket_s for i in idx)
        hours = sorted({int(i // per_hour) for i in idx})
        more: dict[str, int] = {}
        for i in idx:
            for pid, n in hpa[i].ready.items():
                if n > trace[i].ready.get(pid, 0):
                    more[pid] = more.get(pid, 0) + n - trace[i].ready.get(pid, 0)
        pools = sorted(more.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        parts.append(
            f"{cause}: {len(idx)} buckets (hours {_spans(hours)}), {mine:,.0f} calls missed "
            f"(the HPA {theirs:,.0f} in them); the HPA held more ready GPUs there on "
            + (", ".join(f"{pid} +{n}" for pid, n in pools) or "no pool"))
    return "; ".join(parts) + " (GPU-buckets)."


def _spans(hours: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``1-3, 7``."""
    out: list[str] = []
    for h in hours:
        if out and out[-1].split("-")[-1] == str(h - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{h}"
        else:
            out.append(str(h))
    return ", ".join(out)


def _then_replayed(fleets: list[sim.Fleet], scales: tuple[str, ...],
                   pools: Mapping[str, PlanPool]) -> Iterator[sim.Fleet]:
    """``fleets``, each planner without a scaler followed by its day replayed with each
    of ``scales`` (after it has run: the replay needs its history)."""
    for f in fleets:
        yield f
        if isinstance(f, PlannerFleet) and f.scale is None:
            for name in scales:
                yield ReplayedPlanner(f.first_plan, f.history, pools, SCALES[name],
                                      f"{f.name} + scale {name}")


def sim_seed() -> int:
    return SEED + 2


def section(paths: list[pathlib.Path], quick: bool, configs: list[PlannerConfig],
            hpa: bool, write_each: bool = False, scales: tuple[str, ...] = ()) -> Section:
    """The section; ``write_each``: written into RESULTS.md after every scenario (its
    command naming the scenarios done so far), so a run cut short keeps what it measured."""
    t0 = time.monotonic()
    rows: list[list[object]] = []
    notes: list[str] = []
    for i, path in enumerate(paths):
        r, n = diagnose(load_scenario(path), quick, configs, hpa, scales)
        rows += r
        notes += n
        sec = _section(paths[:i + 1], quick, configs, hpa, rows, notes, time.monotonic() - t0,
                       scales)
        if write_each:
            write(sec)
            progress(f"diag: wrote '{sec.title}' ({i + 1} of {len(paths)} scenarios)")
    return sec


def _section(paths: list[pathlib.Path], quick: bool, configs: list[PlannerConfig], hpa: bool,
             rows: list[list[object]], notes: list[str], elapsed_s: float,
             scales: tuple[str, ...] = ()) -> Section:
    table = md_table(["scenario", "fleet", "attainment", "USD/day", "GPU-h on-demand",
                      "GPU-h spot", *(f"missed: {c}" for c in CAUSES)], rows, "llrrrr" + "r" * 5)
    head = [f"The day of `python -m benchmarks.provisioned{' --quick' if quick else ''}` (same "
            "demand, seeds and simulated provider). Missed calls (late or failed, share of all "
            "calls) are put on the first cause that holds in their bucket: outage (a pool "
            "down), reclaim (a spot GPU taken back within the cold start before), cold start "
            "(GPUs requested and not serving), under forecast (the plan in force was made for "
            "fewer calls/s than came; planner only), else steady (the GPUs that exist and "
            "the fluid router: granularity, the router not finding the plan's flows)."]
    return Section(TITLE, _command(paths, quick, configs, hpa, scales), table, head + notes,
                   elapsed_s=elapsed_s)


def _command(paths: list[pathlib.Path], quick: bool, configs: list[PlannerConfig],
             hpa: bool, scales: tuple[str, ...] = ()) -> str:
    cmd = "python -m benchmarks.provisioned_diag" + (" --quick" if quick else "")
    names = {c.name: key for key, c in CONFIGS.items()}
    cmd += "".join(f" --config {names[c.name]}" for c in configs)
    cmd += "" if hpa else " --no-hpa"
    cmd += "".join(f" --scale {n}" for n in scales)
    if paths == _all():
        return cmd
    return cmd + "".join(f" --scenario {p.relative_to(ROOT) if p.is_absolute() else p}"
                         for p in paths)


def _all() -> list[pathlib.Path]:
    return sorted(SCENARIOS.glob("*.toml"))


def write(sec: Section, path: pathlib.Path = RESULTS) -> None:
    """Replace the section by title, or add it after the last provisioned-cost section."""
    text = path.read_text()
    if f"\n## {sec.title}\n" not in text:
        parts = text.split("\n## ")
        last = max(i for i, p in enumerate(parts) if p.startswith("Provisioned cost"))
        parts.insert(last + 1, sec.markdown().rstrip().removeprefix("## ") + "\n")
        path.write_text("\n## ".join(parts))
        return
    write_section(sec, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--scenario", action="append", type=pathlib.Path, default=[])
    ap.add_argument("--no-hpa", action="store_true")
    ap.add_argument("--config", action="append", default=[], choices=list(CONFIGS),
                    help="planner configurations (default: before and now)")
    ap.add_argument("--scale", action="append", default=[], choices=list(SCALES),
                    help="each planner's day replayed with this pool scaler too")
    ap.add_argument("--write", action="store_true", help=f"write the section into {RESULTS}")
    args = ap.parse_args()
    configs = [CONFIGS[c] for c in args.config] or [BEFORE, PLANNER]
    sec = section(args.scenario or _all(), args.quick, configs, not args.no_hpa, args.write,
                  tuple(args.scale))
    print(sec.markdown())


if __name__ == "__main__":
    main()
