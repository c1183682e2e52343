"""Issue 14's bound: the cheapest-feasible oracle and its ablations beside the main policies.

    python -m benchmarks.tokens_oracle [--quick] [--seeds 0,1000] [--scenarios tokens-reclaim,...]
        [--jobs 2] [--scale 1.5] POLICY [POLICY ...]

Runs each policy (any name ``benchmarks.tokens --only`` takes: ``switchyard``,
``lowest-latency``, ``cheapest-feasible-oracle-*``, ``benchmarks/costsim/tokens_names.py``) on
each token scenario and seed offset, in ``--jobs`` processes, and prints one row per run:
within both objectives, $ per 1M output tokens, and how far below ``lowest-latency``'s $ on
the same streams when that policy is in the run (issue 14's target: ≥ 40 % at ≥ 99 %).
Printed only; RESULTS.md is written by hand from its output (the command beside the table).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from concurrent.futures import ProcessPoolExecutor

from benchmarks.costsim import tokens_report
from benchmarks.costsim.tokens_names import make_policy
from benchmarks.costsim.tokens_workload import generate_streams, load_token_scenario
from benchmarks.costsim.tokensim import TokenSim
from benchmarks.tokens import SCENARIOS, scaled

Row = tuple[str, int, str, float, float, int, int, int]


def run_one(scenario: str, offset: int, policy: str, quick: bool, scale: float = 1.0) -> Row:
    """(scenario, seed offset, policy, within both, $/1M out, streams a slowdown caught and
    of those missed, streams the policy found nothing feasible for (-1: not counted))."""
    s = load_token_scenario(pathlib.Path(SCENARIOS, scenario.removeprefix("tokens-") + ".toml"))
    s = dataclasses.replace(scaled(s, scale), seed=s.seed + offset)
    streams = generate_streams(s, quick)
    sim = TokenSim(s, streams)
    p = make_policy(policy, sim, s.seed)
    r = tokens_report.measure(s, streams, sim.run(p), policy)
    return (s.name, offset, policy, r.both, r.usd_per_1m_out, r.caught, r.caught_missed,
            int(getattr(p, "infeasible", -1)))


def table(rows: list[Row]) -> str:
    ll = {(r[0], r[1]): r[4] for r in rows if r[2] == "lowest-latency"}
    lines = ["| scenario | seed | policy | both objectives | $/1M output tokens | "
             "below lowest-latency | caught by a slowdown (missed) | nothing feasible |",
             "| :--- | :--- | :--- | ---: | ---: | ---: | ---: | ---: |"]
    for name, off, pol, both, usd, caught, missed, infeasible in sorted(rows):
        base = ll.get((name, off))
        below = f"{1 - usd / base:.1%}" if base else "–"
        lines.append(f"| {name} | +{off} | `{pol}` | {both:.2%} | {usd:.3f} | {below} | "
                     f"{caught} ({missed}) | {infeasible if infeasible >= 0 else '–'} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("policies", nargs="+")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", default="0,1000")
    p.add_argument("--scenarios", default="tokens-chat,tokens-code,tokens-rag,"
                                          "tokens-reclaim,tokens-slowdown")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--scale", type=float, default=1.0, help="every region's rate × this")
    a = p.parse_args()
    jobs = [(sc, int(off), pol, a.quick, a.scale) for sc in a.scenarios.split(",")
            for off in a.seeds.split(",") for pol in a.policies]
    with ProcessPoolExecutor(a.jobs) as ex:
        rows = list(ex.map(run_one, *zip(*jobs, strict=True)))
    print(table(rows))


if __name__ == "__main__":
    main()
