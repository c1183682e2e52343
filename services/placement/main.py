"""Run one placement replica: ``switchyard placement --config mesh.toml [--port N]``."""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import structlog

from placement.fleet import FleetState
from placement.prices import PriceCatalog
from placement.routes import RouteBuilder, TableSettings
from services.api.switchyard.v1 import placement_pb2, placement_pb2_grpc
from services.config import MeshConfig
from services.convert import backend_from_pb, backends_from_config, catalog_from_config
from services.discovery.base import Discovery
from services.grpc_errors import AnyHandler, ErrorInterceptor
from services.placement import peer, persist, replicate, shard
from services.placement.hub import RouteHub
from services.placement.metrics import PlacementMetrics
from services.placement.server import PlacementService
from services.prices_file import load_prices
from services.security import authz, transport
from services.serving import add_health_and_reflection, mark_serving, start_metrics
from services.xds.server import AdsServer, serve_ads

if TYPE_CHECKING:
    from services.placement.capacity import CapacityLoop

log = structlog.get_logger("switchyard.placement")
SERVICE_NAME = placement_pb2.DESCRIPTOR.services_by_name["Placement"].full_name


@dataclass
class RunningPlacement:
    server: grpc.aio.Server
    service: PlacementService
    port: int
    follower: asyncio.Task[None] | None = None
    discovery: Discovery | None = None
    ads: AdsServer | None = None  # Envoy edges' xDS, on the same port
    keeper: persist.Keeper | None = None  # learned state, saved for a warm restart
    capacity: CapacityLoop | None = None  # [capacity] enabled: the capacity loop

    async def stop(self, grace: float = 1.0) -> None:
        if self.service.fanout is not None:
            await self.service.fanout.stop()
        if self.capacity is not None:
            await self.capacity.stop()
        if self.keeper is not None:
            await self.keeper.stop()
        if self.ads is not None and self.ads.federation is not None:
            await self.ads.federation.stop()  # its watches of the other shards
        if self.follower is not None:
            self.follower.cancel()
        if self.discovery is not None:
            await self.discovery.close()
        await self.server.stop(grace)


def _serialize(update: placement_pb2.RouteUpdate | bytes) -> bytes:
    return update if isinstance(update, bytes) else update.SerializeToString()


class _Captured:
    """Takes what the generated ``add_PlacementServicer_to_server`` would register."""

    handlers: dict[str, AnyHandler]

    def add_generic_rpc_handlers(self, _: object) -> None:
        pass

    def add_registered_method_handlers(self, _: str, handlers: dict[str, AnyHandler]
                                       ) -> None:
        self.handlers = handlers


def register(service: PlacementService, server: grpc.aio.Server) -> None:
    """The generated registration, except that ``WatchRoutes`` may yield serialised updates:
    each delta is serialised once per region, not once per watching edge."""
    captured = _Captured()
    placement_pb2_grpc.add_PlacementServicer_to_server(service, captured)
    handlers = dict(captured.handlers)
    handlers["WatchRoutes"] = grpc.unary_stream_rpc_method_handler(
        service.WatchRoutes, request_deserializer=placement_pb2.WatchRoutesRequest.FromString,
        response_serializer=_serialize)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME,
                                                                          handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
    service.raw_updates = True


def build_service(cfg: MeshConfig, preregister: bool,
                  owned: shard.Ownership = shard.EVERY_REGION) -> PlacementService:
    """Wire fleet, prices, builder and hub from the config.

    ``preregister`` registers the backends the static config lists (the embedded default),
    so routes exist before agents report; agents re-register with the same data.
    ``owned``: the backend regions this replica owns (a shard's; default every region).
    """
    catalog = catalog_from_config(cfg)
    prices = PriceCatalog(load_prices(cfg.path(cfg.prices_file)))
    fleet = FleetState()
    if preregister:
        for b in backends_from_config(cfg):
            if owned.owns(b.region):
                fleet.register(backend_from_pb(b))
    builder = RouteBuilder(catalog, prices, fleet,
                           TableSettings(cfg.routing.observed_min_samples,
                                         cfg.placement.stale_after_s))
    regions = sorted({e.region for e in cfg.edges} or set(catalog.regions))
    hub = RouteHub(fleet, builder, regions, cfg.placement.coalesce_ms / 1000, time.monotonic)
    metrics = PlacementMetrics()
    metrics.track(fleet.backends, hub.watchers)
    hub.on_push = metrics.pushes.inc
    hub.on_published = metrics.published
    return PlacementService(fleet, prices, builder, hub, metrics, cfg.routing.slo_margin_ms,
                            profile=cfg.routing.profile, spread_band=cfg.routing.spread_band,
                            fail_fast=cfg.routing.fail_fast, shard=owned,
                            peer_rows=shard.peer_rows(
                                cfg, owned.shard,
                                transport.channel_factory(cfg.security, "placement"))
                            if cfg.placement.shards else None)


async def start_placement(cfg: MeshConfig, host: str | None = None, port: int | None = None,
                          metrics_port: int | None = None,
                          preregister: bool = True,
                          learned: pathlib.Path | None = None,
                          peers: Sequence[str] | None = None,
                          shard_address: str | None = None) -> RunningPlacement:
    """``learned``: where this replica keeps what it learned (default
    ``<run_dir>/placement-<port>.learned.json``, see :mod:`services.placement.persist`).
    ``peers``: replicas to fetch learned state from at start (:mod:`services.placement.peer`;
    default: the other configured replicas, when this one is configured; with
    ``placement.shards``, the other replicas of its shard, and it must listen on an address
    a shard lists, or be told which with ``shard_address``: the address a shard lists it as,
    e.g. its shard's Kubernetes Service)."""
    host = host or cfg.placement.host
    address = shard_address or f"{host}:{cfg.placement.port if port is None else port}"
    owned = shard.ownership(cfg, address)
    service = build_service(cfg, preregister and cfg.discovery == "static", owned)
    server = grpc.aio.server(interceptors=[*authz.interceptors(cfg.security), ErrorInterceptor()],
                             options=transport.server_options(cfg.security.limits))
    register(service, server)
    capacity = None
    if cfg.capacity.enabled:  # imported only then: the planner's solver, tritonclient
        from services.placement.capacity_service import start_capacity

        capacity = start_capacity(cfg, service, server)
    ads = serve_ads(server, service, cfg)
    health = add_health_and_reflection(server, [SERVICE_NAME])
    bound = transport.bind(server, host, cfg.placement.port if port is None else port,
                           cfg.security, "placement")
    learned = learned or persist.path_for(cfg.path(cfg.run_dir), bound)
    if peers is None:
        configured = (shard.shard_replicas(cfg, address) if cfg.placement.shards else
                      [f"{cfg.placement.host}:{cfg.placement.port}", *cfg.placement.replicas])
        peers = peer.configured_peers(configured, host, bound)
        if shard_address and not peers:  # behind its shard's Service (the Helm chart): not
            peers = configured  # serving yet, it reaches a ready sibling there, never itself
    await peer.warm_start(service.fleet, learned, peers, service.clock(),  # before 1st build
                          transport.channel_factory(cfg.security, "placement"),
                          service.placement_id)
    if peers:  # an operator's drain made here reaches the other replicas too
        service.fanout = replicate.AvailabilityFanout(
            peers, transport.channel_factory(cfg.security, "placement"), service.placement_id)
    await server.start()
    await mark_serving(health, [SERVICE_NAME])
    if metrics_port is None:  # a shard's replica: its own port from placement.shards
        metrics_port = (shard.metrics_port(cfg, address) if cfg.placement.shards
                        else cfg.placement.metrics_port)
    mport = start_metrics(metrics_port, host, service.metrics.registry)
    service.hub.publish()
    keeper = persist.Keeper(service.fleet, learned, service.clock)
    keeper.start()
    running = RunningPlacement(server, service, bound, ads=ads, keeper=keeper,
                               capacity=capacity)
    if capacity is not None:
        capacity.start()
    if cfg.discovery == "consul":
        from services.discovery import open_discovery
        from services.placement.follow import follow

        running.discovery = open_discovery(cfg, cfg.consul)
        running.follower = asyncio.create_task(follow(running.discovery, service))
        # Edges find placement replicas through the catalog.
        await running.discovery.register_placement(  # type: ignore[attr-defined]
            service.placement_id, f"{host}:{bound}",
            cfg.consul.health_check("grpc", f"{host}:{bound}"),
            shard=shard.shard_key(owned.shard) if owned.shard is not None else "")
    log.info("placement_listening", address=f"{host}:{bound}", metrics_port=mport,
             placement_id=service.placement_id, backends=len(service.fleet.backends),
             discovery=cfg.discovery)
    return running
