"""A/B check of the brain: switchyard alone on every scenario, several seeds, brain variants.

    python -m benchmarks.cost_check [--scenarios NAME ...] [--seeds 0 1] [--variants base ...]

For deciding whether a change to the brain lands (issue 11's rule: no scenario's attainment
worse by more than 0.1 point, the objective better overall), without the other policies, the
bounds and the sweep of ``python -m benchmarks.cost --all-scenarios``. Quick horizon by
default. Seed 0 is the scenario's own trace (the one RESULTS.md reports); seed ``n`` adds ``n``
to it (another trace and other draws of the same scenario). A variant is the brain as committed
with one rule switched (``VARIANTS`` in ``benchmarks/cost_variants.py``: idle-only decay of
miss margins, per-deployment tail margins, a learned or another fixed tail factor for
deployments no edge has measured, a miss budget for the margins, borrowing idle slots:
``placement/filters/slo.py`` and ``placement/shares.py``; ``unmeasured-1.3`` is the brain
before 1.5; an unmeasured row as a probe, ``probe-*``, ``placement/filters/slo.py``; a headroom
per SLO class, ``class-headroom*``, ``placement/feedback.py``; the fallback before it chose by
each row's chance of meeting the SLO, ``fallback-fastest``, ``placement/meet.py``; the fallback
without the rows whose own recent miss rate is too high, ``exclude-*``,
``placement/feedback.py``; the simulator before it ran the edge's slow start,
``no-slow-start``; a deployment's compute from the same variant on the same accelerator
elsewhere, and a row nobody has observed widened by its mean's uncertainty, ``prior-*``,
``placement/prior.py``; loose calls off rows near capacity, ``hot-rows*``,
``placement/hot_rows.py``), applied inside a worker process of its own (a fresh one per run:
until the borrowing round a pool worker ran several checks, so a variant's switch could leak
into the next check it ran, ``base`` included); ``base`` is the brain as committed. Prints one
row per (scenario, seed, variant): attainment, USD per 1M calls, switchyard's misses by cause
(``benchmarks/costsim/misses.py``), how many of them came in the first 5 simulated seconds, and
the share of the expected cost paid above each call's cheapest LP-feasible deployment
(``premiums``); ``--detail N`` also prints where that premium went and, per choice, which soft
filter kept the cheapest cheaper row out (``WhyNot``). ``--full``: the scenarios' full horizon.
Not written into RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from benchmarks.common import md_table, progress
from benchmarks.cost import SCENARIOS
from benchmarks.cost_variants import VARIANTS
from benchmarks.costsim import suite
from benchmarks.costsim.engine import SimResult
from benchmarks.costsim.misses import CAUSES, TracedSimulation, causes, classify, unobserved_parts
from benchmarks.costsim.runner import make_policy
from benchmarks.costsim.scenario import Scenario
from benchmarks.costsim.trace import generate, outage_windows
from placement.framework import Filter
from placement.model import CallContext, Candidate
from placement.pipeline import Decision
from placement.registry import build_profile

EARLY_S = 5.0


@dataclass(frozen=True)
class Check:
    path: str
    seed: int
    variant: str
    detail: int = 0  # with > 0: the most common (cause, edge, SLO, deployment) of the misses
    quick: bool = True  # False: the scenario's full horizon (``--full``)


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
    premium: float = 0.0  # of the expected cost, paid above each call's cheapest feasible
    spend: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    why: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    # the 'estimate before first samples' misses by table row and what made them late
    unobserved: dict[str, int] = dataclasses.field(default_factory=dict)


def premiums(sim: TracedSimulation, r: SimResult) -> tuple[float, Counter[str]]:
    """Where the money goes: per served call, what its deployment's expected cost (price ×
    mean service) exceeds that of the cheapest deployment that was up at its arrival, meets
    its quality floor and has ``rtt + mean service <= SLO`` (the fluid LP's feasibility;
    queueing ignored, so this is an upper bound of what routing could save). Returns the
    premium as a share of the expected cost, and USD per (SLO class, chosen deployment)."""
    s, trace = sim.s, sim.trace
    catalog, classes, deps = s.catalog(), s.classes(), sim.deps
    windows = outage_windows(s, trace.duration_s)
    cost = np.array([d.usd_per_s * d.mean_service_s for d in deps])
    feasible: dict[tuple[int, int], list[int]] = {}
    for ei, e in enumerate(trace.regions):
        for ki, k in enumerate(classes):
            feasible[(ei, ki)] = sorted(
                (i for i, d in enumerate(deps)
                 if s.variant(d.variant).model == k.model
                 and s.variant(d.variant).quality >= k.min_quality
                 and catalog.rtt(e, d.region) + d.mean_service_s * 1000 <= k.slo_ms),
                key=lambda i: cost[i])
    out: Counter[str] = Counter()
    total = paid = 0.0
    for i in np.nonzero(r.final_dep >= 0)[0]:
        dep = int(r.final_dep[i])
        t, ki = float(trace.t[i]), int(trace.klass[i])
        down = {p for w in windows if w.start_s <= t < w.end_s for p in w.pools}
        cheapest = next((cost[j] for j in feasible[(int(trace.region[i]), ki)]
                         if deps[j].backend_id not in down), cost[dep])
        paid += cost[dep]
        extra = max(0.0, cost[dep] - cheapest)
        total += extra
        if extra > 0:
            k = classes[ki]
            out[f"{k.model} slo {k.slo_ms:g} q>={k.min_quality:g} -> {deps[dep].id}"] += extra
    return (total / paid if paid else 0.0), out


def _why_not(c: Candidate, ctx: CallContext, filters: list[Filter]) -> str | None:
    """The first soft filter that kept ``c`` out, and on what (None: a hard filter did,
    or nothing did)."""
    if any(f.hard and f.reject(c, ctx) is not None for f in filters):
        return None
    for f in filters:
        if f.reject(c, ctx) is None:
            continue
        if f.name != "slo":
            return f.name
        own = ctx.observed_p95_ms.get(c.deployment_id)
        base = own if own is not None else c.latency_p95_ms
        if ctx.latency_ms(c) > base + 1e-6:
            return "slo: past the edge's slot share (worst-case wait)"
        if ctx.slo_margins.get(c.deployment_id, 0.0) > 0:
            return "slo: margin learned from misses"
        return "slo: the edge's observed p95" if own is not None else "slo: the table's p95"
    return None


class WhyNot:
    """A decision hook: for each choice, the cheapest row cheaper than the one chosen that a
    soft filter kept out, and the price difference, by (SLO, reason)."""

    def __init__(self, s: Scenario) -> None:
        self.filters = list(build_profile("cheapest", s.settings.spread_band).filters)
        self.usd: Counter[str] = Counter()

    def __call__(self, cands: list[Candidate], ctx: CallContext, decision: Decision) -> None:
        chosen = decision.candidate
        for c in cands:
            if c.dropped_reason or c.cost_usd >= chosen.cost_usd * 0.999:
                continue
            reason = _why_not(c, ctx, self.filters)
            if reason is not None:
                self.usd[f"slo {ctx.hints.slo_ms:g} | {reason}"] += chosen.cost_usd - c.cost_usd
                return


def run_one(c: Check) -> Row:
    VARIANTS[c.variant]()
    s = suite.scenario_of(suite.Job(c.path, c.quick, "switchyard"))
    s.seed += c.seed
    trace = generate(s, c.quick)
    why = WhyNot(s) if c.detail else None
    sim = TracedSimulation(s, trace, make_policy("switchyard", s, on_decision=why))
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
    premium, spend = premiums(sim, r)
    total = sum(spend.values()) or 1.0
    held = sum(why.usd.values()) if why else 0.0
    return Row(s.name, c.seed, c.variant, r.calls, r.attainment, r.cost_per_million(),
               dict(classify(sim, r)), early, r.wall_s, top, premium,
               [(k, v / total) for k, v in spend.most_common(c.detail)],
               [(k, v / held) for k, v in why.usd.most_common(c.detail)] if why and held
               else [], dict(unobserved_parts(sim, r)))


def _progress(r: Row) -> None:
    progress(f"cost_check: {r.scenario} seed {r.seed} {r.variant}: {r.attainment:.2%}, "
             f"{r.usd_per_million:.3g} USD/1M, {sum(r.misses.values())} misses "
             f"{r.misses}, {r.cpu_s:.0f} s CPU")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", nargs="*", default=None, help="file stems (default: all)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    p.add_argument("--variants", nargs="*", default=["base"], choices=sorted(VARIANTS))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--detail", type=int, default=0,
                   help="also print the N most common (cause, edge, SLO, deployment, tenth "
                        "of the day) of each run's misses")
    p.add_argument("--full", action="store_true",
                   help="the scenarios' full horizon (5x the quick one's calls)")
    args = p.parse_args()
    paths = sorted(SCENARIOS.glob("*.toml"))
    if args.scenarios:  # in the order given
        paths = [SCENARIOS / f"{name}.toml" for name in args.scenarios]
    checks = [Check(str(q), seed, v, args.detail, not args.full) for q in paths
              for seed in args.seeds
              for v in args.variants]
    t0 = time.monotonic()
    rows: list[Row] = []
    # A variant switches module state in the process that runs it: every run gets a fresh
    # process (maxtasksperchild=1), or one variant's switch would leak into the next run.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(max(args.workers, 1), maxtasksperchild=1) as pool:
        for row in pool.imap(run_one, checks):  # in order, each as soon as it is done
            rows.append(row)
            _progress(row)
    out = [[r.scenario, r.seed, r.variant, f"{r.attainment:.2%}", r.usd_per_million,
            sum(r.misses.values()), *[r.misses.get(k, 0) for k in CAUSES], r.early,
            f"{r.premium:.0%}", f"{r.cpu_s:.0f}"] for r in rows]
    print(md_table(("scenario", "seed", "variant", "attainment", "USD / 1M", "misses",
                    *CAUSES, f"misses t < {EARLY_S:g} s", "premium over cheapest feasible",
                    "CPU s"), out))
    parts = sorted({k for r in rows for k in r.unobserved})
    if parts:
        print("\n'estimate before first samples' by the table's row and what made the call "
              "late:\n")
        print(md_table(("scenario", "seed", "variant", *parts),
                       [[r.scenario, r.seed, r.variant, *[r.unobserved.get(k, 0) for k in parts]]
                        for r in rows]))
    for r in rows:
        if r.top:
            print(f"\n{r.scenario} seed {r.seed} {r.variant}:")
            for key, n in r.top:
                print(f"  {n:4d}  {key}")
        if r.spend:
            print(f"\n{r.scenario} seed {r.seed} {r.variant}: premium by (class, deployment), "
                  "share of the premium")
            for key, share in r.spend:
                print(f"  {share:4.0%}  {key}")
        if r.why:
            print(f"\n{r.scenario} seed {r.seed} {r.variant}: why a cheaper row was not "
                  "taken (the cheapest one a soft filter kept out), share of the difference")
            for key, share in r.why:
                print(f"  {share:4.0%}  {key}")
    print(f"\n_(took {time.monotonic() - t0:.0f} s)_")


if __name__ == "__main__":
    main()
