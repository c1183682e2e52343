"""Cost: a trace-driven simulation of a multi-cloud fleet routed by placement's own code.

    python -m benchmarks.cost [--quick] [--scenario PATH]
    python -m benchmarks.cost --all-scenarios [--quick]

Every policy routes the same call trace over the same simulated fleet (see
``benchmarks/costsim/``); an offline linear program over the trace gives the lower bound.
Writes ``benchmarks/cost_vs_slo.png``. ``--all-scenarios`` runs every scenario in
``benchmarks/scenarios/`` (one table: attainment, × LP and × the queueing bound per policy,
switchyard's misses by cause) and the σ/load sweep (``benchmarks/cost_sweep.png``), prints
the section and writes it into ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import pathlib
import time

from benchmarks.common import BENCH_DIR, Section, command_for, progress
from benchmarks.costsim import report, suite, suite_report
from benchmarks.costsim.runner import POLICIES, bound, run_policies
from benchmarks.costsim.scenario import load_scenario
from benchmarks.costsim.trace import generate

ESTIMATE_S = (60, 240)
DEFAULT_SCENARIO = pathlib.Path(BENCH_DIR, "scenarios", "default.toml")
PLOT = pathlib.Path(BENCH_DIR, "cost_vs_slo.png")
SCENARIOS = pathlib.Path(BENCH_DIR, "scenarios")
SWEEP_SCENARIO = SCENARIOS / "tight-three-variant.toml"
SWEEP_PLOT = pathlib.Path(BENCH_DIR, "cost_sweep.png")
RESULTS = pathlib.Path(BENCH_DIR, "RESULTS.md")
SUITE_TITLE = "Cost: every scenario, both bounds, where the misses go"


def run(quick: bool) -> list[Section]:
    """For ``run_all``: the default scenario in detail, then every scenario."""
    return [run_single(quick), run_all_scenarios(quick)]


def run_all_scenarios(quick: bool) -> Section:
    t0 = time.monotonic()
    paths = sorted(SCENARIOS.glob("*.toml"), key=lambda p: (p != DEFAULT_SCENARIO, p.name))
    progress(f"cost: {len(paths)} scenarios × {len(POLICIES)} policies on 2 workers")
    results = suite.run_suite(paths, POLICIES, quick)
    for s, runs, b in results:
        progress(f"cost: {s.name}: " + ", ".join(
            f"{r.result.policy} {r.result.attainment:.2%}" for r in runs)
            + f"; LP max {b.lp_max:.2%}, queueing bound max {b.q_max:.2%}")
    progress(f"cost: sweep on {SWEEP_SCENARIO.name} (quick horizon)")
    points = suite.run_sweep(SWEEP_SCENARIO, quick=True)
    suite_report.plot_sweep(points, SWEEP_PLOT,
                            f"{SWEEP_SCENARIO.stem}: switchyard vs lowest-latency")
    cmd = "python -m benchmarks.cost --all-scenarios" + (" --quick" if quick else "")
    notes = suite_report.notes(results, quick, SWEEP_SCENARIO, SWEEP_PLOT.name)
    notes.append(suite_report.sweep_table(points))
    return Section(title=SUITE_TITLE, command=cmd, table=suite_report.table(results),
                   notes=notes, images=[SWEEP_PLOT.name], elapsed_s=time.monotonic() - t0)


def write_section(section: Section, path: pathlib.Path = RESULTS, after: str | None = None
                  ) -> None:
    """Replace ``section`` in RESULTS.md by title (or add it after the section titled
    ``after``, by default after the last cost section, else at the end).

    The dated ``###`` subsections under the old section are kept after the new one: they are
    other runs' records, not this table's (a full run once replaced them all)."""
    text = path.read_text() if path.exists() else ""
    parts = text.split("\n## ")
    head, body = parts[0], [f"## {p}" for p in parts[1:]]
    new = section.markdown().rstrip() + "\n"
    titles = [b.split("\n", 1)[0][3:] for b in body]
    if section.title in titles:
        old = body[titles.index(section.title)]
        cut = old.find("\n### ")
        kept = old[cut + 1:].rstrip("\n") + "\n" if cut >= 0 else ""
        body[titles.index(section.title)] = new + ("\n" + kept if kept else "")
    else:
        costs = [i for i, t in enumerate(titles)
                 if (t == after if after is not None else t.startswith("Cost"))]
        body.insert(costs[-1] + 1 if costs else len(body), new)
    path.write_text("\n".join([head.rstrip() + "\n", *body]))


def run_single(quick: bool, scenario: pathlib.Path = DEFAULT_SCENARIO) -> Section:
    t0 = time.monotonic()
    s = load_scenario(scenario)
    trace = generate(s, quick)
    progress(f"cost: {len(trace):,} calls, {len(s.pools)} pools in {len(s.regions)} regions; "
             f"simulating {len(POLICIES)} policies on 2 workers")
    results = run_policies(scenario, quick)
    for r in results:
        progress(f"cost: {r.policy}: {r.cost_per_million():.2f} USD/1M, "
                 f"{r.attainment:.2%} within SLO ({r.wall_s:.0f} s CPU)")
    progress("cost: solving the LP bound (HiGHS)")
    b = bound(s, trace, results)
    progress(f"cost: LP bound {b.at_max.cost_per_million:.2f} USD/1M at "
             f"{b.max_attainment:.2%}")
    report.plot(results, b, PLOT)
    cmd = command_for(__name__, quick)
    if scenario != DEFAULT_SCENARIO:
        cmd += f" --scenario {scenario}"
    return Section(title="Cost: policies on one multi-cloud trace vs the LP bound",
                   command=cmd, table=report.table(results, b),
                   notes=report.notes(s, results, b, len(trace), quick),
                   images=[PLOT.name], elapsed_s=time.monotonic() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the same day in fewer seconds")
    p.add_argument("--scenario", type=pathlib.Path, default=DEFAULT_SCENARIO)
    p.add_argument("--all-scenarios", action="store_true",
                   help="every scenario and the sweep; writes the section into RESULTS.md")
    args = p.parse_args()
    if args.all_scenarios:
        section = run_all_scenarios(args.quick)
        print(section.markdown())
        write_section(section)
        progress(f"cost: wrote '{section.title}' into {RESULTS}")
        return
    print(run_single(args.quick, args.scenario.resolve()).markdown())


if __name__ == "__main__":
    main()
