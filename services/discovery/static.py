"""StaticDiscovery: the fleet from the mesh TOML file; the embedded default and the fake.

Backends, placement replicas and prices come from ``MeshConfig`` and the prices file it
names; tenant policies are passed in. :meth:`register` / :meth:`deregister` change an
in-memory overlay (what an agent would announce), so the same object serves as the
in-process fake of :class:`~services.discovery.consul.ConsulDiscovery` in tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from services.api.switchyard.v1 import fleet_pb2
from services.config import MeshConfig
from services.convert import backends_from_config
from services.discovery.base import BackendEntry, DiscoveryState, HealthCheck
from services.discovery.broadcast import StateBroadcast
from services.discovery.documents import load_prices_file, merge_prices
from services.placement.shard import configured_shards


def placement_endpoints_from_config(config: MeshConfig) -> list[str]:
    """``placement.host:port`` first, then the configured extra replicas, without repeats."""
    first = f"{config.placement.host}:{config.placement.port}"
    return list(dict.fromkeys([first, *config.placement.replicas]))


class StaticDiscovery:
    """Discovery from fixed lists; changes only through :meth:`register` / :meth:`deregister`."""

    def __init__(self, backends: Iterable[fleet_pb2.Backend], prices: Iterable[fleet_pb2.Price],
                 placement: Iterable[str], policies: Mapping[str, Mapping[str, Any]] | None = None,
                 shards: Mapping[str, list[str]] | None = None) -> None:
        """``shards``: shard key → replicas (``placement.shards``); none: one unsharded
        placement at ``placement``."""
        self._backends = {b.id: b for b in backends}
        self._placement = list(placement)
        self._shards = {k: list(v) for k, v in (shards or {}).items()}
        self._broadcast = StateBroadcast(DiscoveryState(
            backends=self._entries(), prices=merge_prices(prices),
            policies=dict(policies or {}), version=1, source="static"))

    @classmethod
    def from_config(cls, config: MeshConfig,
                    policies: Mapping[str, Mapping[str, Any]] | None = None) -> StaticDiscovery:
        """Build from the mesh config; reads the prices file it names (ConfigError if bad)."""
        return cls(backends_from_config(config), load_prices_file(config.path(config.prices_file)),
                   placement_endpoints_from_config(config), policies, configured_shards(config))

    def _entries(self) -> tuple[BackendEntry, ...]:
        return tuple(BackendEntry(self._backends[k]) for k in sorted(self._backends))

    def _publish(self) -> None:
        self._broadcast.publish(dataclasses.replace(self._broadcast.state,
                                                    backends=self._entries()))

    async def snapshot(self) -> DiscoveryState:
        return self._broadcast.state

    def watch(self) -> AsyncIterator[DiscoveryState]:
        return self._broadcast.watch()

    async def register(self, backend: fleet_pb2.Backend, check: HealthCheck) -> None:
        """Add or replace ``backend``; the check is not run (the file's backends are trusted)."""
        del check
        self._backends[backend.id] = backend
        self._publish()

    async def deregister(self, backend_id: str) -> None:
        self._backends.pop(backend_id, None)
        self._publish()

    async def set_prices(self, prices: Iterable[fleet_pb2.Price]) -> None:
        """Replace the price list (a config reload, or a test standing in for KV)."""
        self._broadcast.publish(dataclasses.replace(self._broadcast.state,
                                                    prices=merge_prices(prices)))

    async def placement_endpoints(self) -> list[str]:
        return list(self._placement)

    async def placement_shards(self) -> dict[str, list[str]]:
        return ({k: list(v) for k, v in self._shards.items()} if self._shards
                else {"": list(self._placement)})

    async def close(self) -> None:
        self._broadcast.close()
