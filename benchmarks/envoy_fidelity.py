"""Decision fidelity (issue 12): the Envoy mode against per-call decisions, every scenario.

    python -m benchmarks.envoy_fidelity [--quick] [--scenario NAME ...] [--seeds N]
                                        [--no-write] [--what-if] [--rows ROW,...]

Each scenario in ``benchmarks/scenarios/`` is simulated once per row on the same trace (two
worker processes): ``switchyard`` (placement's per-call ``Profile.choose`` with the edge's
calls in flight against its slot shares), ``envoy`` (what an Envoy edge does with the config
placement compiles, ``benchmarks/costsim/envoy_policy.py``: per class, the failover order
with the miss margins placement learned from the access log and weighted rotations of it
from ``placement.splits``; calls with a quality floor take the slow path, the co-located
Python edge), ``envoy-order-only`` (the order alone, no weights and no learned margins: what
was compiled before); ``--what-if`` adds ``envoy-compiled`` (``envoy`` with quality floors
compiled into the order as well: no per-call decision anywhere) and
``envoy-share-breakers`` (slot shares as circuit breakers) and ``envoy-cold-spread``
(``envoy`` with ``plan.plan_region``'s ``cold_spread``: routes split by room while nothing
is learned of the region) and ``envoy-slow-start`` (``envoy`` with placement's slow start of
a deployment that came back, ``services.xds.returns``, built and off); ``--rows`` runs only
the rows
named (``switchyard`` always first; implies ``--no-write``). ``--seeds N`` runs each scenario
on its seed and the N - 1 after it (trace, outages, draws). The target is the issue's:
within 1 point of switchyard's SLO attainment and 5 % of its cost per call, read here as
*at most* 1 point below and 5 % above. Prints the section and writes it into
``benchmarks/RESULTS.md`` (a section of its own, after the cost sections).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import pathlib
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from benchmarks.common import Section, md_table, progress
from benchmarks.cost import DEFAULT_SCENARIO, RESULTS, SCENARIOS, write_section
from benchmarks.costsim.control import ControlPlane
from benchmarks.costsim.envoy_policy import (
    RAMP_S,
    SLOW_START_S,
    EnvoyPolicy,
    EnvoyRules,
    envoy,
)
from benchmarks.costsim.misses import CAUSES, TracedSimulation, causes
from benchmarks.costsim.policies import Policy
from benchmarks.costsim.runner import make_policy
from benchmarks.costsim.scenario import Scenario, load_scenario
from benchmarks.costsim.trace import generate
from services.xds.resources import EnvoySettings

TITLE = "Envoy mode vs per-call decisions"
VARIANTS = ("switchyard", "envoy", "envoy-order-only")
MAX_POINTS_BELOW = 1.0
MAX_COST_RATIO = 1.05
# The cold start: missed calls that arrived in the day's first seconds, when no edge has a
# rate learned yet (issue 12's diagnosis: default's and held-out-many-models' Envoy rows
# lose most of their extra misses there)
EARLY_S = 10.0
COUNTERS = ("slow_calls", "overflows", "retry_overflows", "not_retried", "no_healthy",
            "ejections", "split_calls")


@dataclass(frozen=True)
class Run:
    scenario: str
    seed: int
    variant: str
    calls: int
    failed: int
    attempts: int
    attainment: float
    cost_per_million: float
    counters: dict[str, int]
    # missed calls by cause (benchmarks.costsim.misses), and those of classes with a
    # quality floor (the slow path's, in the Envoy rows)
    misses: dict[str, int] = dataclasses.field(default_factory=dict)
    floor_misses: int = 0
    early_misses: int = 0  # of the missed calls, those that arrived before ``EARLY_S``


def policy_for(variant: str, s: Scenario) -> Policy:
    """``envoy-compiled``: no slow path; ``envoy-share-breakers``: a what-if, ``envoy`` with
    each deployment cluster's ``max_requests`` at the edge's slot share."""
    if variant in ("switchyard", "envoy"):
        return make_policy(variant, s)
    control = ControlPlane(s.catalog(), s.prices(), sorted(s.regions))
    for b in s.backends():
        control.fleet.register(b)
    st = s.settings
    rules = EnvoyRules.compiled(EnvoySettings(max_attempts=st.max_attempts,
                                              slo_margin_ms=st.slo_margin_ms))
    if variant == "envoy-share-breakers":
        rules = dataclasses.replace(rules, breakers_from_shares=True)
    learned = variant != "envoy-order-only"
    return envoy(control, s.seed ^ zlib.crc32(b"envoy"), st.spread_band,
                 st.slo_margin_ms, st.max_attempts, slow_path=variant != "envoy-compiled",
                 name=variant, rules=rules, split=learned, learn_margins=learned,
                 cold_spread=variant == "envoy-cold-spread",
                 slow_start_s=RAMP_S if variant == "envoy-slow-start" else SLOW_START_S)


def simulate(job: tuple[str, bool, str, int]) -> Run:
    path, quick, variant, seed_offset = job
    s = load_scenario(path)
    s.seed += seed_offset
    p = policy_for(variant, s)
    trace = generate(s, quick)
    sim = TracedSimulation(s, trace, p)
    r = sim.run()
    counters = {k: int(getattr(p, k)) for k in COUNTERS} if isinstance(p, EnvoyPolicy) else {}
    why = causes(sim, r)
    floors = {i for i, k in enumerate(s.classes()) if k.min_quality > 0}
    return Run(s.name, s.seed, variant, r.calls, r.failed, r.attempts, r.attainment,
               r.cost_per_million(), counters, dict(Counter(why.values())),
               sum(1 for i in why if int(trace.klass[i]) in floors),
               early(why, trace.t))


def early(missed: Iterable[int], arrivals: Sequence[float], within_s: float = EARLY_S) -> int:
    """How many of the ``missed`` calls (indices into ``arrivals``, the trace's arrival
    times from the start of the day) arrived in its first ``within_s`` seconds."""
    return sum(1 for i in missed if float(arrivals[i]) < within_s)


def run(paths: list[pathlib.Path], quick: bool, variants: tuple[str, ...] = VARIANTS,
        workers: int = 2, seeds: int = 1) -> list[list[Run]]:
    """One list of runs (``variants`` in order) per scenario and seed: the scenario's own
    seed, then ``seed + 1`` ... for ``seeds > 1``."""
    jobs = [(str(p), quick, v, k) for p in paths for k in range(seeds) for v in variants]
    if workers <= 1:
        runs = [simulate(j) for j in jobs]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            runs = pool.map(simulate, jobs, chunksize=1)
    n = len(variants)
    return [runs[i * n:(i + 1) * n] for i in range(len(runs) // n)]


def _points(a: Run, b: Run) -> float:
    return (b.attainment - a.attainment) * 100


def _ratio(a: Run, b: Run) -> float:
    return b.cost_per_million / a.cost_per_million


def meets(base: Run, other: Run) -> bool:
    return _points(base, other) >= -MAX_POINTS_BELOW and _ratio(base, other) <= MAX_COST_RATIO


def _pct(x: float) -> str:
    return f"{x:.2%}"


def _signed(x: float, unit: str = "") -> str:
    return f"{x:+.2f}{unit}"


LABELS = {"envoy": "`envoy` (what placement compiles: orders with learned margins, weighted "
                   "rotations; quality floors on the slow path)",
          "envoy-order-only": "`envoy-order-only` (the order alone, nothing learned)",
          "envoy-compiled": "all compiled (quality floors too, no slow path)",
          "envoy-share-breakers": "what-if: `envoy` with each cluster's `max_requests` at "
                                  "the edge's slot share",
          "envoy-cold-spread": "what-if: `envoy` with routes split by room while nothing is "
                               "learned of the region (`plan_region(cold_spread=True)`)",
          "envoy-slow-start": "what-if: `envoy` with placement's slow start of a deployment "
                              "that came back (`services.xds.returns`, `[edge] slow_start_s` "
                              "10 s; built and off)"}
EARLY_HEADER = f"missed, arrived in the first {EARLY_S:g} s"
WHAT_IF = ("envoy-compiled", "envoy-share-breakers", "envoy-cold-spread", "envoy-slow-start")


def tables(results: list[list[Run]]) -> tuple[str, str, str]:
    main = []
    diag = []
    for sw, *others in results:
        main.append([sw.scenario, str(sw.seed), sw.variant, f"{sw.calls:,}",
                     _pct(sw.attainment), "", f"{sw.cost_per_million:.2f}", "", ""])
        for r in others:
            main.append([r.scenario, str(r.seed), r.variant, f"{r.calls:,}",
                         _pct(r.attainment), _signed(_points(sw, r)),
                         f"{r.cost_per_million:.2f}", f"{_ratio(sw, r):.3f}",
                         "yes" if meets(sw, r) else "no"])
            c = r.counters
            first = max(r.calls - c["slow_calls"], 1)
            diag.append([r.scenario, str(r.seed), r.variant,
                         f"{c['slow_calls'] / max(r.attempts, 1):.1%}",
                         f"{c['split_calls'] / first:.1%}",
                         f"{sw.failed:,}", f"{r.failed:,}", f"{c['overflows']:,}",
                         f"{c['retry_overflows']:,}", f"{c['not_retried']:,}",
                         f"{c['no_healthy']:,}", f"{c['ejections']:,}"])
    miss_t = md_table(["scenario", "seed", "row", "missed", "on the slow path's classes",
                       *CAUSES, EARLY_HEADER], [
        [r.scenario, str(r.seed), r.variant, f"{sum(r.misses.values()):,}",
         f"{r.floor_misses:,}", *(f"{r.misses.get(c, 0):,}" for c in CAUSES),
         f"{r.early_misses:,}"]
        for rs in results for r in rs], "lllrr" + "r" * (len(CAUSES) + 1))
    main_t = md_table(["scenario", "seed", "row", "calls", "SLO attained",
                       "Δ points vs switchyard", "USD / 1M calls", "cost × switchyard",
                       "target"], main, "lllrrrrrl")
    diag_t = md_table(
        ["scenario", "seed", "row", "attempts on the slow path",
         "fast-path calls sent off the order's first (weights)", "switchyard failed calls",
         "failed calls", "breaker overflows", "retries over max_retries",
         "not retried (RESOURCE_EXHAUSTED)", "no healthy child", "ejections"], diag,
        "lllrrrrrrrrr")
    return main_t, diag_t, miss_t


def _summary(results: list[list[Run]], i: int) -> str:
    pairs = [(rs[0], rs[i]) for rs in results]
    ok = [f"{sw.scenario}/{sw.seed}" for sw, r in pairs if meets(sw, r)]
    scenarios = sorted({sw.scenario for sw, _ in pairs})
    every = [n for n in scenarios if all(meets(sw, r) for sw, r in pairs if sw.scenario == n)]
    pts = [_points(sw, r) for sw, r in pairs]
    cost = [_ratio(sw, r) for sw, r in pairs]
    return (f"{LABELS[pairs[0][1].variant]}: {len(ok)} of {len(pairs)} scenario/seed runs; "
            f"on every seed {len(every)} of {len(scenarios)} scenarios "
            f"({', '.join(every) or 'none'}); attainment {min(pts):+.2f} to {max(pts):+.2f} "
            f"points, cost {min(cost):.3f}× to {max(cost):.3f}×.")


def notes(results: list[list[Run]], quick: bool) -> list[str]:
    what_if = [r.variant for r in results[0] if r.variant in WHAT_IF]
    return [
        f"Target (issue 12): at most {MAX_POINTS_BELOW:g} point below switchyard's attainment "
        f"and at most {MAX_COST_RATIO - 1:.0%} above its cost per call. Runs that meet "
        "it, per row: " + " ".join(_summary(results, i) for i in range(1, len(results[0]))),
        "Simulated (the cost simulator's fleet and trace; " + (
            "`--quick`: the same day compressed, 1/5 of the calls" if quick else "full day")
        + "). `envoy` is what an Envoy edge does with the config the live xDS server "
        "compiles for it: `services.xds.plan.plan_region`, the function `compile_region` "
        "runs, over the region's rows as the hub last pushed them (a row is pushed when it "
        "changed past `bands.material`'s bands), recompiled as the server recompiles: on every "
        "new hub version and every 5 s (`learn_every_s`) while placement learned something "
        "from the edge's access log. What it learns (`placement.edge_learning`, fed as "
        "`services.xds.learning` feeds it): each call's class by (model, whole-ms SLO), its "
        "calls/s, its miss margins (`placement.feedback`; the verdict against the call's own "
        "SLO), what the slow path sent each deployment. Per route (a range of SLOs with one "
        "order, cut at a called SLO whose margins give another order): the failover order "
        "with the margins of the tightest SLO it is called with, and weighted rotations of "
        "that order (`placement.splits`: the route's calls/s, cheapest feasible deployment "
        "first, each up to its backend's slot share for the edge at the utilisation whose "
        "M/M/c tail wait fits the slack, less what the slow path sent there; what they cannot "
        "take, the order's fallback rows by their p95 without a queue), one random pick "
        "per call as Envoy's `weighted_clusters` does. Envoy's rules are read from the "
        "compiled resources: retries of `unavailable,resource-exhausted,reset,"
        "connect-failure,refused-stream` at the next child not tried (previous_priorities), "
        "under each aggregate's retry budget (its `min_retry_concurrency`, compiled from the "
        "calls in flight its plan puts through it, `clusters.retry_concurrency`; Envoy's "
        "budget percent applies to the aggregate's own requests, which it never counts); "
        "outlier detection as compiled; no per-deployment circuit breakers (Envoy's default "
        "1,024). Not modelled: Envoy's retry back-off (retries are immediate, which flatters "
        "the Envoy rows in outages) and the routes' per-try timeout (the simulator times out "
        "no attempt, in any row)." + (
            f" {', '.join(f'`{v}`' for v in what_if)}: not pushed by anything, what-ifs."
            if what_if else ""),
        "What differs by construction: between pushes an Envoy edge splits a class's calls "
        "by the weights of the last push, whatever it has in flight, so a burst shorter than "
        "a push is not spilled (the per-call policy spills the call that would queue past "
        "the edge's slot share); a breaker at the slot share would not spill either (Envoy "
        "fails an overflowed call and never retries it; an aggregate cluster does not skip a "
        "full child).\n",
    ]


def _rows_alone(paths: list[pathlib.Path], args: argparse.Namespace,
                rows: tuple[str, ...]) -> str:
    """``--rows R --without-base``: the rows' runs alone, as a table (no switchyard)."""
    results = run(paths, args.quick, rows, seeds=max(1, args.seeds))
    cmd = ("python -m benchmarks.envoy_fidelity" + (" --quick" if args.quick else "")
           + (f" --seeds {args.seeds}" if args.seeds > 1 else "")
           + "".join(f" --scenario {s}" for s in args.scenario)
           + f" --rows {args.rows} --without-base")
    table = md_table(["scenario", "seed", "row", "calls", "SLO attained", "USD / 1M calls",
                      "missed", *CAUSES, EARLY_HEADER],
                     [[r.scenario, str(r.seed), r.variant, f"{r.calls:,}", _pct(r.attainment),
                       f"{r.cost_per_million:.2f}", f"{sum(r.misses.values()):,}",
                       *(f"{r.misses.get(c, 0):,}" for c in CAUSES), f"{r.early_misses:,}"]
                      for rs in results for r in rs], "lllrrrr" + "r" * (len(CAUSES) + 1))
    return f"```\n{cmd}\n```\n\n{table}\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the same day in fewer seconds")
    p.add_argument("--scenario", action="append", default=[],
                   help="a scenario's file stem (repeatable); default: every scenario")
    p.add_argument("--seeds", type=int, default=1,
                   help="runs per scenario: its own seed, then seed + 1, ... (default 1)")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--what-if", action="store_true",
                   help=f"also {', '.join(WHAT_IF)} (implies --no-write)")
    p.add_argument("--rows", default="",
                   help="comma-separated rows to run besides switchyard, e.g. 'envoy' "
                        "(implies --no-write)")
    p.add_argument("--without-base", action="store_true",
                   help="with --rows: run those rows only, not switchyard (a table of "
                        "attainment, cost and misses, no comparison)")
    args = p.parse_args()
    t0 = time.monotonic()
    paths = sorted(SCENARIOS.glob("*.toml"), key=lambda x: (x != DEFAULT_SCENARIO, x.name))
    if args.scenario:
        paths = [x for x in paths if x.stem in args.scenario]
    variants = VARIANTS + (WHAT_IF if args.what_if else ())
    if args.rows:
        wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
        unknown = [r for r in wanted if r not in VARIANTS + WHAT_IF]
        if unknown:
            p.error(f"--rows: unknown {', '.join(unknown)} (known: "
                    f"{', '.join(VARIANTS + WHAT_IF)})")
        variants = ("switchyard", *(r for r in wanted if r != "switchyard"))
        if args.without_base:
            print(_rows_alone(paths, args, tuple(wanted)))
            return
    progress(f"envoy fidelity: {len(paths)} scenarios × {args.seeds} seeds × {len(variants)} "
             "rows on 2 workers")
    results = run(paths, args.quick, variants, seeds=max(1, args.seeds))
    for rs in results:
        progress(f"{rs[0].scenario}/{rs[0].seed}: " + "; ".join(
            f"{r.variant} {r.attainment:.2%} {r.cost_per_million:.2f}" for r in rs))
    main_t, diag_t, miss_t = tables(results)
    cmd = "python -m benchmarks.envoy_fidelity" + (" --quick" if args.quick else "")
    cmd += f" --seeds {args.seeds}" if args.seeds > 1 else ""
    cmd += "".join(f" --scenario {s}" for s in args.scenario)
    cmd += " --what-if" if args.what_if else ""
    cmd += f" --rows {args.rows}" if args.rows else ""
    section = Section(title=TITLE, command=cmd, table=main_t,
                      notes=[*notes(results, args.quick),
                             "#### What the Envoy rows ran into\n", diag_t + "\n",
                             "#### Where the missed calls go (one cause each, "
                             "`benchmarks/costsim/misses.py`)\n", miss_t],
                      elapsed_s=time.monotonic() - t0)
    print(section.markdown())
    if not (args.no_write or args.what_if or args.rows):
        write_section(section, RESULTS)
        progress(f"wrote '{TITLE}' into {RESULTS}")


if __name__ == "__main__":
    main()
