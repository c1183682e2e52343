"""Placement's ``RoutingGate``: a variant on a managed instance enters and leaves the route
tables one variant at a time (issue 13).

An instance the capacity loop started is a backend in ``FleetState`` whose ``variants`` are
exactly the variants it has loaded and that are not draining:

- ``start`` (after Triton reported the variant ready) registers the backend with the variant
  added and publishes at once; the edges' slow start warms it;
- ``stop`` registers it without the variant (deregisters the backend when none is left),
  publishes at once, then waits until every watching edge's stream has taken the push and
  ``settle_s`` more for it to arrive, so calls stop being sent before Triton's queue is
  drained and the variant unloaded (:meth:`ModelControl.drain_and_unload`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from placement.catalog import Catalog
from placement.fleet import FleetState
from placement.model import Backend, Variant
from services.capacity.provider import Instance
from services.placement.hub import RouteHub

log = structlog.get_logger("switchyard.capacity")


@dataclass(frozen=True, slots=True)
class PoolSite:
    """Where a pool's instances stand, as a route table needs it."""

    cloud: str
    region: str
    accelerator: str
    price_class: str
    max_concurrency: int


class PlacementGate:
    def __init__(self, fleet: FleetState, hub: RouteHub, catalog: Catalog,
                 sites: Mapping[str, PoolSite], *, settle_s: float = 0.3,
                 push_timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fleet = fleet
        self.hub = hub
        self.catalog = catalog
        self.sites = dict(sites)
        self.settle_s = settle_s
        self.push_timeout_s = push_timeout_s
        self.clock = clock
        # instance id -> (instance, variants in the tables)
        self._routed: dict[str, tuple[Instance, frozenset[str]]] = {}

    def routed(self, instance_id: str) -> frozenset[str]:
        got = self._routed.get(instance_id)
        return got[1] if got is not None else frozenset()

    def routed_instances(self) -> dict[str, tuple[Instance, frozenset[str]]]:
        return dict(self._routed)

    def _variant(self, name: str) -> Variant:
        v = self.catalog.variant(name)
        if v is None:
            raise KeyError(f"variant {name!r} is not in the catalog")
        return v

    def _set(self, instance: Instance, variants: frozenset[str]) -> None:
        if variants:
            site = self.sites[instance.pool]
            self.fleet.register(Backend(
                instance.id, instance.endpoint, site.cloud, site.region, site.accelerator, 1,
                site.price_class, tuple(self._variant(v) for v in sorted(variants)),
                site.max_concurrency))
            self._routed[instance.id] = (instance, variants)
        else:
            self.fleet.deregister(instance.id)
            self._routed.pop(instance.id, None)
        self.hub.publish()  # a capacity change takes effect now, not coalesced

    async def start(self, instance: Instance, variant: str) -> None:
        self._set(instance, self.routed(instance.id) | {variant})
        log.info("capacity.routed", instance=instance.id, variant=variant)

    async def stop(self, instance: Instance, variant: str) -> None:
        self._set(instance, self.routed(instance.id) - {variant})
        t0 = self.clock()
        while any(w.pushes for w in self.hub.watchers):
            if self.clock() - t0 > self.push_timeout_s:
                log.warning("capacity.drain_push_slow", instance=instance.id, variant=variant,
                            waited_s=round(self.clock() - t0, 3))
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(self.settle_s)  # the push is on the wire to each edge
        log.info("capacity.unrouted", instance=instance.id, variant=variant)
