"""Route hub: rebuilds route tables when the fleet changes and pushes deltas to watching edges.

Changes are coalesced: the first change after a quiet period schedules one rebuild
``coalesce_s`` later, so a burst of telemetry becomes one push. A table is pushed only when its
content (not its version) changed. Each watcher has a single pending slot per model; a slow
edge gets the newest table, never a backlog.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from placement.fleet import FleetState
from placement.routes import RouteBuilder
from services.api.switchyard.v1 import placement_pb2
from services.convert import candidate_to_pb

log = structlog.get_logger("switchyard.placement.hub")


class Watcher:
    """One WatchRoutes stream: pending tables by model, and an event to wake the stream."""

    def __init__(self, edge_id: str, region: str) -> None:
        self.edge_id = edge_id
        self.region = region
        self.pending: dict[str, placement_pb2.RouteTable] = {}
        self.wake = asyncio.Event()

    def offer(self, tables: list[placement_pb2.RouteTable]) -> None:
        for t in tables:
            self.pending[t.model] = t
        if tables:
            self.wake.set()

    def take(self) -> list[placement_pb2.RouteTable]:
        tables, self.pending = list(self.pending.values()), {}
        self.wake.clear()
        return tables


class RouteHub:
    def __init__(self, fleet: FleetState, builder: RouteBuilder, regions: list[str],
                 coalesce_s: float = 0.05, clock: Callable[[], float] = time.monotonic) -> None:
        self.fleet = fleet
        self.builder = builder
        self.regions = regions
        self.coalesce_s = coalesce_s
        self.clock = clock
        self.version = 0
        self.tables: dict[tuple[str, str], placement_pb2.RouteTable] = {}
        self.watchers: set[Watcher] = set()
        self._built_fleet_version = -1
        self._scheduled: asyncio.TimerHandle | None = None
        self.on_push: Callable[[int], None] | None = None  # metrics hook: tables pushed

    def rebuild(self) -> list[placement_pb2.RouteTable]:
        """Recompute every table; return those whose content changed (with a new version)."""
        self._built_fleet_version = self.fleet.version
        now = self.clock()
        changed = []
        for model in sorted(self.builder.catalog.models):
            slo = self.builder.catalog.models[model].default_slo_ms
            for region in self.regions:
                cands = [candidate_to_pb(c) for c in self.builder.build(model, region, now)]
                old = self.tables.get((model, region))
                if old is not None and list(old.candidates) == cands:
                    continue
                if not changed:
                    self.version += 1
                table = placement_pb2.RouteTable(model=model, edge_region=region,
                                                 version=self.version, default_slo_ms=slo,
                                                 candidates=cands)
                self.tables[(model, region)] = table
                changed.append(table)
        return changed

    def snapshot(self, region: str) -> list[placement_pb2.RouteTable]:
        if self._built_fleet_version != self.fleet.version:
            self.publish()
        return [t for (_, r), t in sorted(self.tables.items()) if r == region]

    def publish(self) -> None:
        """Rebuild now and offer changed tables to every watcher of their region."""
        self._scheduled = None
        t0 = time.perf_counter()
        changed = self.rebuild()
        if not changed:
            return
        for w in self.watchers:
            w.offer([t for t in changed if t.edge_region == w.region])
        if self.on_push is not None:
            self.on_push(len(changed))
        log.debug("routes_published", version=self.version, tables=len(changed),
                  build_ms=round((time.perf_counter() - t0) * 1e3, 2))

    def changed(self) -> None:
        """The fleet changed: schedule one coalesced rebuild."""
        if self._scheduled is not None:
            return
        loop = asyncio.get_running_loop()
        self._scheduled = loop.call_later(self.coalesce_s, self.publish)

    def subscribe(self, edge_id: str, region: str) -> Watcher:
        if region not in self.regions:
            self.regions.append(region)
            self._built_fleet_version = -1
        w = Watcher(edge_id, region)
        self.watchers.add(w)
        return w

    def unsubscribe(self, w: Watcher) -> None:
        self.watchers.discard(w)
