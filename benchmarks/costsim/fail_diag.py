"""Call by call, the attempts of the calls a policy failed or lost to an outage in flight.

    python -m benchmarks.costsim.fail_diag [--scenarios NAME ...] [--seeds 0]
        [--policies switchyard lowest-latency] [--show 8] [--variants base ...]

A ``FailTrace`` is ``misses.TracedSimulation`` plus, per call, each attempt: when it
started, the deployment (server, region, cloud), whether its pool was up, whether the
edge's table still listed it as routable, how it ended (served, UNAVAILABLE,
RESOURCE_EXHAUSTED) and what the attempt policy (``placement.attempts``) decided after it
(retry or stop, the regions it then avoided); and for a call the policy stopped or the
picker found nothing for, why. The engine's rules are untouched.

Per scenario, seed and policy it prints the failed calls and the 'outage in flight' misses
by pattern: the sequence of outcomes, whether a retry went back to a server or region or
cloud already failed in that call, whether an attempt chose a row of a pool already down
(the table not yet caught up), and how the call ended. ``--show`` prints that many calls
in full. Not written into RESULTS.md by itself.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass, field

from benchmarks.cost import SCENARIOS
from benchmarks.costsim import suite
from benchmarks.costsim.misses import CAUSES, TracedSimulation, causes
from benchmarks.costsim.policies import Attempt, Policy
from benchmarks.costsim.runner import make_policy
from benchmarks.costsim.scenario import Scenario
from benchmarks.costsim.trace import Trace, generate


@dataclass(slots=True)
class Try:
    t: float
    dep: str
    region: str
    cloud: str
    up: bool  # the pool was up when the attempt was sent
    listed: bool  # the edge's table listed the row as routable
    status: str = "?"  # ok / unavailable / exhausted
    retried: bool | None = None
    avoid: tuple[str, ...] = ()


@dataclass(slots=True)
class CallLog:
    tries: list[Try] = field(default_factory=list)
    none_at: float | None = None  # the picker found nothing (exclusions, avoided regions)
    none_why: str = ""


class FailTrace(TracedSimulation):
    def __init__(self, s: Scenario, trace: Trace, policy: Policy) -> None:
        super().__init__(s, trace, policy)
        self.log: dict[int, CallLog] = {}
        self._pool_of = {d.id: d.backend for d in self.deps}
        self._cur = -1  # the call being attempted
        self._chosen = -1  # the index of the deployment its policy chose
        inner = policy.choose

        def choose(a: Attempt) -> str | None:  # the policy's choice, recorded
            dep = inner(a)
            if dep is None:
                self._none(a)
            else:
                self._chosen = self.dep_index[dep]
            return dep

        policy.choose = choose  # type: ignore[method-assign]

    def _none(self, a: Attempt) -> None:
        log = self.log.setdefault(self._cur, CallLog())
        log.none_at = a.now
        control = self.policy.control
        rows = control.tables.get((a.klass.model, a.edge), []) if control else []
        up = [c for c in rows if not c.dropped_reason]
        free = [c for c in up if c.deployment_id not in a.exclude]
        log.none_why = (f"{len(rows)} rows, {len(up)} listed, {len(free)} not excluded, "
                        f"{sum(c.region not in a.avoid_regions for c in free)} outside "
                        f"avoided regions")

    def _attempt(self, call_id: int, now: float) -> None:
        self._cur = call_id
        c = self.calls[call_id]
        before = c.tries.attempts
        super()._attempt(call_id, now)
        if c.tries.attempts > before:
            d = self.deps[self._chosen]
            b = self.backends[d.backend]
            control = self.policy.control
            rows = control.tables.get((c.klass.model, c.edge), []) if control else []
            listed = any(r.deployment_id == d.id and not r.dropped_reason for r in rows)
            self.log.setdefault(call_id, CallLog()).tries.append(
                Try(now, d.id, d.region, d.cloud, b.up, listed))

    def _failed_attempt(self, call_id: int, dep_id: str, status: str, now: float) -> None:
        c = self.calls[call_id]
        log = self.log.setdefault(call_id, CallLog())
        last = next((t for t in reversed(log.tries) if t.dep == dep_id and t.status == "?"),
                    None)
        n = len(log.tries)
        super()._failed_attempt(call_id, dep_id, status, now)
        if last is not None:
            last.status = status
            last.retried = len(log.tries) > n or log.none_at is not None
            last.avoid = tuple(sorted(c.tries.avoid_regions))

    def _done(self, now: float, data: tuple[int, object]) -> None:
        bi, job = data
        b = self.backends[bi]
        if job.epoch == b.epoch and b.up:  # type: ignore[attr-defined]
            log = self.log.get(job.call)  # type: ignore[attr-defined]
            if log is not None:
                for t in reversed(log.tries):
                    if t.status == "?":
                        t.status = "ok"
                        break
        super()._done(now, data)  # type: ignore[arg-type]


def pattern(log: CallLog, served: bool) -> str:
    """One line: the outcomes, what each retry went back into, how the call ended."""
    parts: list[str] = []
    seen_srv: set[str] = set()
    seen_reg: set[str] = set()
    seen_cloud: set[str] = set()
    for t in log.tries:
        srv = t.dep.split("/")[0]
        back = ("same-server" if srv in seen_srv else "same-region" if t.region in seen_reg
                else "same-cloud" if t.cloud in seen_cloud else "new-cloud") if parts else ""
        tag = t.status[:5] + ("(dead,listed)" if not t.up and t.listed
                              else "(dead)" if not t.up else "")
        parts.append(f"{back + ':' if back else ''}{tag}")
        if t.status != "ok":
            seen_srv.add(srv)
            seen_reg.add(t.region)
            seen_cloud.add(t.cloud)
    end = "served" if served else ("nothing left" if log.none_at is not None else "stopped")
    return " > ".join(parts) + f" => {end}"


@dataclass
class Report:
    scenario: str
    seed: int
    policy: str
    variant: str
    calls: int
    failed: int
    outage: int
    patterns: Counter[str]
    examples: list[str]


def run_one(job: tuple[str, int, bool, str, str, int]) -> Report:
    from benchmarks.cost_variants import VARIANTS
    path, seed, quick, policy, variant, show = job
    VARIANTS[variant]()
    s = suite.scenario_of(suite.Job(path, quick, policy))
    s.seed += seed
    trace = generate(s, quick)
    sim = FailTrace(s, trace, make_policy(policy, s))
    r = sim.run()
    cause = causes(sim, r)
    picked = sorted(i for i, c in cause.items()
                    if c == CAUSES[1] or r.final_dep[i] < 0)
    pats: Counter[str] = Counter()
    examples: list[str] = []
    for i in picked:
        log = sim.log.get(i, CallLog())
        served = bool(r.final_dep[i] >= 0)
        pats[pattern(log, served)] += 1
        if len(examples) < show and not served:
            k = s.classes()[int(trace.klass[i])]
            lines = [f"call {i} t={trace.t[i]:.3f} edge={trace.regions[trace.region[i]]} "
                     f"{k.model} slo={k.slo_ms:g} cause={cause.get(i)}"]
            for t in log.tries:
                lines.append(f"  {t.t:.3f} {t.dep} ({t.cloud}) up={t.up} listed={t.listed} "
                             f"-> {t.status} retried={t.retried} avoid={list(t.avoid)}")
            if log.none_at is not None:
                lines.append(f"  {log.none_at:.3f} nothing to choose: {log.none_why}")
            examples.append("\n".join(lines))
    return Report(s.name, seed, policy, variant, r.calls, r.failed,
                  sum(c == CAUSES[1] for c in cause.values()), pats, examples)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", nargs="*", default=["held-out-many-models"])
    p.add_argument("--seeds", nargs="*", type=int, default=[0])
    p.add_argument("--policies", nargs="*", default=["switchyard", "lowest-latency"])
    p.add_argument("--variants", nargs="*", default=["base"])
    p.add_argument("--show", type=int, default=6)
    p.add_argument("--full", action="store_true")
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    t0 = time.monotonic()
    jobs = [(str(SCENARIOS / f"{n}.toml"), seed, not args.full, pol, v, args.show)
            for n in args.scenarios for seed in args.seeds for pol in args.policies
            for v in args.variants]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(max(args.workers, 1), maxtasksperchild=1) as pool:
        for rep in pool.imap(run_one, jobs):
            print(f"## {rep.scenario} seed {rep.seed} {rep.policy} {rep.variant}: "
                  f"{rep.calls:,} calls, failed {rep.failed}, '{CAUSES[1]}' misses "
                  f"{rep.outage}")
            for pat, n in rep.patterns.most_common(15):
                print(f"{n:6d}  {pat}")
            for ex in rep.examples:
                print(ex)
            print(flush=True)
    print(f"_(took {time.monotonic() - t0:.0f} s)_")


if __name__ == "__main__":
    main()
