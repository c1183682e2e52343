"""Which branch of the fallback chose each call, and how often those calls met their SLO.

    python -m benchmarks.costsim.fallback_diag [--scenarios NAME ...] [--seeds 0]

The simulator's switchyard with a decision hook that, for each call's last attempt, names
what the brain did (the hook reads, it does not choose):

- ``strict``: a row passed the strict SLO test;
- the fallback (``placement.meet``), by branch: ``draw, best >= 0.5`` / ``draw, best < 0.5``
  (a draw among the rows within ``meet.EPS`` of the best chance); with no chance anywhere
  (the fastest by estimate), why the row taken has none: ``none: margin`` (its learned margin
  alone is past the call's budget), ``none: saturated`` (the M/M/c wait at ρ ≥ 1: the table's
  utilisation plus this edge's excess), ``none: rtt`` (its RTT alone is past the budget),
  ``none: other``;

and, for the fallback, why no row passed the strict test, taking out one input at a time:
``own excess only`` (a row passes without this edge's calls in flight, none without the
learned margins), ``margins only`` (the other way round), ``either`` (without either one),
``both together`` (only without both), ``neither``. Prints calls and misses per name. Not
written into RESULTS.md by itself.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter

from benchmarks.common import md_table, progress
from benchmarks.cost import SCENARIOS
from benchmarks.costsim import suite
from benchmarks.costsim.misses import TracedSimulation, causes
from benchmarks.costsim.policies import ProfilePolicy
from benchmarks.costsim.runner import make_policy
from benchmarks.costsim.scenario import Scenario
from benchmarks.costsim.trace import Trace, generate
from placement import meet
from placement.model import CallContext, Candidate
from placement.pipeline import Decision


def zero_reason(c: Candidate, ctx: CallContext) -> str:
    """Why ``meet.chance`` gives ``c`` no chance for this call."""
    budget = ctx.hints.slo_ms - ctx.slo_margin_ms - c.rtt_ms
    if budget <= 0:
        return "rtt"
    if budget - ctx.slo_margins.get(c.deployment_id, 0.0) <= 0:
        return "margin"
    if meet.utilisation(c) + meet.excess(c, ctx) / max(c.concurrency, 1) >= 1.0:
        return "saturated"
    return "other"


class FallbackTrace(TracedSimulation):
    """``TracedSimulation`` plus, per call, the branch that chose its last attempt."""

    def __init__(self, s: Scenario, trace: Trace, policy: ProfilePolicy) -> None:
        super().__init__(s, trace, policy)
        self.profile = policy.profile
        self.branch: dict[int, str] = {}
        self.strict_out: dict[int, str] = {}
        self._call = -1

    def _attempt(self, call_id: int, now: float) -> None:
        self._call = call_id
        super()._attempt(call_id, now)

    def _passes(self, cands: list[Candidate], ctx: CallContext) -> bool:
        return any(self.profile._keeps(c, ctx, self.profile.filters) for c in cands)

    def hook(self, cands: list[Candidate], ctx: CallContext, d: Decision) -> None:
        i = self._call
        if d.slo_met:
            self.branch[i] = "strict"
            self.strict_out.pop(i, None)
            return
        rows = [c for c in cands if not c.dropped_reason]
        best = max((meet.chance(c, ctx) for c in rows), default=0.0)
        if best > 0.0:
            self.branch[i] = "draw, best >= 0.5" if best >= 0.5 else "draw, best < 0.5"
        else:
            self.branch[i] = "none: " + zero_reason(d.candidate, ctx)
        no_margin = dataclasses.replace(ctx, slo_margins={})
        no_own = dataclasses.replace(ctx, inflight={}, _by_backend=None)
        own, margins = self._passes(cands, no_own), self._passes(cands, no_margin)
        if own or margins:
            why = "either" if own and margins else "own excess only" if own else "margins only"
        elif self._passes(cands, dataclasses.replace(no_margin, inflight={}, _by_backend=None)):
            why = "both together"
        else:
            why = "neither"
        self.strict_out[i] = why


def run_one(name: str, seed: int, quick: bool = True) -> list[list[object]]:
    s = suite.scenario_of(suite.Job(str(SCENARIOS / f"{name}.toml"), quick, "switchyard"))
    s.seed += seed
    trace = generate(s, quick)
    holder: list[FallbackTrace] = []

    def hook(cands: list[Candidate], ctx: CallContext, d: Decision) -> None:
        holder[0].hook(cands, ctx, d)

    policy = make_policy("switchyard", s, on_decision=hook)
    assert isinstance(policy, ProfilePolicy)
    sim = FallbackTrace(s, trace, policy)
    holder.append(sim)
    r = sim.run()
    missed = causes(sim, r)
    progress(f"fallback_diag: {name} seed {seed}: {r.attainment:.2%}, {len(missed)} misses")
    out: list[list[object]] = []
    for kind, names in (("branch", sim.branch), ("no row passed", sim.strict_out)):
        calls, miss = Counter(names.values()), Counter(names[i] for i in missed if i in names)
        for k in sorted(calls):
            out.append([name, seed, kind, k, calls[k], miss[k],
                        f"{1 - miss[k] / calls[k]:.1%}"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", nargs="*", default=["held-out-near-capacity"])
    p.add_argument("--seeds", nargs="*", type=int, default=[0])
    p.add_argument("--full", action="store_true", help="the scenarios' full horizon")
    args = p.parse_args()
    rows = [row for name in args.scenarios for seed in args.seeds
            for row in run_one(name, seed, not args.full)]
    print(md_table(["scenario", "seed", "by", "name", "calls", "missed", "met"], rows))


if __name__ == "__main__":
    main()
