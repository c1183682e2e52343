"""What the brain predicted for each 'queueing not foreseen' miss, against what happened.

    python -m benchmarks.costsim.queue_diag [--scenarios NAME ...] [--seeds 0] [--full]
        [--variants base ...]

A ``QueueTrace`` is ``misses.TracedSimulation`` plus, for the attempt that served each call,
what the edge knew when it chose (the decision hook: the row's p95 as the edge reads it,
``CallContext.latency_ms`` with this edge's own calls in flight on the backend against its
slot share, the table's modelled queue and compute, the learned margin, whether the strict
SLO test passed or the fallback chose) and what the backend held at that instant (servers
busy, the queue ahead and whose calls it holds: this edge's or other edges', of the same
variant or of other variants; every edge's calls in flight against its share; the sum of
the shares). The engine's rules are untouched: the hook reads, it does not choose.

Each 'queueing not foreseen' miss (``misses.causes``) gets one reason, the first that
applies:

1. ``fallback``: no row passed the strict test; the chance fallback chose knowing the risk.
2. ``retry``: a later attempt after a failed one.
3. ``own calls past its share``: this edge had its share or more in flight on the backend
   (its worst-case wait was in the prediction, and still too small).
4. ``other edges past their shares``: at the call's admission the backend's servers were
   all busy and other edges had more calls in flight there than their shares.
5. ``behind other variants' longer calls``: every edge within its share, and the calls
   ahead in the queue or in service were mostly (by work) of other, longer variants.
6. ``within every share``: none of the above: the wait came from calls within their
   shares (shares summing past the servers, or a row's observed p95 taken when it was
   quieter).

``--variants``: the brain with ``benchmarks.cost_check``'s variants, each run in a fresh
process (a variant switches module state). Prints per scenario, seed and variant the reasons
with counts, and the means of the inputs and of
what happened for each. Not written into RESULTS.md by itself.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from benchmarks.common import md_table, progress
from benchmarks.cost import SCENARIOS
from benchmarks.costsim import suite
from benchmarks.costsim.engine import SimResult
from benchmarks.costsim.misses import CAUSES, TracedSimulation, causes
from benchmarks.costsim.policies import Policy
from benchmarks.costsim.runner import make_policy
from benchmarks.costsim.scenario import Scenario
from benchmarks.costsim.trace import Trace, generate
from placement import meet
from placement.model import CallContext, Candidate
from placement.pipeline import Decision

REASONS = ("fallback", "retry", "own calls past its share", "other edges past their shares",
           "behind other variants' longer calls", "within every share")
BURST_RATIO = 1.5  # the edge's calls in the last second over its mean of the 10 before


@dataclass(slots=True)
class Seen:
    """One attempt's prediction and the backend as the call found it."""

    strict: bool = True
    predicted_ms: float = 0.0  # CallContext.latency_ms: the row's p95 plus own excess
    p95_ms: float = 0.0  # the row's p95 as the edge reads it (own observed, else table)
    observed: bool = False
    table_queue_ms: float = 0.0
    compute_ms: float = 0.0
    margin_ms: float = 0.0
    slo_ms: float = 0.0
    servers: int = 0
    slots: float = 0.0  # this edge's share of the backend's slots
    own_inflight: int = 0  # this edge's calls on the backend before this one
    shares_sum: float = 0.0  # every edge region's slots on the backend
    others_over: float = 0.0  # other edges' calls in flight past their shares
    busy: int = 0
    queued: int = 0
    queued_own: int = 0
    ahead_work_ms: float = 0.0  # service of the calls queued ahead
    ahead_other_variant_ms: float = 0.0  # of which other variants'
    running_other_variant: int = 0
    mix_ms: float = 0.0  # mean service of the calls on the backend (running and queued)
    chance: float = 0.0  # placement.meet's chance of the chosen row
    retry: bool = False
    burst: bool = False


@dataclass
class Diag:
    scenario: str
    seed: int
    variant: str
    calls: int
    attainment: float
    causes: Counter[str]
    reasons: Counter[str] = field(default_factory=Counter)
    means: dict[str, dict[str, float]] = field(default_factory=dict)


class QueueTrace(TracedSimulation):
    """``TracedSimulation`` plus, per call, the prediction and the backend at its last
    attempt (``Seen``)."""

    def __init__(self, s: Scenario, trace: Trace, policy: Policy) -> None:
        super().__init__(s, trace, policy)
        self.seen: dict[int, Seen] = {}
        self._call = -1
        self._slots_at, self._slots = -1, dict[tuple[str, str], float]()
        self._pool = {p.id: i for i, p in enumerate(s.pools)}
        per_edge = [np.sort(trace.t[trace.region == i]) for i in range(len(trace.regions))]
        self._arrivals = dict(zip(trace.regions, per_edge, strict=True))

    def _attempt(self, call_id: int, now: float) -> None:
        self._call = call_id
        super()._attempt(call_id, now)

    def hook(self, cands: list[Candidate], ctx: CallContext, d: Decision) -> None:
        c, i = d.candidate, self._call
        call = self.calls[i]
        b = self.backends[self._pool[c.backend_id]]
        n = sum(v for dep, v in ctx.inflight.items() if dep.startswith(c.backend_id + "/"))
        seen = Seen(strict=d.slo_met, predicted_ms=ctx.latency_ms(c), p95_ms=ctx.p95_ms(c),
                    observed=c.deployment_id in ctx.observed_p95_ms,
                    table_queue_ms=c.queue_ms, compute_ms=c.compute_ms,
                    margin_ms=ctx.slo_margins.get(c.deployment_id, 0.0),
                    slo_ms=ctx.hints.slo_ms, servers=c.concurrency, slots=c.slots,
                    own_inflight=n, busy=b.busy, queued=len(b.queue),
                    retry=bool(ctx.exclude) or i in self.seen)
        control, inflight = self.policy.control, getattr(self.policy, "inflight", {})
        assert control is not None
        if self._slots_at != control.builds:
            self._slots_at, self._slots = control.builds, {
                (e, r.backend_id): r.slots for (_m, e), t in control.tables.items() for r in t}
        for edge in control.regions:
            k = self._slots.get((edge, c.backend_id), float(c.concurrency))
            seen.shares_sum += k
            if edge != call.edge:
                held = sum(v for dep, v in inflight.get(edge, {}).items()
                           if dep.startswith(c.backend_id + "/"))
                seen.others_over += max(0.0, held - k)
        for job in b.queue:
            seen.queued_own += self.calls[job.call].edge == call.edge
            seen.ahead_work_ms += job.service_s * 1000
            if job.variant != c.variant:
                seen.ahead_other_variant_ms += job.service_s * 1000
        seen.running_other_variant = sum(j.variant != c.variant for j in b.running.values())
        on = [j.service_s * 1000 for j in (*b.running.values(), *b.queue)]
        seen.mix_ms = float(np.mean(on)) if on else 0.0
        seen.chance = meet.chance(c, ctx)
        t = self._arrivals[call.edge]
        now = float(self.trace.t[i])
        last = np.searchsorted(t, now) - np.searchsorted(t, now - 1.0)
        before = (np.searchsorted(t, now - 1.0) - np.searchsorted(t, now - 11.0)) / 10.0
        seen.burst = bool(not seen.retry and before > 0 and last > BURST_RATIO * before)
        self.seen[i] = seen


def reason(s: Seen) -> str:
    if not s.strict:
        return REASONS[0]
    if s.retry:
        return REASONS[1]
    if s.slots > 0 and s.own_inflight >= math.floor(s.slots):
        return REASONS[2]
    if s.busy >= s.servers and s.others_over > 0:
        return REASONS[3]
    if s.ahead_other_variant_ms > s.ahead_work_ms / 2 or (
            s.queued == 0 and s.running_other_variant > s.busy / 2):
        return REASONS[4]
    return REASONS[5]


COLUMNS = ("slo_ms", "predicted_ms", "p95_ms", "table_queue_ms", "compute_ms", "margin_ms",
           "slots", "own_inflight", "servers", "shares_sum", "others_over", "busy", "queued",
           "queued_own", "ahead_work_ms", "ahead_other_variant_ms", "mix_ms", "wait_ms",
           "chance", "burst", "observed")


def run_variant(job: tuple[str, int, bool, str]) -> Diag:
    """``run_one`` with ``benchmarks.cost_check``'s variant switched on (in a fresh process)."""
    from benchmarks.cost_check import VARIANTS
    path, seed, quick, variant = job
    VARIANTS[variant]()
    return run_one(path, seed, quick, variant)


def run_one(path: str, seed: int, quick: bool, variant: str = "base") -> Diag:
    s = suite.scenario_of(suite.Job(path, quick, "switchyard"))
    s.seed += seed
    trace = generate(s, quick)
    holder: list[QueueTrace] = []

    def hook(cands: list[Candidate], ctx: CallContext, d: Decision) -> None:
        holder[0].hook(cands, ctx, d)

    sim = QueueTrace(s, trace, make_policy("switchyard", s, on_decision=hook))
    holder.append(sim)
    r: SimResult = sim.run()
    cause = causes(sim, r)
    out = Diag(s.name, seed, variant, r.calls, r.attainment, Counter(cause.values()))
    rows: dict[str, list[tuple[int, Seen]]] = {}
    for i, c in cause.items():
        if c == CAUSES[4] and i in sim.seen:
            rows.setdefault(reason(sim.seen[i]), []).append((i, sim.seen[i]))
    for name, items in rows.items():
        out.reasons[name] = len(items)
        means: dict[str, float] = {}
        for col in COLUMNS:
            if col == "wait_ms":
                means[col] = float(np.mean([sim.wait_ms[i] for i, _ in items]))
            else:
                means[col] = float(np.mean([float(getattr(x, col)) for _, x in items]))
        out.means[name] = means
    return out


def report(diags: list[Diag]) -> str:
    parts = []
    for d in diags:
        rows = [[name, d.reasons[name], *[f"{d.means[name][c]:.3g}" for c in COLUMNS]]
                for name in REASONS if d.reasons.get(name)]
        parts.append(f"{d.scenario} seed {d.seed} {d.variant}: {d.attainment:.2%} of "
                     f"{d.calls:,} calls, "
                     f"'{CAUSES[4]}' {d.causes.get(CAUSES[4], 0)} of "
                     f"{sum(d.causes.values())} misses\n\n"
                     + md_table(("reason", "misses", *COLUMNS), rows))
    return "\n\n".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", nargs="*",
                   default=["held-out-near-capacity", "held-out-many-models"])
    p.add_argument("--seeds", nargs="*", type=int, default=[0])
    p.add_argument("--full", action="store_true")
    p.add_argument("--variants", nargs="*", default=["base"])
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    t0 = time.monotonic()
    jobs = [(str(SCENARIOS / f"{name}.toml"), seed, not args.full, v)
            for name in args.scenarios for seed in args.seeds for v in args.variants]
    diags = []
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(max(args.workers, 1), maxtasksperchild=1) as pool:
        for d in pool.imap(run_variant, jobs):
            diags.append(d)
            progress(f"queue_diag: {d.scenario} seed {d.seed} {d.variant} done")
    print(report(diags))
    print(f"\n_(took {time.monotonic() - t0:.0f} s)_")


if __name__ == "__main__":
    main()
