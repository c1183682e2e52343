"""Placement follows a ``Discovery`` (Consul in multi-cloud deployments).

Healthy backends in the catalog are registered, ones that left or fail their check are
deregistered, and prices from KV are applied; every change is one route push. A stale view
(Consul unreachable) changes nothing: routing keeps the last known fleet.
"""

from __future__ import annotations

import structlog

from services.convert import backend_from_pb, price_from_pb
from services.discovery.base import Discovery
from services.placement.server import PlacementService

log = structlog.get_logger("switchyard.placement.discovery")


async def follow(discovery: Discovery, service: PlacementService) -> None:
    known: set[str] = set()
    async for state in discovery.watch():
        if state.stale:
            log.warning("discovery_stale", source=state.source,
                        action="keeping the last known fleet; retrying with backoff")
            continue
        # A shard's replica follows only its regions' backends (services/placement/shard.py).
        healthy = {b.id: b for b in state.healthy_backends() if service.shard.owns(b.region)}
        for b in healthy.values():
            service.fleet.register(backend_from_pb(b))
        for gone in known - healthy.keys():
            service.fleet.deregister(gone)
            log.info("backend_left_catalog", backend=gone)
        known = set(healthy)
        if state.prices:
            service.prices.upsert(price_from_pb(p) for p in state.prices)
            service.fleet.version += 1
            service.fleet.all_dirty = True
        log.info("discovery_applied", source=state.source, backends=len(healthy),
                 prices=len(state.prices))
        service.hub.publish()
