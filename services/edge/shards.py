"""An edge of a sharded placement (issue 15, scale-out): one watch per shard, one table.

With ``[[placement.shards]]`` each shard's replicas hold the rows of the backends in the
regions it owns (``services/placement/shard.py``). The edge runs one ``PlacementLink`` per
shard (each fails over among its shard's replicas as before) into one ``RouteStore``
whose ``shard_of`` says which shard a row's backend region belongs to: a shard's snapshot
replaces only its own rows, so the table of a (model, edge region) is the merge of every
shard's rows (rows are keyed by deployment id and shards are disjoint) and the pipeline
ranks them per call as before. Observations are taken once per interval and each goes to
the shard owning its deployment's backend. Losing one shard keeps its last rows (static
stability), like losing the only placement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import structlog

from services.api.switchyard.v1 import telemetry_pb2
from services.config import MeshConfig
from services.edge.control import PlacementLink
from services.edge.routes import RouteStore
from services.edge.stats import EdgeStats
from services.edge.token_stats import StreamStats
from services.placement.shard import configured_shards, shard_key

log = structlog.get_logger("switchyard.edge")

__all__ = ["ShardedLink", "catalog_shards", "region_shards", "shard_key", "shard_lookup",
           "split_by_shard"]


def region_shards(cfg: MeshConfig) -> dict[str, str]:
    """Backend region → the key of the shard that owns it."""
    return {r: shard_key(i) for i, s in enumerate(cfg.placement.shards) for r in s.regions}


def shard_lookup(cfg: MeshConfig) -> Callable[[str], str]:
    """``RouteStore.shard_of`` for this config (unsharded: every region is shard "")."""
    owners = region_shards(cfg)
    return lambda region: owners.get(region, "")


async def catalog_shards(cfg: MeshConfig) -> dict[str, list[str]]:
    """Every shard's replicas as the Consul catalog lists them (each replica registers with
    its shard), then the configured ones; the configured ones alone when Consul cannot say."""
    from services.discovery import ask_catalog

    configured = configured_shards(cfg)
    found: dict[str, list[str]] = await ask_catalog(
        cfg, lambda d: d.placement_shards(), {}, "using the configured placement shards")
    return {key: [*found.get(key, []), *(r for r in replicas if r not in found.get(key, []))]
            for key, replicas in configured.items()}


class ShardedLink:
    """The ``PlacementLink`` surface an edge uses (``watch``, ``report``, ``connected``,
    ``rtt_ms``) over one link per shard."""

    def __init__(self, edge_id: str, region: str, shards: dict[str, list[str]],
                 store: RouteStore, stats: EdgeStats, on_update: Callable[[], None],
                 report_interval_s: float = 2.0,
                 channel_factory: Callable[..., grpc.aio.Channel] = grpc.aio.insecure_channel,
                 streams: StreamStats | None = None) -> None:
        """``shards``: shard key → its replicas (host:port, primary first)."""
        self.store = store
        self.report_interval_s = report_interval_s
        self.rtt_ms: dict[str, float] = {}  # backend id -> last health-check round trip
        self.links = {key: PlacementLink(edge_id, region, replicas, store, stats, on_update,
                                         report_interval_s, channel_factory, streams,
                                         shard=key)
                      for key, replicas in shards.items()}

    @property
    def connected(self) -> bool:
        """Every shard is watched (a shard lost leaves its rows as last pushed)."""
        return all(link.connected for link in self.links.values())

    @property
    def connected_to(self) -> str:
        return ",".join(link.connected_to for link in self.links.values() if link.connected)

    async def watch(self) -> None:
        await asyncio.gather(*(link.watch() for link in self.links.values()))

    async def report(self) -> None:
        """Forever: one set of observations per interval, each to its deployment's shard."""
        first = next(iter(self.links.values()))
        while True:
            await asyncio.sleep(self.report_interval_s)
            obs = first.observations(self.rtt_ms)
            if any(link.connected for link in self.links.values()):
                first.add_streams(obs)
            by_shard = self.split(obs)
            await asyncio.gather(*(link.send(by_shard[key])
                                   for key, link in self.links.items()
                                   if link.connected and by_shard.get(key)))

    def split(self, obs: list[telemetry_pb2.Observation]
              ) -> dict[str, list[telemetry_pb2.Observation]]:
        return split_by_shard(self.store, obs)


def split_by_shard(store: RouteStore, obs: list[telemetry_pb2.Observation]
                   ) -> dict[str, list[telemetry_pb2.Observation]]:
    """Observations by the shard owning each deployment's backend region, as ``store``'s
    tables place it (a deployment the tables no longer hold has no owner and is dropped).
    Also what placement's ADS federation forwards Envoy's access log by
    (``services/xds/federation.py``)."""
    region = {c.backend_id: c.region for cs in store.candidates.values() for c in cs}
    out: dict[str, list[telemetry_pb2.Observation]] = {}
    for o in obs:
        backend_region = region.get(o.deployment_id.split("/", 1)[0])
        if backend_region is not None:
            out.setdefault(store.shard_of(backend_region), []).append(o)
    return out
