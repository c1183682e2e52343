"""What placement's publish rules cost routing: each policy on fresh tables against the same
policy on the rows as the live hub publishes them (simulated).

The cost simulator hands its edges every table it builds (once a second). The live hub
(``services.placement.hub``) pushes a row again only on a material change, and what it learned
from telemetry at most every 5 s (``services.placement.bands``, since ee9250f/5342d90: a steady
mesh's publishes fell from 238.5 to 33 a minute). ``<policy>-published``
(``benchmarks/costsim/publish.py``) runs the policy with the same seed on the published rows,
so the difference in a scenario's attainment and cost is the price of those rules.

    python -m benchmarks.publish_cost [--quick] [--scenario STEM ...] [--seeds N]
        [--policies switchyard,envoy] [--workers N]

Prints a Markdown table (and, with ``--write``, puts it in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import multiprocessing
import pathlib
import time
from dataclasses import dataclass

from benchmarks.common import Section, md_table, progress
from benchmarks.cost import DEFAULT_SCENARIO, RESULTS, SCENARIOS, write_section
from benchmarks.costsim.engine import Simulation
from benchmarks.costsim.runner import PUBLISHED, make_policy
from benchmarks.costsim.scenario import load_scenario
from benchmarks.costsim.trace import generate

TITLE = "Control plane: what the hub's publish rules cost routing (simulated)"


@dataclass(frozen=True)
class Row:
    scenario: str
    seed: int
    policy: str
    calls: int
    failed: int
    attainment: float
    cost_per_million: float
    published: int  # rows the publisher handed on (0: fresh tables)
    deferred: int  # row builds whose learned change waited for the cadence


def simulate(job: tuple[str, bool, str, int]) -> Row:
    path, quick, policy, seed_offset = job
    s = load_scenario(path)
    s.seed += seed_offset
    p = make_policy(policy, s)
    r = Simulation(s, generate(s, quick), p).run()
    pub = p.control.publisher if p.control is not None else None
    return Row(s.name, s.seed, policy, r.calls, r.failed, r.attainment, r.cost_per_million(),
               pub.published if pub else 0, pub.deferred if pub else 0)


def run(paths: list[pathlib.Path], quick: bool, policies: tuple[str, ...], seeds: int,
        workers: int) -> list[tuple[Row, Row]]:
    """(fresh, published) per scenario, seed and policy."""
    jobs = [(str(p), quick, name + suffix, k) for p in paths for k in range(seeds)
            for name in policies for suffix in ("", PUBLISHED)]
    if workers <= 1:
        rows = [simulate(j) for j in jobs]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            rows = pool.map(simulate, jobs, chunksize=1)
    return [(rows[i], rows[i + 1]) for i in range(0, len(rows), 2)]


def table(pairs: list[tuple[Row, Row]]) -> str:
    return md_table(
        ["scenario", "seed", "policy", "calls", "attained, fresh tables", "attained, published",
         "Δ points", "USD / 1M, fresh", "USD / 1M, published", "cost ×", "failed (fresh / "
         "published)", "rows published", "row builds deferred"],
        [[a.scenario, a.seed, a.policy, f"{a.calls:,}", f"{a.attainment:.2%}",
          f"{b.attainment:.2%}", f"{100 * (b.attainment - a.attainment):+.2f}",
          f"{a.cost_per_million:.2f}", f"{b.cost_per_million:.2f}",
          f"{b.cost_per_million / a.cost_per_million:.3f}", f"{a.failed} / {b.failed}",
          f"{b.published:,}", f"{b.deferred:,}"] for a, b in pairs],
        "llllrrrrrrrrr")


def notes(pairs: list[tuple[Row, Row]], quick: bool) -> list[str]:
    out = []
    for policy in dict.fromkeys(a.policy for a, _ in pairs):
        mine = [(a, b) for a, b in pairs if a.policy == policy]
        pts = [100 * (b.attainment - a.attainment) for a, b in mine]
        cost = [b.cost_per_million / a.cost_per_million for a, b in mine]
        worst = min(mine, key=lambda ab: ab[1].attainment - ab[0].attainment)
        out.append(
            f"`{policy}` on the published rows against fresh tables, {len(mine)} "
            f"scenario/seed runs: attainment {min(pts):+.2f} to {max(pts):+.2f} points (lower "
            f"on {sum(p < 0 for p in pts)}, higher on {sum(p > 0 for p in pts)}), cost "
            f"{min(cost):.3f}× to {max(cost):.3f}×; the largest loss "
            f"{worst[0].scenario}/{worst[0].seed} ({worst[0].attainment:.2%} → "
            f"{worst[1].attainment:.2%}).")
    out.append("Simulated (the cost simulator's fleet and trace; " + (
        "`--quick`: the same day compressed" if quick else "full day") + "). Each pair runs "
        "the same policy with the same seed on the same trace; only what its edges see "
        "differs: every fresh build (once a second), or the rows as the hub publishes them "
        "(`benchmarks/costsim/publish.py`: `bands.material` with each row's jitter band, "
        "learned changes at most every `bands.ESTIMATE_EVERY_S` unless an estimate doubled or "
        "halved; deferred rows go out at the first build after the wait, up to 1 s later than "
        "the hub's timer). `envoy` compiles its config from the rows it holds in both cases "
        "(it already pushed rows only past `bands.material`'s fixed bands).")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the same day in fewer seconds")
    p.add_argument("--scenario", action="append", default=[],
                   help="a scenario's file stem (repeatable); default: every scenario")
    p.add_argument("--seeds", type=int, default=1, help="runs per scenario (default 1)")
    p.add_argument("--policies", default="switchyard,envoy",
                   help="comma-separated policies (default switchyard,envoy)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--write", action="store_true", help="also write it into RESULTS.md")
    args = p.parse_args()
    paths = sorted(SCENARIOS.glob("*.toml"), key=lambda x: (x != DEFAULT_SCENARIO, x.name))
    if args.scenario:
        paths = [x for x in paths if x.stem in args.scenario]
        missing = set(args.scenario) - {x.stem for x in paths}
        if missing:
            p.error(f"--scenario: no such scenario {', '.join(sorted(missing))} in {SCENARIOS}")
    policies = tuple(x.strip() for x in args.policies.split(",") if x.strip())
    t0 = time.monotonic()
    progress(f"publish cost: {len(paths)} scenarios × {args.seeds} seeds × {len(policies)} "
             f"policies × 2 on {args.workers} workers")
    pairs = run(paths, args.quick, policies, max(1, args.seeds), args.workers)
    cmd = "python -m benchmarks.publish_cost" + (" --quick" if args.quick else "")
    cmd += f" --seeds {args.seeds}" if args.seeds > 1 else ""
    cmd += "".join(f" --scenario {s}" for s in args.scenario)
    cmd += f" --policies {args.policies}" if args.policies != "switchyard,envoy" else ""
    section = Section(title=TITLE, command=cmd, table=table(pairs),
                      notes=notes(pairs, args.quick), elapsed_s=time.monotonic() - t0)
    print(section.markdown())
    if args.write:
        write_section(section, RESULTS)
        progress(f"wrote '{TITLE}' into {RESULTS}")


if __name__ == "__main__":
    main()
