"""Fleet state: registered backends, operator availability, telemetry and edge observations.

Pure and clock-free: every method that needs the time takes ``now`` (seconds, monotonic).
Telemetry counters are Triton's cumulative statistics; per-deployment compute, queue and
request rate are derived from the deltas between consecutive reports (EWMA, ``ALPHA``).

Edges also report how many calls per second they send each deployment; ``slot_share`` turns
that into each edge's share of the backend's slots per deployment (``placement.shares``, see
``Candidate.edge_slots``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from placement import shares
from placement.errors import NotRegistered
from placement.hardware import GpuState, HardwareVerdict, assess, carry
from placement.model import Availability, Backend
from placement.token_learning import StreamSeen, TokenLearning

ALPHA = 0.5  # EWMA weight of the newest window
OBSERVATION_TTL_S = 60.0
RTT_ALPHA = 0.2
RTT_CHANGE_MS = 0.5  # smaller RTT corrections do not rebuild route tables


@dataclass(frozen=True, slots=True)
class VariantStats:
    """Triton's cumulative statistics for one variant on one backend."""

    inference_count: int = 0
    execution_count: int = 0
    failure_count: int = 0
    queue_ns: int = 0
    compute_infer_ns: int = 0
    ready: bool = True


@dataclass(frozen=True, slots=True)
class TelemetrySnapshot:
    ready: bool
    simulated: bool
    gpus: tuple[GpuState, ...] = ()
    variants: dict[str, VariantStats] = field(default_factory=dict)
    inflight: int = 0
    sent_ms: int = 0  # the agent's clock when it read the counters (unix ms; 0 = unknown)


@dataclass(slots=True)
class VariantLoad:
    """What placement has learned about one deployment from telemetry."""

    compute_ms: float | None = None
    queue_ms: float = 0.0
    rps: float = 0.0
    busy_fraction: float = 0.0
    # The calls ``compute_ms`` is a mean of, as an EWMA's effective count (1 / the variance
    # of the estimate in units of one call's): ``placement.prior`` weighs it by this.
    samples: float = 0.0


@dataclass(slots=True)
class BackendState:
    backend: Backend
    availability: Availability = Availability.ACTIVE
    last: TelemetrySnapshot | None = None
    last_at: float | None = None
    loads: dict[str, VariantLoad] = field(default_factory=dict)
    signature: tuple[object, ...] | None = None  # _signature after the last ingest

    @property
    def utilisation(self) -> float:
        return min(1.0, sum(v.busy_fraction for v in self.loads.values())
                   / max(self.backend.max_concurrency, 1))


@dataclass(slots=True)
class ObservedLatency:
    samples: int
    p95_ms: float
    at: float


class FleetState:
    """The placement service's in-memory picture of the fleet; ``version`` bumps on change."""

    def __init__(self) -> None:
        self.backends: dict[str, BackendState] = {}
        self.observed: dict[tuple[str, str], ObservedLatency] = {}
        self.rtt_observed: dict[tuple[str, str], float] = {}
        # deployment id -> (edge region, edge id) -> (calls/s the edge sends it, when)
        self.use: dict[str, dict[tuple[str, str], tuple[float, float]]] = {}
        # (edge region, edge id) -> when it last reported its call rates (any deployment)
        self.edges_seen: dict[tuple[str, str], float] = {}
        self._edges_counted: tuple[float, int] = (math.nan, 0)
        # deployment id -> edge region -> its observation (``observed`` by deployment; kept
        # by ``observe``, rebuilt when ``observed`` was filled directly, e.g. a warm restart)
        self._observed_by_dep: dict[str, dict[str, ObservedLatency]] = {}
        self._observed_indexed = 0
        self.tokens = TokenLearning()  # LLM streams' token speeds, from edge reports
        self.version = 0
        # What changed since the route tables were last built (consumed by take_dirty).
        self.dirty: set[str] = set()
        self.all_dirty = True
        # Drains, cordons and activations so far (persisted at once, not on the next period).
        self.operator_changes = 0

    def _bump(self, *backend_ids: str) -> None:
        self.version += 1
        if backend_ids:
            self.dirty.update(backend_ids)
        else:
            self.all_dirty = True

    def take_dirty(self) -> tuple[bool, set[str]]:
        """(everything changed?, backend ids that changed) since the last call."""
        out = (self.all_dirty, self.dirty)
        self.all_dirty, self.dirty = False, set()
        return out

    def register(self, backend: Backend) -> None:
        """Add or replace a backend; availability and learned load survive re-registration."""
        old = self.backends.get(backend.id)
        if old is not None and old.backend == backend:
            return
        self.backends[backend.id] = BackendState(
            backend, old.availability if old else Availability.ACTIVE,
            old.last if old else None, old.last_at if old else None,
            old.loads if old else {})
        self._bump(backend.id)

    def deregister(self, backend_id: str) -> bool:
        existed = self.backends.pop(backend_id, None) is not None
        if existed:
            self._bump(backend_id)
        return existed

    def get(self, backend_id: str) -> BackendState:
        try:
            return self.backends[backend_id]
        except KeyError:
            raise NotRegistered(f"backend {backend_id!r} is not registered; register it "
                                "first (the agent does at start)") from None

    def set_availability(self, scope: str, target: str, availability: Availability) -> list[str]:
        """Drain/cordon/activate a backend, a region or a cloud; returns the backends touched."""
        attr = {"backend": "id", "region": "region", "cloud": "cloud"}[scope]
        hit = [s for s in self.backends.values() if getattr(s.backend, attr) == target]
        if not hit:
            raise NotRegistered(f"no registered backend has {scope} {target!r}")
        for s in hit:
            s.availability = availability
        self._bump(*(s.backend.id for s in hit))
        self.operator_changes += 1  # an operator's act: saved for a restart at once
        return sorted(s.backend.id for s in hit)

    def ingest(self, backend_id: str, snap: TelemetrySnapshot, now: float) -> None:
        """Apply one agent report: derive per-variant compute, queue, rate and busy fraction."""
        state = self.get(backend_id)
        prev, prev_at = state.last, state.last_at
        before_sig = state.signature or _signature(state)
        for name, stats in snap.variants.items():
            load = state.loads.setdefault(name, VariantLoad())
            before = prev.variants.get(name) if prev else None
            _update_load(load, stats, before, _window(prev, prev_at, snap, now))
        # XID and memory-pressure holds follow the GPU across reports (placement.hardware)
        gpus = carry(prev.gpus if prev else (), snap.gpus, now)
        if gpus is not snap.gpus:  # something held: a copy (else the report's own readings)
            snap = replace(snap, gpus=gpus)
        # The very readings of the last report (the ingest reuses a byte-identical report's
        # conversion): its hardware verdict holds (``assess`` reads nothing else).
        usable = before_sig[0] if prev is not None and gpus is prev.gpus else None
        state.last, state.last_at = snap, now
        state.signature = _signature(state, usable[1] if isinstance(usable, tuple) else None)
        if state.signature != before_sig:
            self._bump(backend_id)  # only what can change a route table rebuilds it

    def observe(self, edge_region: str, deployment_id: str, samples: int, p95_ms: float,
                now: float) -> None:
        o = ObservedLatency(samples, p95_ms, now)
        key = (edge_region, deployment_id)
        if key not in self.observed and self._observed_indexed == len(self.observed):
            self._observed_indexed += 1
        self.observed[key] = o
        self._observed_by_dep.setdefault(deployment_id, {})[edge_region] = o
        self._bump(deployment_id.split("/", 1)[0])

    def observe_use(self, edge_region: str, edge_id: str, deployment_id: str,
                    calls_per_s: float, now: float) -> None:
        """Record the call rate one edge sends a deployment (it sets the slot shares).

        A new edge changes every backend's split (edges that do not use a backend share
        one allowance of it), so it marks every row changed, not only this backend's."""
        new_edge = (edge_region, edge_id) not in self.edges_seen
        self.edges_seen[(edge_region, edge_id)] = now
        by_edge = self.use.setdefault(deployment_id, {})
        old = by_edge.get((edge_region, edge_id))
        by_edge[(edge_region, edge_id)] = (calls_per_s, now)
        if new_edge:
            self._bump()
        elif old is None or _step(old[0] + 1.0, 0.1) != _step(calls_per_s + 1.0, 0.1):
            self._bump(deployment_id.split("/", 1)[0])

    def observe_streams(self, edge: tuple[str, str], deployment_id: str, seen: StreamSeen,
                        now: float) -> None:
        """One edge's LLM-stream report on a deployment (``placement.token_learning``)."""
        if self.tokens.observe(edge, deployment_id, seen, now):
            self._bump(deployment_id.split("/", 1)[0])

    def slot_share(self, edge_region: str, deployment_id: str, now: float,
                   seed_edges: int = 1) -> float:
        """The share of the backend's slots one edge of ``edge_region`` may fill, with this
        deployment or any other of the backend's (``placement.shares``). Reports older
        than ``OBSERVATION_TTL_S`` are forgotten; before any edge has reported,
        ``seed_edges`` (the catalog's edge regions) are assumed to share it.
        """
        backend_id = deployment_id.split("/", 1)[0]
        state = self.backends.get(backend_id)
        names = [v.name for v in state.backend.variants] if state else []
        rates: dict[str, dict[tuple[str, str], float]] = {}
        for dep in {deployment_id, *(f"{backend_id}/{n}" for n in names)}:
            by_edge = self.use.get(dep)
            if not by_edge:
                continue
            for key in [k for k, (_, at) in by_edge.items() if now - at > OBSERVATION_TTL_S]:
                del by_edge[key]
            rates[dep] = {k: rate for k, (rate, _) in by_edge.items()}
        return shares.slot_share(rates, edge_region, deployment_id,
                                 self._known_edges(now) or seed_edges, max(len(names), 1))

    def _known_edges(self, now: float) -> int:
        """Edges that reported call rates within ``OBSERVATION_TTL_S`` (counted once per
        ``now``: table builds ask for every row)."""
        at, n = self._edges_counted
        if at != now:
            for key in [k for k, t in self.edges_seen.items() if now - t > OBSERVATION_TTL_S]:
                del self.edges_seen[key]  # an edge id silent that long is forgotten
            n = len(self.edges_seen)
            self._edges_counted = (now, n)
        return n

    def observe_rtt(self, edge_region: str, region: str, rtt_ms: float) -> None:
        key = (edge_region, region)
        old = self.rtt_observed.get(key)
        new = rtt_ms if old is None else old + RTT_ALPHA * (rtt_ms - old)
        self.rtt_observed[key] = new
        if old is None or abs(new - old) >= RTT_CHANGE_MS:
            self._bump(*(s.backend.id for s in self.backends.values()
                         if s.backend.region == region))

    def observed_elsewhere(self, deployment_id: str, min_samples: int,
                           now: float) -> list[tuple[str, int, float]]:
        """(edge region, samples, p95) of every edge region's fresh observation of the
        deployment with at least ``min_samples``."""
        if self._observed_indexed != len(self.observed):
            self._observed_by_dep = {}
            for (region, dep), o in self.observed.items():
                self._observed_by_dep.setdefault(dep, {})[region] = o
            self._observed_indexed = len(self.observed)
        by_region = self._observed_by_dep.get(deployment_id, {})
        return [(region, o.samples, o.p95_ms) for region, o in by_region.items()
                if o.samples >= min_samples and now - o.at <= OBSERVATION_TTL_S]

    def observed_p95(self, edge_region: str, deployment_id: str, min_samples: int,
                     now: float) -> float | None:
        o = self.observed.get((edge_region, deployment_id))
        if o is None or o.samples < min_samples or now - o.at > OBSERVATION_TTL_S:
            return None
        return o.p95_ms


def _step(x: float | None, ratio: float = 0.03) -> int | None:
    """``x`` on a geometric grid (3 % steps): changes smaller than a step are noise."""
    if x is None:
        return None
    return round(math.log(max(x, 1e-6)) / math.log1p(ratio))


_LOG_3, _LOG_5, _LOG_10 = math.log1p(0.03), math.log1p(0.05), math.log1p(0.1)
_log = math.log


def _load_steps(v: VariantLoad, slots: int) -> tuple[int | None, int, int, int, int]:
    """One deployment's load on ``_step``'s grids (written out: it runs for every report):
    compute (3 %), queue (3 %), rate (10 %), busy fraction and headroom (5 %)."""
    busy = v.busy_fraction
    return (None if v.compute_ms is None else round(_log(max(v.compute_ms, 1e-6)) / _LOG_3),
            round(_log(max(v.queue_ms + 0.05, 1e-6)) / _LOG_3),
            round(_log(max(v.rps + 1.0, 1e-6)) / _LOG_10),
            round(_log(max(busy + 0.05, 1e-6)) / _LOG_5),
            # headroom too: near saturation small busy moves matter
            round(_log(max(slots - busy, 0.0) + 0.05) / _LOG_5))


def _signature(state: BackendState, hw: HardwareVerdict | None = None) -> tuple[object, ...]:
    """What of a backend's telemetry can change its route-table rows, quantised. ``hw``: the
    hardware verdict of its GPU readings when already known."""
    snap = state.last
    if snap is not None and hw is None:
        hw = assess(list(snap.gpus))
    variants, loads = (snap.variants if snap is not None else {}), state.loads
    slots = state.backend.max_concurrency
    return (None if snap is None else (snap.ready, hw, tuple(
                (k, v.ready) for k, v in (sorted(variants.items()) if len(variants) > 1
                                          else variants.items()))),
            tuple((k, *_load_steps(v, slots)) for k, v in (
                sorted(loads.items()) if len(loads) > 1 else loads.items())))


def _window(prev: TelemetrySnapshot | None, prev_at: float | None, snap: TelemetrySnapshot,
            now: float) -> float | None:
    """Seconds between the counter reads of two reports: by the agent's clock when both carry
    it (arrival times bunch up when placement falls behind, which would fake rate swings),
    else by arrival."""
    if prev is not None and prev.sent_ms and snap.sent_ms > prev.sent_ms:
        return (snap.sent_ms - prev.sent_ms) / 1000
    return None if prev_at is None else now - prev_at


def _update_load(load: VariantLoad, cur: VariantStats, before: VariantStats | None,
                 dt: float | None) -> None:
    if (before is None or cur.inference_count < before.inference_count
            or cur.compute_infer_ns < before.compute_infer_ns or cur.queue_ns < before.queue_ns):
        # First report, or Triton restarted (any counter went backwards: a restart that
        # served more calls than before it still resets the time counters, and a window
        # between the two lives would be a negative compute and busy time): use the totals.
        if cur.inference_count > 0:
            load.compute_ms = cur.compute_infer_ns / cur.inference_count / 1e6
            load.queue_ms = cur.queue_ns / cur.inference_count / 1e6
            load.samples = float(cur.inference_count)
        return
    d_count = cur.inference_count - before.inference_count
    if dt is not None and dt > 0:
        rps = d_count / dt
        busy = (cur.compute_infer_ns - before.compute_infer_ns) / 1e9 / dt
        # The first window seeds the averages (from zero they would take ~5 reports to settle,
        # and every one of those reports would change the backend's route rows).
        a = 1.0 if load.rps == 0.0 and load.busy_fraction == 0.0 else ALPHA
        load.rps += a * (rps - load.rps)
        load.busy_fraction += a * (busy - load.busy_fraction)
    if d_count <= 0:
        return
    compute = (cur.compute_infer_ns - before.compute_infer_ns) / d_count / 1e6
    queue = (cur.queue_ns - before.queue_ns) / d_count / 1e6
    first = load.compute_ms is None  # the first measured window seeds queue as well
    load.compute_ms = compute if load.compute_ms is None else (
        load.compute_ms + ALPHA * (compute - load.compute_ms))
    # variance of the EWMA in units of one call's: (1 - a)^2 v + a^2 / d_count
    load.samples = float(d_count) if first or load.samples <= 0 else 1.0 / (
        (1.0 - ALPHA) ** 2 / load.samples + ALPHA ** 2 / d_count)
    load.queue_ms += (1.0 if first else ALPHA) * (queue - load.queue_ms)
