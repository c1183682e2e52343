"""Where switchyard's missed calls go: each missed call gets one cause.

A ``TracedSimulation`` is the engine's ``Simulation`` with a log of what happened to every
call (failed attempts by status; for the attempt that served it, the queue wait, service
time, RTT and whether the edge had its own p95 of that deployment). ``classify`` then names
one cause per missed call, the first that applies:

1. ``no feasible deployment``: at the call's arrival no deployment that is up and meets the
   call's quality floor has ``rtt + mean service <= SLO`` (the LP's feasibility): no router
   could have met it without luck.
2. ``outage in flight``: one of its attempts failed UNAVAILABLE (a backend that was down,
   or died with the call queued or running).
3. ``retries exhausted``: the call failed without an outage (queues full on every attempt,
   or nothing healthy left), or waited out a full queue (RESOURCE_EXHAUSTED) first.
4. ``estimate before first samples``: served late by a deployment the edge had no observed
   p95 of yet (the table's model decided; checked when the call completed).
5. ``queueing not foreseen``: served late although ``rtt + service`` fit the SLO: the wait
   in the backend's queue made it late.
6. ``service-time tail``: ``rtt + service`` alone exceeded the SLO (a slow draw of the
   service-time noise on a deployment whose p95 looked fine).

``unobserved_parts`` splits cause 4 further (``cost_check`` prints it): whether the table's
row was other edges' observed p95 or placement's model (no edge had samples: the prior),
and whether the wait in the queue made the call late or ``rtt + service`` alone did.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from benchmarks.costsim import engine
from benchmarks.costsim.engine import SimResult, Simulation, deployments_of
from benchmarks.costsim.policies import Policy
from benchmarks.costsim.scenario import Scenario
from benchmarks.costsim.servers import Job
from benchmarks.costsim.trace import Trace, outage_windows

CAUSES = ("no feasible deployment", "outage in flight", "retries exhausted",
          "estimate before first samples", "queueing not foreseen", "service-time tail")


class TracedSimulation(Simulation):
    """``Simulation`` plus a per-call log; the engine's rules are untouched."""

    def __init__(self, s: Scenario, trace: Trace, policy: Policy) -> None:
        super().__init__(s, trace, policy)
        n = len(trace)
        self.unavailable = np.zeros(n, dtype=bool)
        self.exhausted = np.zeros(n, dtype=bool)
        self.wait_ms = np.full(n, np.nan)
        self.service_ms = np.full(n, np.nan)
        self.rtt_ms = np.full(n, np.nan)
        self.unobserved = np.zeros(n, dtype=bool)
        self.table_observed = np.zeros(n, dtype=bool)  # the table's row: other edges' p95

    def _event(self, now: float, kind: int, data: object) -> None:
        if kind == engine.RETRY:
            call_id, _dep, status = data  # type: ignore[misc]
            (self.unavailable if status == "unavailable" else self.exhausted)[call_id] = True
        super()._event(now, kind, data)

    def _done(self, now: float, data: tuple[int, Job]) -> None:
        bi, job = data
        b = self.backends[bi]
        if job.epoch == b.epoch and b.up:
            edge = self.calls[job.call].edge
            dep = f"{b.pool.id}/{job.variant}"
            self.wait_ms[job.call] = (job.started - job.submitted) * 1000
            self.service_ms[job.call] = job.service_s * 1000
            self.rtt_ms[job.call] = self.rtt[(edge, b.pool.region)]
            control = self.policy.control
            self.unobserved[job.call] = control is not None and \
                dep not in control.edges[edge].p95
            if control is not None and self.unobserved[job.call]:
                model = self.calls[job.call].klass.model
                self.table_observed[job.call] = any(
                    c.observed for c in control.tables.get((model, edge), ())
                    if c.deployment_id == dep)
        super()._done(now, data)


def infeasible_at_arrival(s: Scenario, trace: Trace, calls: np.ndarray) -> np.ndarray:
    """Per call of ``calls`` (indices): no up, quality-feasible deployment has
    ``rtt + mean service <= SLO`` at its arrival."""
    catalog, classes, deps = s.catalog(), s.classes(), deployments_of(s)
    windows = outage_windows(s, trace.duration_s)
    out = np.zeros(len(calls), dtype=bool)
    # Feasible deployments per (edge, class), then drop those down at the call's arrival.
    feasible: dict[tuple[int, int], list[int]] = {}
    for ei, e in enumerate(trace.regions):
        for ki, k in enumerate(classes):
            feasible[(ei, ki)] = [
                d.backend for d in deps
                if s.variant(d.variant).model == k.model
                and s.variant(d.variant).quality >= k.min_quality
                and catalog.rtt(e, d.region) + d.mean_service_s * 1000 <= k.slo_ms]
    pool_ids = [p.id for p in s.pools]
    for j, i in enumerate(calls):
        t = float(trace.t[i])
        down = {p for w in windows if w.start_s <= t < w.end_s for p in w.pools}
        pools = feasible[(int(trace.region[i]), int(trace.klass[i]))]
        out[j] = not any(pool_ids[p] not in down for p in pools)
    return out


def causes(sim: TracedSimulation, r: SimResult) -> dict[int, str]:
    """Call index -> its one cause, for every missed call (see the module docstring)."""
    missed = ~(r.latency_ms <= r.slo_ms)
    idx = np.nonzero(missed)[0]
    if not len(idx):
        return {}
    infeasible = infeasible_at_arrival(sim.s, sim.trace, idx)
    out: dict[int, str] = {}
    for j, i in enumerate(idx):
        if infeasible[j]:
            out[int(i)] = CAUSES[0]
        elif sim.unavailable[i]:
            out[int(i)] = CAUSES[1]
        elif r.final_dep[i] < 0 or sim.exhausted[i]:
            out[int(i)] = CAUSES[2]
        elif sim.unobserved[i]:
            out[int(i)] = CAUSES[3]
        elif sim.rtt_ms[i] + sim.service_ms[i] <= r.slo_ms[i]:
            out[int(i)] = CAUSES[4]
        else:
            out[int(i)] = CAUSES[5]
    return out


def unobserved_parts(sim: TracedSimulation, r: SimResult) -> Counter[str]:
    """The ``estimate before first samples`` misses by what the table's row was (other
    edges' p95 or the model's) and what made the call late (the queue's wait, or
    ``rtt + service`` alone), counted."""
    out: Counter[str] = Counter()
    for i, cause in causes(sim, r).items():
        if cause != CAUSES[3]:
            continue
        row = "other edges' p95" if sim.table_observed[i] else "the model"
        late = ("the wait" if sim.rtt_ms[i] + sim.service_ms[i] <= r.slo_ms[i]
                else "rtt + service")
        out[f"{row}, {late}"] += 1
    return out


def classify(sim: TracedSimulation, r: SimResult) -> Counter[str]:
    """One cause per missed call (see the module docstring), counted."""
    return Counter(causes(sim, r).values())
