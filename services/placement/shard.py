"""Placement replicas that share the fleet by backend region (issue 15, scale-out).

With ``[[placement.shards]]`` in the mesh file, each shard owns a disjoint set of backend
regions and is served by its own replicas (the first is the primary, the rest standbys).
A replica of a shard registers and ingests only backends in its regions, and so builds,
for every (model, edge region), the rows of its own backends; an edge watches one replica
of every shard and merges the rows of a table (``services/edge/shards.py``). Without
shards (the default) one replica owns every backend, as before.

This module answers, from the config, which regions a replica at an address owns and which
peers share its shard; ``Ownership.check`` refuses a backend of another shard.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from placement.errors import ConfigError
from placement.model import Candidate
from services.api.switchyard.v1 import placement_pb2, placement_pb2_grpc
from services.config import MeshConfig
from services.convert import candidate_from_pb


@dataclass(frozen=True)
class Ownership:
    """The backend regions one replica owns; ``regions is None``: every region."""

    regions: frozenset[str] | None = None
    shard: int | None = None

    def owns(self, region: str) -> bool:
        return self.regions is None or region in self.regions

    def check(self, backend_id: str, region: str) -> None:
        if not self.owns(region):
            raise ConfigError(
                f"backend {backend_id!r} is in region {region!r}, which this placement "
                f"replica (placement.shards[{self.shard}], regions "
                f"{sorted(self.regions or ())}) does not own; send it to the replicas of the "
                "shard that owns that region")


_LOCAL = ("127.0.0.1", "localhost", "0.0.0.0")


def shard_key(index: int) -> str:
    """How a shard is named on the wire and in the catalog (``placement.shards[index]``)."""
    return f"shards[{index}]"


def configured_shards(cfg: MeshConfig) -> dict[str, list[str]]:
    """Shard key → its replicas (host:port, primary first), from the config."""
    return {shard_key(i): list(s.replicas) for i, s in enumerate(cfg.placement.shards)}


EVERY_REGION = Ownership()  # an unsharded replica


def _me(address: str) -> set[str]:
    """The addresses a replica listening on ``address`` answers as (a local one: any)."""
    host, _, port = address.rpartition(":")
    return {address, *(f"{h}:{port}" for h in _LOCAL)} if host in _LOCAL else {address}


def _shard_index(cfg: MeshConfig, address: str) -> int:
    me = _me(address)
    for i, shard in enumerate(cfg.placement.shards):
        if me & set(shard.replicas):
            return i
    listed = [a for s in cfg.placement.shards for a in s.replicas]
    raise ConfigError(f"placement at {address!r} is in no placement.shards[].replicas "
                      f"{listed}; with shards configured every replica must be listed")


def ownership(cfg: MeshConfig, address: str) -> Ownership:
    """What the replica listening on ``address`` (host:port) owns."""
    if not cfg.placement.shards:
        return EVERY_REGION
    i = _shard_index(cfg, address)
    return Ownership(frozenset(cfg.placement.shards[i].regions), i)


def metrics_port(cfg: MeshConfig, address: str) -> int:
    """The /metrics port ``placement.shards[].metrics_ports`` gives the replica at
    ``address`` (0: none)."""
    s = cfg.placement.shards[_shard_index(cfg, address)]
    if not s.metrics_ports:
        return 0
    me = _me(address)
    return s.metrics_ports[next(j for j, a in enumerate(s.replicas) if a in me)]


def shard_replicas(cfg: MeshConfig, address: str) -> list[str]:
    """The replicas of the shard ``address`` serves (itself included), for peer warm starts."""
    return list(cfg.placement.shards[_shard_index(cfg, address)].replicas)


def ads_replicas(cfg: MeshConfig, region: str) -> list[str]:
    """Where an Envoy edge of ``region`` takes its one ADS stream: the replicas of the shard
    owning the region (each federates every other shard's rows, ``services/xds/federation``),
    or every shard's replicas when no shard owns it (an edge region without backends)."""
    owner = [s.replicas for s in cfg.placement.shards if region in s.regions]
    return list(owner[0]) if owner else [a for s in cfg.placement.shards for a in s.replicas]


def owning_shards(cfg: MeshConfig, kind: str, target: str) -> list[int]:
    """The shards a drain of ``kind`` (backend, region or cloud) ``target`` concerns: the one
    owning the backend's or the region's backends, every one owning a region of the cloud.
    An unknown target concerns every shard (each answers NOT_FOUND as one placement does)."""
    regions = ({b.region for b in cfg.backends if b.id == target} if kind == "backend" else
               {target} if kind == "region" else
               {r.name for r in cfg.regions if r.cloud == target})
    owners = [i for i, s in enumerate(cfg.placement.shards) if regions & set(s.regions)]
    return owners or list(range(len(cfg.placement.shards)))


PeerRows = Callable[[str, str], Awaitable[tuple[list[Candidate], list[str]]]]


def peer_rows(cfg: MeshConfig, own: int | None,
              channel_factory: Callable[..., grpc.aio.Channel] = grpc.aio.insecure_channel,
              timeout_s: float = 2.0) -> PeerRows:
    """``(model, edge region) -> (the other shards' rows of that table, the shards none of
    whose replicas answered)``: what an edge merges beside this replica's own rows, asked of
    each other shard's replicas in order (``GetRouteTables``), for ``Explain`` to explain
    the whole table an edge routes on rather than this shard's part of it."""
    peers = {shard_key(i): list(s.replicas) for i, s in enumerate(cfg.placement.shards)
             if i != own}

    async def one(replicas: list[str], region: str) -> list[placement_pb2.RouteTable] | None:
        for address in replicas:
            channel = channel_factory(address)
            try:
                resp = await placement_pb2_grpc.PlacementStub(channel).GetRouteTables(
                    placement_pb2.GetRouteTablesRequest(edge_region=region), timeout=timeout_s)
                return list(resp.tables)
            except grpc.RpcError:
                continue
            finally:
                await channel.close()
        return None

    async def rows(model: str, region: str) -> tuple[list[Candidate], list[str]]:
        keys = sorted(peers)
        answers = await asyncio.gather(*(one(peers[k], region) for k in keys))
        out: list[Candidate] = []
        missing = []
        for key, tables in zip(keys, answers, strict=True):
            if tables is None:
                missing.append(key)
                continue
            out += [candidate_from_pb(c) for t in tables if t.model == model
                    for c in t.candidates]
        return out, missing

    return rows
