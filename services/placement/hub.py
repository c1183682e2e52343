"""Route hub: keeps every route table current and pushes row-level deltas to watching edges.

Changes are coalesced: the first change after a quiet period schedules one rebuild
``coalesce_s`` later, so a burst of telemetry becomes one push. A rebuild recomputes only the
rows of backends that changed since the last one (``FleetState.take_dirty``); everything is
recomputed only when something global changed (prices, first build). A row is pushed only
when it changed materially (``material``: anything but an estimate, or an estimate that
moved by more than its noise band since the row was last pushed), so 1 Hz load wobble on a
busy fleet does not become a push; the band is the wider of a fixed one and the row's own
measured jitter, and changes learned from telemetry go out at most once every
``estimate_every_s`` (``services.placement.bands``: a steady two-instance mesh republished
4 times a second on the fixed bands alone). Each publish becomes one ``RegionPush`` per edge region,
built and serialised once and shared by every watcher of that region; a watcher that falls
behind merges its pending pushes row by row (the newest row wins), so a slow edge gets the
newest rows, never a backlog.

Under load the scheduled rebuild is bounded (``max_build_rows`` rows per publish, the rest of
the backlog in the next publishes, each after a pause as long as the piece took, so that the
event loop stays at least half free for ingest, pushes and accepting calls), and
a telemetry change that makes a backend usable or unusable (``urgent``: readiness, a hardware
verdict, a variant's readiness) goes out in a publish of its own within ``urgent_s`` (5 ms),
waiting neither for the coalescing nor for a paced backlog piece (an operator's drain is
published at once, ``SetAvailability``). The watchers' side (``RegionPush``, ``Watcher``)
is ``services.placement.watchers``. Without the bound a
publish rebuilt every changed row in one piece on the one event loop (~40 µs a row: 1.2 s
for 5,000 backends x 5 edge regions), and a readiness flip waited behind all of it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from operator import itemgetter

import structlog

from placement.errors import InvalidRequest
from placement.fleet import FleetState
from placement.model import Candidate
from placement.routes import RouteBuilder, rank
from services.api.switchyard.v1 import placement_pb2
from services.convert import candidate_to_pb
from services.placement.bands import DEFERRABLE, ESTIMATE_EVERY_S, HELD, Jitter, judge
from services.placement.watchers import Merges, RegionPush, Rows, Watcher

log = structlog.get_logger("switchyard.placement.hub")


# Rows one scheduled publish rebuilds at most (~40 µs each on this host's Python: ~40 ms);
# urgent backends are rebuilt whatever the bound. ``publish()`` called directly builds all.
MAX_BUILD_ROWS = 1000
# A usability flip's own publish waits this long for other flips to join it (an agent's
# round arrives over a few ms), not for the coalescing or a paced backlog piece.
URGENT_S = 0.005
# The bands, the jitter band and the estimate cadence: services/placement/bands.py
# (``_BANDS``: an estimate's fixed band; ``material``: would an edge route differently).


@dataclass(frozen=True)
class Push:
    """What one publish offered the watchers, for metrics: changed rows per (model, region),
    how long after the first change it went out (the coalescing wait plus the build), and
    its rows by why they changed (``material``'s reasons, ``added``, ``removed``)."""

    rows: dict[tuple[str, str], Rows]
    latency_s: float
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class _Table:
    model: str
    region: str
    default_slo_ms: float
    version: int = 0
    # deployment id -> (row, as sent, its place in the table: ``rank``, kept with the row so
    # that a snapshot of 10,000 rows sorts on stored keys; ranking them all anew was a fifth
    # of placement's CPU while 100 edges connected to a changing fleet)
    rows: dict[str, tuple[Candidate, placement_pb2.Candidate, tuple[object, ...]]] = field(
        default_factory=dict)
    by_backend: dict[str, set[str]] = field(default_factory=dict)  # backend -> its rows
    jitter: dict[str, Jitter] = field(default_factory=dict)  # deployment id -> its jitter
    snapshot: placement_pb2.RouteTable | None = None  # built lazily, per version

    def as_proto(self) -> placement_pb2.RouteTable:
        if self.snapshot is None or self.snapshot.version != self.version:
            ordered = sorted(self.rows.values(), key=itemgetter(2))
            self.snapshot = placement_pb2.RouteTable(
                model=self.model, edge_region=self.region, version=self.version,
                default_slo_ms=self.default_slo_ms, candidates=[r[1] for r in ordered])
        return self.snapshot


class RouteHub:
    def __init__(self, fleet: FleetState, builder: RouteBuilder, regions: list[str],
                 coalesce_s: float = 0.05, clock: Callable[[], float] = time.monotonic,
                 max_build_rows: int = MAX_BUILD_ROWS, urgent_s: float = URGENT_S,
                 estimate_every_s: float = ESTIMATE_EVERY_S) -> None:
        self.fleet = fleet
        self.max_build_rows = max_build_rows
        self.urgent_s = urgent_s
        self.builder = builder
        self.regions = regions
        self.coalesce_s = coalesce_s
        self.clock = clock
        self.version = 0
        self._tables: dict[tuple[str, str], _Table] = {}
        self._snapshots: dict[str, tuple[int, bytes]] = {}  # region -> (version, RouteUpdate)
        self._since: dict[str, tuple[list[RegionPush], int]] = {}  # pushes, rows since it
        self.watchers: set[Watcher] = set()
        self._scheduled: asyncio.Handle | None = None  # the next publish, when one is due
        self._urgent_due: asyncio.Handle | None = None  # the urgent backends' own publish
        self._urgent_since: float | None = None  # when the first of them flipped
        self._first_change_at: float | None = None  # first change not yet published
        self._backlog: set[str] = set()  # changed backends taken from the fleet, not built yet
        self._urgent: set[str] = set()  # backends to rebuild first (usable <-> unusable)
        self._everything = False  # a full rebuild is due (prices, a new edge)
        self._merges = Merges()
        self._reasons: dict[str, int] = {}  # the last rebuild's changed rows by reason
        self.estimate_every_s = estimate_every_s
        self._estimates_due = -math.inf  # learned-only changes wait until then
        self._deferred: set[str] = set()  # backends with learned-only changes not pushed
        self._estimates_timer: asyncio.Handle | None = None
        self.on_push: Callable[[int], None] | None = None  # metrics hook: tables changed
        self.on_published: Callable[[Push], None] | None = None  # metrics hook: rows, latency

    @property
    def tables(self) -> dict[tuple[str, str], placement_pb2.RouteTable]:
        return {k: t.as_proto() for k, t in self._tables.items()}

    @property
    def backlog(self) -> int:
        """Changed backends whose rows are not rebuilt yet (beyond the fleet's dirty set)."""
        return len(self._backlog) + len(self._urgent)

    def _scope(self, max_rows: int | None) -> tuple[bool, set[str]]:
        """(full rebuild?, backends to rebuild now): every change taken from the fleet, or,
        bounded, the urgent backends and then the backlog up to ``max_rows`` rows."""
        everything, dirty = self.fleet.take_dirty()
        if self._deferred and self.clock() >= self._estimates_due:
            dirty, self._deferred = dirty | self._deferred, set()
        self._everything |= everything
        self._backlog |= dirty
        if max_rows is None:
            full, scope = self._everything, self._backlog | self._urgent
            self._everything, self._backlog, self._urgent = False, set(), set()
            return full, scope
        if self._everything:  # in bounded pieces like any backlog: every backend, and
            self._everything = False  # those with rows but no longer registered
            self._backlog |= self.fleet.backends.keys()
            self._backlog.update(b for t in self._tables.values() for b in t.by_backend)
        scope, self._urgent = self._urgent, set()
        self._backlog -= scope
        per_backend = max(1, len(self.builder.catalog.models) * len(self.regions))
        room = (max(1, max_rows // per_backend) if max_rows else 0) - len(scope)
        while room > 0 and self._backlog:
            scope.add(self._backlog.pop())
            room -= 1
        return False, scope

    def rebuild(self, max_rows: int | None = None
                ) -> dict[tuple[str, str], dict[str, placement_pb2.Candidate | None]]:
        """Recompute what changed; returns (model, region) → changed rows (None = removed).
        ``max_rows``: rebuild at most about that many rows (urgent backends always), and
        keep the other changed backends for the next call."""
        everything, dirty = self._scope(max_rows)
        now = self.clock()
        defer = now < self._estimates_due
        self._reasons = {}
        changed: dict[tuple[str, str], dict[str, placement_pb2.Candidate | None]] = {}
        for model, logical in sorted(self.builder.catalog.models.items()):
            for region in self.regions:
                key = (model, region)
                table = self._tables.get(key)
                scope: Collection[str]
                if table is None:
                    table = self._tables[key] = _Table(model, region, logical.default_slo_ms)
                    scope, full = self.fleet.backends.keys(), True
                else:
                    full = everything
                    scope = self.fleet.backends.keys() if full else dirty
                diff = self._diff(table, self.builder.rows(model, region, scope, now),
                                  full, set(scope), self._reasons,
                                  self._deferred if defer and not full else None)
                if diff:
                    changed[key] = diff
        if not DEFERRABLE.isdisjoint(self._reasons):
            self._estimates_due = now + self.estimate_every_s
        self._deferred_due()
        if changed:
            self.version += 1
            for key in changed:
                self._tables[key].version = self.version
        return changed

    def _deferred_due(self) -> None:
        """A publish of the deferred rows once the estimate cadence allows one."""
        if not self._deferred or self._estimates_timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a script, a test): the first rebuild after it
            return
        self._estimates_timer = loop.call_later(
            max(0.0, self._estimates_due - self.clock()), self._publish_estimates)

    def _publish_estimates(self) -> None:
        self._estimates_timer = None
        self.publish(self.max_build_rows)

    @staticmethod
    def _diff(table: _Table, fresh: list[Candidate], full: bool, scope: set[str],
              reasons: dict[str, int], deferred: set[str] | None = None
              ) -> dict[str, placement_pb2.Candidate | None]:
        """The rows of ``fresh`` that changed materially, and those gone. A full rebuild
        (prices, a new edge, the first build) is compared on the fixed bands only: a price
        moves every row's cost at once by less than its jitter band may be. ``deferred``:
        a row whose only change is learned (``bands.judge``: ``HELD``) is not
        pushed now; its backend is added there, rebuilt once the estimate cadence allows."""
        out: dict[str, placement_pb2.Candidate | None] = {}
        seen = set()
        for c in fresh:
            seen.add(c.deployment_id)
            old = table.rows.get(c.deployment_id)
            why, table.jitter[c.deployment_id] = judge(
                None if old is None else old[0], c, table.jitter.get(c.deployment_id),
                fixed_only=full, defer=deferred is not None)
            if why == HELD and deferred is not None:
                deferred.add(c.backend_id)
                continue
            if why:
                reasons[why] = reasons.get(why, 0) + 1
                pb = candidate_to_pb(c)
                table.rows[c.deployment_id] = (c, pb, rank(c))
                table.by_backend.setdefault(c.backend_id, set()).add(c.deployment_id)
                out[c.deployment_id] = pb
        # Rows that are gone: of any backend after a full rebuild, else of those in scope.
        for backend in list(table.by_backend) if full else scope:
            deps = table.by_backend.get(backend, set())
            for dep in [d for d in deps if d not in seen]:
                del table.rows[dep]
                table.jitter.pop(dep, None)
                deps.discard(dep)
                out[dep] = None
                reasons["removed"] = reasons.get("removed", 0) + 1
            if not deps:
                table.by_backend.pop(backend, None)
        return out

    def published(self, region: str) -> list[placement_pb2.RouteTable]:
        """The region's tables as last published (built now if it has none): a new watch's
        snapshot. It is subscribed first, so what changed since reaches it as deltas; no
        rebuild runs inline, so a hundred edges connecting at once cost one serialisation
        (``snapshot_payload``), not a hundred rebuilds: before, placement at 5,000-20,000
        backends took so long over them that gRPC cancelled the watches it had not yet
        accepted (``grpc.server_max_unrequested_time_in_server``, 30 s)."""
        if not any(r == region for (_, r) in self._tables):
            self.publish()
        return [t.as_proto() for (_, r), t in sorted(self._tables.items()) if r == region]

    def snapshot(self, region: str) -> list[placement_pb2.RouteTable]:
        """The region's tables after publishing what changed (a new region's in full; else a
        bounded piece, the rest reaching watchers as deltas): ``GetRouteTables``, Envoy."""
        if self.fleet.dirty or self.fleet.all_dirty or self.backlog:
            self.publish(self.max_build_rows)
        return self.published(region)

    def snapshot_payload(self, region: str, placement_id: str,
                         watcher: Watcher | None = None) -> bytes:
        """The serialised snapshot ``RouteUpdate`` of a region for a new watch: the region as
        published now, in one message. The snapshot is serialised once and kept while what
        was published since stays small (``_replay_rows``); the pushes since, merged and
        serialised once per publish, are appended to it as that message's deltas (two
        serialised messages concatenated parse as one, merged), so a hundred edges
        connecting during a backlog cost one sort and serialisation, not one each.

        Not the kept snapshot alone with the pushes since as the next message: an edge that
        watches again applies each message as it comes, and would route on the older tables
        until the next one (a drained backend routable again after it had learned of the
        drain; ``tests/unit/test_placement_rewatch.py``)."""
        if not any(r == region for (_, r) in self._tables):
            self.publish()
        if watcher is not None:
            watcher.take()  # what was offered so far is in the tables
        cached = self._snapshots.get(region)
        if cached is None:
            cached = self._snapshots[region] = (self.version, placement_pb2.RouteUpdate(
                version=self.version, snapshot=True, tables=self.published(region),
                placement_id=placement_id).SerializeToString())
            self._since[region] = ([], 0)
        pushes = self._since[region][0]
        if not pushes:
            return cached[1]
        since = pushes[0] if len(pushes) == 1 else self._merges.merge(pushes)
        return cached[1] + since.payload(region, placement_id)

    def _replay_rows(self, region: str) -> int:
        """Rows published since a region's kept snapshot past which it is rebuilt instead."""
        rows = sum(len(t.rows) for (_, r), t in self._tables.items() if r == region)
        # A tenth: a new watch replays these pushes, merged for it once more than
        # MAX_PENDING_PUSHES (the merges are shared only until the next publish, and the
        # start-up publishes all the time), while a new snapshot sorts on kept keys.
        return max(1000, rows // 10)

    def publish(self, max_rows: int | None = None) -> None:
        """Rebuild now and offer changed rows to every watcher of their region; with
        ``max_rows``, a bounded piece (``rebuild``) and the next piece scheduled at once."""
        self._scheduled = None
        t0 = time.perf_counter()
        since = self._first_change_at if self._first_change_at is not None else self.clock()
        self._first_change_at = None
        changed = self.rebuild(max_rows)
        if changed:
            self._offer(changed, since, t0)
        if self.backlog:
            self._first_change_at = since
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop to come back on (a script, a test): all of it now
                self.publish()
                return
            # The next piece after as long as this one took: a backlog gets at most half the
            # loop, the other half is for reads, pushes and accepting calls (gRPC accepts one
            # call per loop turn, and cancels one not accepted within 30 s).
            self._scheduled = loop.call_later(time.perf_counter() - t0, self._publish_bounded)

    def _offer(self, changed: dict[tuple[str, str], Rows], since: float, t0: float) -> None:
        self._merges.clear()
        by_region: dict[str, RegionPush] = {}
        for (model, region), rows in changed.items():
            t = self._tables[(model, region)]
            by_region.setdefault(region, RegionPush(self.version, {})).tables[model] = (
                t.version, t.default_slo_ms, rows)
        for region, region_push in by_region.items():  # for the region's kept snapshot
            if region in self._snapshots:
                kept, n = self._since[region]
                n += sum(len(r) for _, _, r in region_push.tables.values())
                if n > self._replay_rows(region):
                    del self._snapshots[region], self._since[region]
                else:
                    self._since[region] = ([*kept, region_push], n)
        for w in self.watchers:
            if (push := by_region.get(w.region)) is not None:
                w.offer(push)
        if self.on_push is not None:
            self.on_push(len(changed))
        if self.on_published is not None:
            self.on_published(Push(changed, self.clock() - since, self._reasons))
        log.debug("routes_published", version=self.version, tables=len(changed),
                  rows=sum(len(r) for r in changed.values()), reasons=self._reasons,
                  build_ms=round((time.perf_counter() - t0) * 1e3, 2))

    def _publish_bounded(self) -> None:
        self.publish(self.max_build_rows)

    def changed(self) -> None:
        """The fleet changed: schedule one coalesced rebuild."""
        if self._first_change_at is None:
            self._first_change_at = self.clock()
        if self._scheduled is not None:
            return
        loop = asyncio.get_running_loop()
        self._scheduled = loop.call_later(self.coalesce_s, self._publish_bounded)

    def urgent(self, *backend_ids: str) -> None:
        """These backends became usable or unusable: their rows go out within ``urgent_s``
        in a publish of their own (``_publish_urgent``), whatever the coalescing or the
        pacing of a backlog would make other changes wait; what else changed follows in the
        scheduled publishes."""
        self._urgent.update(backend_ids)
        if self._urgent_since is None:
            self._urgent_since = self.clock()
        if self._urgent_due is None:
            self._urgent_due = asyncio.get_running_loop().call_later(self.urgent_s,
                                                                     self._publish_urgent)
        self.changed()

    def _publish_urgent(self) -> None:
        """Rebuild and offer the urgent backends' rows only; the fleet's other changes join
        the backlog for the scheduled publishes (one is due: ``urgent`` scheduled it)."""
        self._urgent_due = None
        since, self._urgent_since = self._urgent_since, None
        if not self._urgent:  # a publish took them already
            return
        t0 = time.perf_counter()
        changed = self.rebuild(0)
        if changed:
            self._offer(changed, self.clock() if since is None else since, t0)
        if self.backlog and self._scheduled is None:  # the rest in the paced publishes
            self.changed()

    def subscribe(self, edge_id: str, region: str) -> Watcher:
        """A watcher of ``region``'s tables. A region outside the catalog is refused: each
        watched region is rebuilt on every publish for as long as placement runs, so a peer's
        made-up regions would each add a full table build (``InvalidRequest``)."""
        if region not in self.builder.catalog.regions:
            raise InvalidRequest(f"edge_region {region[:64]!r} is not a region of the "
                                 f"catalog {sorted(self.builder.catalog.regions)}")
        if region not in self.regions:
            self.regions.append(region)
        w = Watcher(edge_id, region, self._merges)
        self.watchers.add(w)
        return w

    def unsubscribe(self, w: Watcher) -> None:
        self.watchers.discard(w)
