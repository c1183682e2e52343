"""The discrete-event loop: one policy, one trace, one simulated fleet.

Events, in time order (ties in the order they were scheduled): call arrivals (from the
trace), service completions, retries after a failed attempt, the agents' telemetry tick,
placement's table rebuild (``0.05 s`` after each telemetry tick: the hub's coalescing
delay), the edges' p95 refresh, and outage starts and ends.

One attempt of a call from edge ``e`` on deployment ``d`` in region ``r``:

- ``d`` down: the failure is seen ``rtt(e, r)`` later (connection refused), then retried;
- ``d``'s queue full: RESOURCE_EXHAUSTED ``rtt(e, r)`` later, then retried;
- otherwise it joins ``d``'s FIFO at once; its latency is ``rtt(e, r) + wait + service``
  (the one-way delay before queueing is folded into the RTT term).

A call's latency runs from its arrival to its last attempt's response; it meets its SLO
when that is ``<= slo_ms``. After a failed attempt the call asks the edge's own attempt
policy (``placement.attempts``) whether and where it may try again; a call the policy stops,
or with nothing healthy to try, fails (counted as a miss). Billed cost is placement's cost
model applied to what happened: ``price per GPU-second × actual service seconds`` of the
attempt that served the call.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass

import numpy as np

from benchmarks.costsim.policies import Attempt, Policy
from benchmarks.costsim.scenario import CallClass, Scenario
from benchmarks.costsim.servers import Job, SimBackend
from benchmarks.costsim.trace import Trace, outage_windows
from placement.attempts import AttemptPolicy, AttemptSettings, CallAttempts

DONE, RETRY, TELEMETRY, TABLES, EDGES, DOWN, UP = range(7)
TABLE_DELAY_S = 0.05
STATUS = {"unavailable": "UNAVAILABLE", "exhausted": "RESOURCE_EXHAUSTED"}  # sim → gRPC name


@dataclass(frozen=True, slots=True)
class Deployment:
    id: str
    backend: int
    variant: str
    mean_service_s: float
    usd_per_s: float
    region: str
    backend_id: str = ""  # the pool's id: what a server failure excludes with all its variants
    cloud: str = ""

    @property
    def deployment_id(self) -> str:
        return self.id


@dataclass(slots=True)
class _Call:
    klass: CallClass
    edge: str
    tries: CallAttempts


@dataclass
class SimResult:
    policy: str
    calls: int
    served: int
    failed: int
    slo_met: int
    latency_ms: np.ndarray  # per call, NaN = failed
    slo_ms: np.ndarray
    final_dep: np.ndarray  # index into deployment ids, -1 = failed
    cost_usd: float  # billed: actual service seconds
    expected_cost_usd: float  # price × mean service of the serving deployment
    attempts: int
    wall_s: float
    deployments: list[str]
    fallbacks: int = 0
    cooldowns: int = 0

    @property
    def attainment(self) -> float:
        return self.slo_met / self.calls if self.calls else float("nan")

    def cost_per_million(self) -> float:
        return self.cost_usd / self.served * 1e6 if self.served else float("nan")

    def latency_pct(self, q: float) -> float:
        ok = self.latency_ms[~np.isnan(self.latency_ms)]
        return float(np.percentile(ok, q)) if len(ok) else float("nan")


def deployments_of(s: Scenario) -> list[Deployment]:
    out = []
    for i, p in enumerate(s.pools):
        for v in p.variants:
            out.append(Deployment(f"{p.id}/{v}", i, v,
                                  s.variant(v).compute_ms / p.speed / 1000,
                                  p.usd_per_gpu_hour / 3600, p.region, p.id, p.cloud))
    return out


class Simulation:
    def __init__(self, s: Scenario, trace: Trace, policy: Policy) -> None:
        self.s, self.trace, self.policy = s, trace, policy
        st = s.settings
        self.backends = [SimBackend(p, st.max_queue_per_server * p.servers) for p in s.pools]
        self.deps = deployments_of(s)
        self.attempt_policy = AttemptPolicy(AttemptSettings(max_attempts=st.max_attempts))
        self.dep_index = {d.id: i for i, d in enumerate(self.deps)}
        catalog = s.catalog()
        self.rtt = {(e, p.region): catalog.rtt(e, p.region) for e in s.regions for p in s.pools}
        self.classes = s.classes()
        self.sigma = [p.sigma(st) for p in s.pools]  # per backend
        self.heap: list[tuple[float, int, int, object]] = []
        self.seq = 0
        n = len(trace)
        self.latency = np.full(n, np.nan)
        self.final = np.full(n, -1, dtype=np.int32)
        self.slo = np.array([self.classes[k].slo_ms for k in trace.klass]) if n else np.zeros(0)
        self.calls: dict[int, _Call] = {}
        self.cost = self.expected = 0.0
        self.attempts = 0

    def _push(self, t: float, kind: int, data: object) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, data))

    def _warmup(self, backend: SimBackend) -> dict[str, tuple[int, float]]:
        n = self.s.settings.warmup_calls
        return {v: (n, self.s.variant(v).compute_ms / backend.pool.speed / 1000)
                for v in backend.pool.variants}

    def run(self) -> SimResult:
        t0 = time.process_time()
        st, horizon = self.s.settings, self.trace.duration_s
        for b in self.backends:
            b.warm(self._warmup(b))
        self._event(0.0, TELEMETRY, None)  # agents' first reports, and the edges' snapshot
        self._event(0.0, TABLES, None)
        k = 1
        while k * st.telemetry_interval_s <= horizon:
            self._push(k * st.telemetry_interval_s, TELEMETRY, None)
            self._push(k * st.telemetry_interval_s + TABLE_DELAY_S, TABLES, None)
            k += 1
        k = 1
        while k * st.edge_refresh_s <= horizon:
            self._push(k * st.edge_refresh_s, EDGES, None)
            k += 1
        for w in outage_windows(self.s, horizon):
            self._push(w.start_s, DOWN, w.pools)
            self._push(w.end_s, UP, w.pools)
        times, regions, klass = self.trace.t, self.trace.regions, self.trace.klass
        edge_of, i, n = self.trace.region, 0, len(self.trace)
        heap = self.heap
        while i < n or heap:
            if i < n and (not heap or times[i] < heap[0][0]):
                now = float(times[i])
                self.calls[i] = _Call(self.classes[klass[i]], regions[edge_of[i]],
                                      self.attempt_policy.start(None))
                self._attempt(i, now)
                i += 1
                continue
            now, _, kind, data = heapq.heappop(heap)
            self._event(now, kind, data)
        return SimResult(
            policy=self.policy.name, calls=n, served=int((self.final >= 0).sum()),
            failed=int((self.final < 0).sum()),
            slo_met=int(np.sum(self.latency <= self.slo)), latency_ms=self.latency,
            slo_ms=self.slo, final_dep=self.final, cost_usd=self.cost,
            expected_cost_usd=self.expected, attempts=self.attempts,
            wall_s=time.process_time() - t0, deployments=[d.id for d in self.deps],
            fallbacks=getattr(self.policy, "fallbacks", 0),
            cooldowns=getattr(self.policy, "cooldowns", 0))

    def _event(self, now: float, kind: int, data: object) -> None:
        control = self.policy.control
        if kind == DONE:
            self._done(now, data)  # type: ignore[arg-type]
        elif kind == RETRY:
            call_id, dep_id, status = data  # type: ignore[misc]
            self._failed_attempt(call_id, dep_id, status, now)
        elif kind == TELEMETRY:
            if control is not None:
                control.telemetry(now, {b.pool.id: b.snapshot() for b in self.backends})
        elif kind == TABLES:
            if control is not None:
                control.rebuild(now)
        elif kind == EDGES:
            if control is not None:
                control.refresh_edges(now, self.s.settings.edge_refresh_s)
        elif kind in (DOWN, UP):
            for b in self.backends:
                if b.pool.id not in data:  # type: ignore[operator]
                    continue
                if kind == UP:
                    b.come_up(self._warmup(b))
                    continue
                for job in b.go_down():
                    dep = f"{b.pool.id}/{job.variant}"
                    edge = self.calls[job.call].edge
                    self._push(now + self.rtt[(edge, b.pool.region)] / 2000, RETRY,
                               (job.call, dep, "unavailable"))

    def _attempt(self, call_id: int, now: float) -> None:
        c = self.calls[call_id]
        a = Attempt(c.edge, c.klass, c.tries.exclude, c.tries.avoid_regions, now)
        dep_id = self.policy.choose(a)
        if dep_id is None:
            del self.calls[call_id]
            return
        self.attempts += 1
        d = self.deps[self.dep_index[dep_id]]
        c.tries.started(d)
        b = self.backends[d.backend]
        sigma = self.sigma[d.backend]
        service = d.mean_service_s * math.exp(
            sigma * float(self.trace.z[call_id]) - sigma ** 2 / 2)
        job = Job(call_id, d.variant, service, now, now)
        outcome = b.admit(job, now)
        if outcome == "start":
            self._push(now + service, DONE, (d.backend, job))
        elif outcome in ("down", "rejected"):
            status = "unavailable" if outcome == "down" else "exhausted"
            self._push(now + self.rtt[(c.edge, d.region)] / 1000, RETRY,
                       (call_id, dep_id, status))

    def _done(self, now: float, data: tuple[int, Job]) -> None:
        bi, job = data
        b = self.backends[bi]
        if job.epoch != b.epoch or not b.up:
            return  # killed by an outage; its failure is already scheduled
        nxt = b.complete(job, now)
        if nxt is not None:
            self._push(now + nxt.service_s, DONE, (bi, nxt))
        c = self.calls.pop(job.call)
        dep_id = f"{b.pool.id}/{job.variant}"
        d = self.deps[self.dep_index[dep_id]]
        rtt = self.rtt[(c.edge, d.region)]
        attempt_ms = rtt + (now - job.submitted) * 1000
        self.latency[job.call] = (now - float(self.trace.t[job.call])) * 1000 + rtt
        self.final[job.call] = self.dep_index[dep_id]
        self.cost += d.usd_per_s * job.service_s
        self.expected += d.usd_per_s * d.mean_service_s
        self.policy.result(Attempt(c.edge, c.klass, c.tries.exclude, c.tries.avoid_regions,
                                   job.submitted), dep_id, attempt_ms, "ok", now)

    def _failed_attempt(self, call_id: int, dep_id: str, status: str, now: float) -> None:
        c = self.calls[call_id]
        d = self.deps[self.dep_index[dep_id]]
        self.policy.result(Attempt(c.edge, c.klass, c.tries.exclude, c.tries.avoid_regions,
                                   now), dep_id, 0.0, status, now)
        # The edge's rules (what the failure excludes, which regions to avoid, when to
        # stop); the simulated edge has no deadline and no retry budget.
        if not c.tries.failed(d, STATUS[status], self.deps, now, _always).retry:
            del self.calls[call_id]
            return
        self._attempt(call_id, now)


def _always() -> bool:
    return True
