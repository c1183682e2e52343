"""Route hub: keeps every route table current and pushes row-level deltas to watching edges.

Changes are coalesced: the first change after a quiet period schedules one rebuild
``coalesce_s`` later, so a burst of telemetry becomes one push. A rebuild recomputes only the
rows of backends that changed since the last one (``FleetState.take_dirty``); everything is
recomputed only when something global changed (prices, first build). A row is pushed only
when its wire content changed (estimates are rounded in ``convert.candidate_to_pb``, so
small load wobbles do not count). Each watcher has one pending slot per row: a slow edge gets
the newest rows, never a backlog.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from placement.fleet import FleetState
from placement.model import Candidate
from placement.routes import RouteBuilder, rank
from services.api.switchyard.v1 import placement_pb2
from services.convert import candidate_to_pb

log = structlog.get_logger("switchyard.placement.hub")


Rows = dict[str, placement_pb2.Candidate | None]  # deployment id -> new row (None = removed)


@dataclass(frozen=True)
class Push:
    """What one publish offered the watchers, for metrics: changed rows per (model, region)
    and how long after the first change it went out (the coalescing wait plus the build)."""

    rows: dict[tuple[str, str], Rows]
    latency_s: float


@dataclass
class _Table:
    model: str
    region: str
    default_slo_ms: float
    version: int = 0
    rows: dict[str, tuple[Candidate, placement_pb2.Candidate]] = field(default_factory=dict)
    snapshot: placement_pb2.RouteTable | None = None  # built lazily, per version

    def as_proto(self) -> placement_pb2.RouteTable:
        if self.snapshot is None or self.snapshot.version != self.version:
            ordered = sorted(self.rows.values(), key=lambda r: rank(r[0]))
            self.snapshot = placement_pb2.RouteTable(
                model=self.model, edge_region=self.region, version=self.version,
                default_slo_ms=self.default_slo_ms, candidates=[pb for _, pb in ordered])
        return self.snapshot


class Watcher:
    """One WatchRoutes stream: pending row changes per model, and an event to wake it."""

    def __init__(self, edge_id: str, region: str) -> None:
        self.edge_id = edge_id
        self.region = region
        # model -> deployment id -> new row (None = removed)
        self.pending: dict[str, dict[str, placement_pb2.Candidate | None]] = {}
        self.meta: dict[str, tuple[int, float]] = {}  # model -> (version, default SLO)
        self.wake = asyncio.Event()

    def offer(self, model: str, version: int, slo: float,
              changes: dict[str, placement_pb2.Candidate | None]) -> None:
        self.pending.setdefault(model, {}).update(changes)
        self.meta[model] = (version, slo)
        self.wake.set()

    def take(self) -> list[placement_pb2.TableDelta]:
        deltas = []
        for model, changes in self.pending.items():
            version, slo = self.meta[model]
            deltas.append(placement_pb2.TableDelta(
                model=model, edge_region=self.region, version=version, default_slo_ms=slo,
                upserts=[c for c in changes.values() if c is not None],
                removed_deployments=[d for d, c in changes.items() if c is None]))
        self.pending, self.meta = {}, {}
        self.wake.clear()
        return deltas


class RouteHub:
    def __init__(self, fleet: FleetState, builder: RouteBuilder, regions: list[str],
                 coalesce_s: float = 0.05, clock: Callable[[], float] = time.monotonic) -> None:
        self.fleet = fleet
        self.builder = builder
        self.regions = regions
        self.coalesce_s = coalesce_s
        self.clock = clock
        self.version = 0
        self._tables: dict[tuple[str, str], _Table] = {}
        self.watchers: set[Watcher] = set()
        self._scheduled: asyncio.TimerHandle | None = None
        self._first_change_at: float | None = None  # first change not yet published
        self.on_push: Callable[[int], None] | None = None  # metrics hook: tables changed
        self.on_published: Callable[[Push], None] | None = None  # metrics hook: rows, latency

    @property
    def tables(self) -> dict[tuple[str, str], placement_pb2.RouteTable]:
        return {k: t.as_proto() for k, t in self._tables.items()}

    def rebuild(self) -> dict[tuple[str, str], dict[str, placement_pb2.Candidate | None]]:
        """Recompute what changed; returns (model, region) → changed rows (None = removed)."""
        everything, dirty = self.fleet.take_dirty()
        now = self.clock()
        changed: dict[tuple[str, str], dict[str, placement_pb2.Candidate | None]] = {}
        for model, logical in sorted(self.builder.catalog.models.items()):
            for region in self.regions:
                key = (model, region)
                table = self._tables.get(key)
                if table is None:
                    table = self._tables[key] = _Table(model, region, logical.default_slo_ms)
                    scope, full = self.fleet.backends.keys(), True
                else:
                    full = everything
                    scope = self.fleet.backends.keys() if full else dirty
                diff = self._diff(table, self.builder.rows(model, region, scope, now),
                                  full, set(scope))
                if diff:
                    changed[key] = diff
        if changed:
            self.version += 1
            for key in changed:
                self._tables[key].version = self.version
        return changed

    @staticmethod
    def _diff(table: _Table, fresh: list[Candidate], full: bool, scope: set[str]
              ) -> dict[str, placement_pb2.Candidate | None]:
        out: dict[str, placement_pb2.Candidate | None] = {}
        seen = set()
        for c in fresh:
            pb = candidate_to_pb(c)
            seen.add(c.deployment_id)
            old = table.rows.get(c.deployment_id)
            if old is None or old[1] != pb:
                table.rows[c.deployment_id] = (c, pb)
                out[c.deployment_id] = pb
        for dep, (c, _) in list(table.rows.items()):
            if dep not in seen and (full or c.backend_id in scope):
                del table.rows[dep]
                out[dep] = None
        return out

    def snapshot(self, region: str) -> list[placement_pb2.RouteTable]:
        built = any(r == region for (_, r) in self._tables)
        if not built or self.fleet.dirty or self.fleet.all_dirty:
            self.publish()
        return [t.as_proto() for (_, r), t in sorted(self._tables.items()) if r == region]

    def publish(self) -> None:
        """Rebuild now and offer changed rows to every watcher of their region."""
        self._scheduled = None
        t0 = time.perf_counter()
        since = self._first_change_at if self._first_change_at is not None else self.clock()
        self._first_change_at = None
        changed = self.rebuild()
        if not changed:
            return
        for w in self.watchers:
            for (model, region), rows in changed.items():
                if region == w.region:
                    t = self._tables[(model, region)]
                    w.offer(model, t.version, t.default_slo_ms, rows)
        if self.on_push is not None:
            self.on_push(len(changed))
        if self.on_published is not None:
            self.on_published(Push(changed, self.clock() - since))
        log.debug("routes_published", version=self.version, tables=len(changed),
                  rows=sum(len(r) for r in changed.values()),
                  build_ms=round((time.perf_counter() - t0) * 1e3, 2))

    def changed(self) -> None:
        """The fleet changed: schedule one coalesced rebuild."""
        if self._first_change_at is None:
            self._first_change_at = self.clock()
        if self._scheduled is not None:
            return
        loop = asyncio.get_running_loop()
        self._scheduled = loop.call_later(self.coalesce_s, self.publish)

    def subscribe(self, edge_id: str, region: str) -> Watcher:
        if region not in self.regions:
            self.regions.append(region)
        w = Watcher(edge_id, region)
        self.watchers.add(w)
        return w

    def unsubscribe(self, w: Watcher) -> None:
        self.watchers.discard(w)
