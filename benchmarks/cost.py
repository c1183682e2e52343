"""Cost: a trace-driven simulation of a multi-cloud fleet routed by placement's own code.

    python -m benchmarks.cost [--quick] [--scenario PATH]

Every policy routes the same call trace over the same simulated fleet (see
``benchmarks/costsim/``); an offline linear program over the trace gives the lower bound.
Writes ``benchmarks/cost_vs_slo.png``.
"""

from __future__ import annotations

import argparse
import pathlib
import time

from benchmarks.common import BENCH_DIR, Section, command_for, progress
from benchmarks.costsim import report
from benchmarks.costsim.runner import POLICIES, bound, run_policies
from benchmarks.costsim.scenario import load_scenario
from benchmarks.costsim.trace import generate

ESTIMATE_S = (60, 240)
DEFAULT_SCENARIO = pathlib.Path(BENCH_DIR, "scenarios", "default.toml")
PLOT = pathlib.Path(BENCH_DIR, "cost_vs_slo.png")


def run(quick: bool, scenario: pathlib.Path = DEFAULT_SCENARIO) -> Section:
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
    args = p.parse_args()
    print(run(args.quick, args.scenario.resolve()).markdown())


if __name__ == "__main__":
    main()
