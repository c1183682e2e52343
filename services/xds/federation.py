"""ADS over sharded placement (issue 15, scale-out): one Envoy stream, every shard's rows.

An Envoy edge has one ADS stream, to one placement replica, but with ``[[placement.shards]]``
each shard's replicas hold only the rows of their own regions' backends
(``services/placement/shard.py``). So the replica an Envoy connects to *federates*: for each
region its Envoys subscribe, it watches every other shard's ``WatchRoutes`` as a Python edge
does (one ``PlacementLink`` per shard, failing over among that shard's replicas) into one
``RouteStore`` per region, and applies its own hub's tables to the same store as its own
shard's rows. ``RouteStore``'s per-shard merge (``services/edge/shards.py``) is the only
merge: a shard's snapshot replaces only that shard's rows. The ADS server reads the merged
tables through the surface it reads a hub by (:class:`TableSource`), so the compile, its
coalescing and the sessions are the unsharded ones.

A peer shard that is down keeps its last rows here (static stability, as at a Python edge);
when it comes back its snapshot replaces them and its changes reach Envoy. What Envoy's
access log reports (``feedback.py``) is split by the shard owning each deployment
(``split_by_shard``): this shard's observations go to this replica, another shard's to the
replica of that shard the region's watch is connected to (dropped while none is, as a
Python edge drops a report placement does not take).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import structlog

from services.api.switchyard.v1 import placement_pb2, placement_pb2_grpc, telemetry_pb2
from services.edge.control import PlacementLink
from services.edge.routes import RouteStore
from services.edge.shards import split_by_shard
from services.edge.stats import EdgeStats
from services.placement.hub import RouteHub
from services.placement.watchers import Watcher
from services.security.transport import CLIENT_KEEPALIVE

log = structlog.get_logger("switchyard.xds.federation")

Report = Callable[[telemetry_pb2.ObservationReport], Awaitable[object]]


class TableSource(Protocol):
    """What the ADS server reads route tables through: a ``RouteHub``, or a
    :class:`Federation` of every shard's."""

    @property
    def version(self) -> int: ...

    def snapshot(self, region: str) -> list[placement_pb2.RouteTable]: ...

    def subscribe(self, edge_id: str, region: str) -> Watcher: ...

    def unsubscribe(self, w: Watcher) -> None: ...


@dataclass
class _Region:
    store: RouteStore
    links: dict[str, PlacementLink]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    local_version: int = -1  # the hub version last applied as this shard's rows


class Federation:
    """This replica's hub plus the other shards' rows, per edge region (see module doc)."""

    def __init__(self, hub: RouteHub, own: str, peers: dict[str, list[str]],
                 shard_of: Callable[[str], str], name: str,
                 channel_factory: Callable[..., grpc.aio.Channel] = grpc.aio.insecure_channel
                 ) -> None:
        """``own``: this replica's shard key; ``peers``: every other shard's key → its
        replicas (primary first); ``shard_of``: backend region → shard key; ``name``: the
        edge id this replica watches its peers as."""
        self.hub = hub
        self.own = own
        self.peers = peers
        self.shard_of = shard_of
        self.name = name
        self.peer_updates = 0  # updates applied from other shards (moves ``version``)
        self.forwarded = 0  # observations sent to the shard owning their deployment
        self.dropped = 0  # observations of a shard none of whose replicas was connected
        self._channel_factory = channel_factory
        self._regions: dict[str, _Region] = {}
        self._watchers: set[Watcher] = set()
        self._channels: dict[str, grpc.aio.Channel] = {}  # forwarding, by replica
        self._link_channels: list[grpc.aio.Channel] = []  # the watches', closed at stop

    @property
    def version(self) -> int:
        """Moves whenever this hub publishes or a peer shard's update arrives."""
        return self.hub.version + self.peer_updates

    def start(self, regions: list[str]) -> None:
        """Watch the peers for ``regions`` now (else on the first Envoy of a region)."""
        for region in regions:
            self.region(region)

    def region(self, region: str) -> _Region:
        r = self._regions.get(region)
        if r is None:
            store = RouteStore(region, None, shard_of=self.shard_of)
            links = {key: PlacementLink(self.name, region, replicas, store, EdgeStats(),
                                        functools.partial(self._peer_update, region),
                                        channel_factory=self._dial, shard=key)
                     for key, replicas in self.peers.items()}
            r = self._regions[region] = _Region(store, links)
            r.tasks = [asyncio.create_task(link.watch()) for link in links.values()]
        return r

    def _dial(self, address: str, options: object = ()) -> grpc.aio.Channel:
        ch = self._channel_factory(address, options=options)
        self._link_channels.append(ch)
        return ch

    def connected(self, region: str) -> bool:
        """Every peer shard of ``region`` is watched (for tests and status)."""
        r = self._regions.get(region)
        return r is not None and all(link.connected for link in r.links.values())

    def snapshot(self, region: str) -> list[placement_pb2.RouteTable]:
        """The region's merged tables: this hub's rows (re-applied when it published) and
        every other shard's last rows."""
        r = self.region(region)
        tables = self.hub.snapshot(region)
        if r.local_version != self.hub.version:
            # A new RouteUpdate copies the hub's tables: the store's merge edits what it
            # holds, and the hub keeps its published tables for its own watchers.
            r.store.apply(placement_pb2.RouteUpdate(snapshot=True, tables=tables),
                          shard=self.own)
            r.local_version = self.hub.version
        return [r.store.tables[m] for m in sorted(r.store.tables)]

    def subscribe(self, edge_id: str, region: str) -> Watcher:
        self.region(region)
        w = self.hub.subscribe(edge_id, region)
        self._watchers.add(w)
        return w

    def unsubscribe(self, w: Watcher) -> None:
        self._watchers.discard(w)
        self.hub.unsubscribe(w)

    def _peer_update(self, region: str) -> None:
        self.peer_updates += 1
        for w in self._watchers:
            if w.region == region:
                w.wake.set()

    def report(self, local: Report) -> Report:
        """``local`` (this replica's ``ReportObservations``) for this shard's observations
        of an Envoy's report; the rest forwarded to the shard owning each deployment."""
        async def forward(report: telemetry_pb2.ObservationReport) -> object:
            r = self.region(report.edge_region)
            by_shard = split_by_shard(r.store, list(report.observations))
            sent: list[Awaitable[None]] = []
            elsewhere: set[str] = set()
            for key, obs in by_shard.items():
                link = r.links.get(key)
                if link is None:  # this shard's own (or an unsharded region's)
                    continue
                elsewhere.update(o.deployment_id for o in obs)
                if link.connected:
                    sent.append(self._send(link.connected_to, report, obs))
                else:
                    self.dropped += len(obs)
            await asyncio.gather(*sent)
            mine = [o for o in report.observations if o.deployment_id not in elsewhere]
            return await local(telemetry_pb2.ObservationReport(
                edge_id=report.edge_id, edge_region=report.edge_region, observations=mine))
        return forward

    async def _send(self, address: str, report: telemetry_pb2.ObservationReport,
                    obs: list[telemetry_pb2.Observation]) -> None:
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = self._channel_factory(address,
                                                                 options=CLIENT_KEEPALIVE)
        try:
            await placement_pb2_grpc.PlacementStub(ch).ReportObservations(
                telemetry_pb2.ObservationReport(edge_id=report.edge_id,
                                                edge_region=report.edge_region,
                                                observations=obs), timeout=2.0)
            self.forwarded += len(obs)
        except grpc.aio.AioRpcError as exc:
            self.dropped += len(obs)
            log.debug("observations_not_forwarded", placement=address, error=exc.code().name)

    async def stop(self) -> None:
        tasks = [t for r in self._regions.values() for t in r.tasks]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for ch in [*self._channels.values(), *self._link_channels]:
            await ch.close()
