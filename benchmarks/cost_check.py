"""A/B check of the brain: switchyard alone on every scenario, several seeds, brain variants.

    python -m benchmarks.cost_check [--scenarios NAME ...] [--seeds 0 1] [--variants base ...]

For deciding whether a change to the brain lands (issue 11's rule: no scenario's attainment
worse by more than 0.1 point, the objective better overall), without the other policies,
the bounds and the sweep of ``python -m benchmarks.cost --all-scenarios``. Quick horizon
only. Seed 0 is the scenario's own trace (the one RESULTS.md reports); seed ``n`` adds ``n``
to it (another trace and other draws of the same scenario). A variant is the current brain
with one rule set back (``VARIANTS``), applied inside the worker process; ``base`` is the
brain as committed. Prints one row per (scenario, seed, variant): attainment, USD per 1M
calls, switchyard's misses by cause (``benchmarks/costsim/misses.py``) and how many of them
came in the first 5 simulated seconds. Not written into RESULTS.md.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from benchmarks.common import md_table
from benchmarks.cost import SCENARIOS
from benchmarks.costsim import policies, suite
from benchmarks.costsim.misses import CAUSES, TracedSimulation, causes, classify
from benchmarks.costsim.runner import make_policy
from benchmarks.costsim.trace import generate
from placement import feedback, queueing
from placement.feedback import SloFeedback
from placement.tail_margins import TailMargins

EARLY_S = 5.0


def _idle_decay() -> None:
    """Margins decay in time only while their deployment gets no calls of the class."""
    policies.SloFeedback = functools.partial(  # type: ignore[misc]
        SloFeedback, idle_s=feedback.IDLE_S)


def _tail_half() -> None:
    """Margins aim at half the attainment target's misses (room for outages, infeasible)."""
    policies.SloFeedback = functools.partial(  # type: ignore[misc]
        SloFeedback, tail=queueing.TAIL / 2, idle_s=feedback.IDLE_S)


def _tail_track(tail: float) -> Callable[[], None]:
    """Idle decay plus per-deployment tail margins (``placement.tail_margins``) at ``tail``."""
    def apply() -> None:
        def make() -> SloFeedback:
            return SloFeedback(idle_s=feedback.IDLE_S, tails=TailMargins(tail=tail))
        policies.SloFeedback = make  # type: ignore[misc,assignment]
    return apply


VARIANTS: dict[str, Callable[[], None]] = {
    "base": lambda: None,
    "idle-decay": _idle_decay,
    "tail-half": _tail_half,
    "tail-track": _tail_track(queueing.TAIL),
    "tail-track-1pct": _tail_track(0.01),
}


@dataclass(frozen=True)
class Check:
    path: str
    seed: int
    variant: str
    detail: int = 0  # with > 0: the most common (cause, edge, SLO, deployment) of the misses


@dataclass(frozen=True)
class Row:
    scenario: str
    seed: int
    variant: str
    calls: int
    attainment: float
    usd_per_million: float
    misses: dict[str, int]
    early: int
    cpu_s: float
    top: list[tuple[str, int]]


def run_one(c: Check) -> Row:
    VARIANTS[c.variant]()
    s = suite.scenario_of(suite.Job(c.path, True, "switchyard"))
    s.seed += c.seed
    trace = generate(s, True)
    sim = TracedSimulation(s, trace, make_policy("switchyard", s))
    r = sim.run()
    missed = ~(r.latency_ms <= r.slo_ms)
    early = int(np.sum(missed & (trace.t < EARLY_S)))
    top: list[tuple[str, int]] = []
    if c.detail:
        groups: Counter[str] = Counter()
        for i, cause in causes(sim, r).items():
            dep = r.deployments[r.final_dep[i]] if r.final_dep[i] >= 0 else "-"
            tenth = int(10 * trace.t[i] / trace.duration_s)
            groups[f"{cause} | {trace.regions[trace.region[i]]} | slo {r.slo_ms[i]:g} | "
                   f"{dep} | tenth {tenth}"] += 1
        top = groups.most_common(c.detail)
    return Row(s.name, c.seed, c.variant, r.calls, r.attainment, r.cost_per_million(),
               dict(classify(sim, r)), early, r.wall_s, top)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", nargs="*", default=None, help="file stems (default: all)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    p.add_argument("--variants", nargs="*", default=["base"], choices=sorted(VARIANTS))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--detail", type=int, default=0,
                   help="also print the N most common (cause, edge, SLO, deployment, tenth "
                        "of the day) of each run's misses")
    args = p.parse_args()
    paths = sorted(SCENARIOS.glob("*.toml"))
    if args.scenarios:
        paths = [q for q in paths if q.stem in args.scenarios]
    checks = [Check(str(q), seed, v, args.detail) for q in paths for seed in args.seeds
              for v in args.variants]
    t0 = time.monotonic()
    rows: list[Row] = suite._map(run_one, checks, args.workers)
    out = [[r.scenario, r.seed, r.variant, f"{r.attainment:.2%}", r.usd_per_million,
            sum(r.misses.values()), *[r.misses.get(k, 0) for k in CAUSES], r.early,
            f"{r.cpu_s:.0f}"] for r in rows]
    print(md_table(("scenario", "seed", "variant", "attainment", "USD / 1M", "misses",
                    *CAUSES, f"misses t < {EARLY_S:g} s", "CPU s"), out))
    for r in rows:
        if r.top:
            print(f"\n{r.scenario} seed {r.seed} {r.variant}:")
            for key, n in r.top:
                print(f"  {n:4d}  {key}")
    print(f"\n_(took {time.monotonic() - t0:.0f} s)_")


if __name__ == "__main__":
    main()
