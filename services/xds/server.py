"""Placement's ADS server: Envoy edges subscribe over xDS and get their region's config.

Both ADS variants are served: ``DeltaAggregatedResources`` (what the bootstrap asks for) and
``StreamAggregatedResources`` (state of the world). Each Envoy stream is a ``WatchRoutes``
watcher of the same ``RouteHub`` (so it sees exactly the tables Python edges see, coalesced
the same way) plus a session (``session.py``). When the hub publishes a change for the
stream's region, or Envoy (un)subscribes, ACKs or NACKs, the stream compiles the region's
tables (once per hub version, shared by every Envoy of the region; between publishes every
``learn_every_s`` while the region's access log taught placement something,
``learning.py``) and sends what changed per resource type, clusters first. With
``[[placement.shards]]`` the tables are read through a ``federation.Federation`` instead of
the hub: this shard's rows merged with every other shard's, and the access log's
observations forwarded to the shard owning each deployment.

The node says who it is in its bootstrap: ``node.id`` is the edge id, ``node.cluster`` its
region, and ``node.metadata`` holds ``listen_host``/``listen_port`` for the listener placement
pushes back (``services.edge.envoy.bootstrap``) and, when the Envoy has a co-located Python
edge for the slow path, ``slow_path_port``: that node also gets the ``slow-path`` cluster and
a listener whose Lua sends streams and hinted calls there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import structlog
from envoy.service.accesslog.v3 import als_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from placement.edge_learning import TIME_CONSTANT_S
from placement.errors import InvalidRequest
from placement.pipeline import Profile
from placement.registry import build_profile
from services.api.switchyard.v1 import telemetry_pb2
from services.config import MeshConfig
from services.convert import candidate_from_pb
from services.edge.shards import shard_key, shard_lookup
from services.placement.server import PlacementService
from services.security.authz import PLACEMENT, AuthzPolicy
from services.security.identity import peer_identities
from services.security.transport import channel_factory
from services.xds.federation import Federation, TableSource
from services.xds.feedback import AccessLogFeedback
from services.xds.learning import RegionLearning
from services.xds.resources import (
    CLUSTER,
    LISTENER,
    LISTENER_NAME,
    ROUTE,
    SLOW_PATH_CLUSTER,
    EnvoySettings,
    RegionConfig,
    Resource,
    compile_region,
    listener,
    resource,
    slow_path_cluster,
)
from services.xds.session import DeltaSession, SotwSession

log = structlog.get_logger("switchyard.xds")
ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
ALS_METHOD = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"
REPORT_METHOD = PLACEMENT + "ReportObservations"  # the rule the access log is held to
Session = DeltaSession | SotwSession


# xds-protos ships no stubs: its servicer base is Any to mypy.
class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, hub: TableSource, profile: Profile, settings: EnvoySettings,
                 learn_every_s: float = TIME_CONSTANT_S) -> None:
        self.hub = hub  # a RouteHub, or a Federation of every shard's (``federation.py``)
        self.federation: Federation | None = hub if isinstance(hub, Federation) else None
        self.profile = profile
        self.settings = settings
        self.sessions: set[Session] = set()
        self.pushes = 0
        self.pushed_bytes = 0  # serialized responses, for the push-cost benchmark
        self.on_reply: Callable[[Session], None] | None = None  # hook: Envoy ACKed or NACKed
        self.feedback: AccessLogFeedback | None = None  # Envoy's calls, as observations
        # what the access log taught placement of each region (fed by ``feedback``)
        self.learning = RegionLearning()
        # between hub publishes, a region is recompiled this often with what it learned
        self.learn_every_s = learn_every_s
        self._compiled: dict[str, tuple[int, float, RegionConfig]] = {}  # version, at, config

    def region_config(self, region: str) -> RegionConfig:
        """The region's compiled config, rebuilt only when the hub published (so an ACK does
        not make the hub publish early: its coalescing holds for Envoy edges too), with what
        the region's access log taught placement since the last compile (``learning``)."""
        cached = self._compiled.get(region)
        if cached is not None and cached[0] == self.hub.version and not self.relearn_due(region):
            return cached[2]
        tables = self.hub.snapshot(region)
        cands = {c.deployment_id: candidate_from_pb(c) for t in tables for c in t.candidates}
        compiled = compile_region(region, tables, self.profile, self.settings,
                                  self.learning.learned(region, cands))
        self.learning.compiled(region, compiled.models)
        self._compiled[region] = (self.hub.version, self.learning.clock(), compiled)
        return compiled

    def relearn_due(self, region: str) -> bool:
        """Recompile the region between publishes: ``learn_every_s`` since its last compile
        and something learned (or to decay) since."""
        cached = self._compiled.get(region)
        return (cached is not None and self.learning.stale(region)
                and self.learning.clock() - cached[1] >= self.learn_every_s)

    def offer(self, region: str, host: str, port: int,
              slow_path_port: int = 0) -> dict[str, dict[str, Resource]]:
        rc = self.region_config(region)
        clusters = rc.clusters
        if slow_path_port:
            clusters = {**clusters, SLOW_PATH_CLUSTER: resource(
                SLOW_PATH_CLUSTER, slow_path_cluster(slow_path_port, self.settings))}
        ingress = resource(LISTENER_NAME, listener(host, port, region, self.settings,
                                                   slow_path=bool(slow_path_port)))
        return {CLUSTER: clusters, LISTENER: {LISTENER_NAME: ingress}, ROUTE: rc.routes}

    async def DeltaAggregatedResources(  # noqa: N802 (the xDS method name)
            self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
            context: grpc.aio.ServicerContext[
                discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse],
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        async for resp in self._serve(request_iterator, DeltaSession):
            yield resp

    async def StreamAggregatedResources(  # noqa: N802 (the xDS method name)
            self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
            context: grpc.aio.ServicerContext[
                discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse],
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        async for resp in self._serve(request_iterator, SotwSession):
            yield resp

    async def _serve(self, request_iterator: AsyncIterator[Any],
                     make_session: Callable[[str, str], Session]) -> AsyncIterator[Any]:
        """One Envoy stream: requests in, pushes out whenever they or the region's tables
        change; the stream's session decides what each push carries."""
        first = await anext(request_iterator, None)
        if first is None:
            return
        region, host, port, slow_port = _node_placement(first.node)
        session = make_session(first.node.id, region)
        watcher = self.hub.subscribe(first.node.id, region)
        self.sessions.add(session)
        inbox = [first]
        kick = asyncio.Event()
        kick.set()
        closed = asyncio.Event()

        async def read() -> None:
            try:
                async for req in request_iterator:
                    inbox.append(req)
                    kick.set()
            finally:
                closed.set()
                kick.set()

        async def follow() -> None:
            while True:
                await watcher.wake.wait()
                watcher.take()  # the rows themselves are re-read from the hub's tables
                kick.set()

        async def relearn() -> None:  # a periodic timer, not a wait for a condition
            while True:
                await asyncio.sleep(self.learn_every_s)
                if self.relearn_due(region):
                    kick.set()

        tasks = [asyncio.create_task(read()), asyncio.create_task(follow()),
                 asyncio.create_task(relearn())]
        clusters: dict[str, Resource] = {}  # the clusters of the last push
        log.info("xds_stream_open", node=session.node_id, region=region,
                 listen=f"{host}:{port}", slow_path_port=slow_port,
                 protocol=type(session).__name__)
        try:
            while not closed.is_set() or inbox:
                await kick.wait()
                kick.clear()
                replied = any(req.response_nonce for req in inbox)
                for req in inbox:
                    session.receive(req)
                inbox.clear()
                if replied and self.on_reply is not None:
                    self.on_reply(session)
                offered = self.offer(region, host, port, slow_port)
                # Make before break: new clusters (kept beside the ones they replace) before
                # the listener and routes that name them; clusters no route names, last.
                steps = [(CLUSTER, {**clusters, **offered[CLUSTER]}),
                         (LISTENER, offered[LISTENER]), (ROUTE, offered[ROUTE]),
                         (CLUSTER, offered[CLUSTER])]
                clusters = offered[CLUSTER]
                for t, resources in steps:
                    resp = session.push(t, resources, str(self.hub.version))
                    if resp is not None:
                        self.pushes += 1
                        self.pushed_bytes += resp.ByteSize()
                        log.debug("xds_push", node=session.node_id, type_url=t,
                                  nonce=resp.nonce, resources=len(resp.resources))
                        yield resp
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self.hub.unsubscribe(watcher)
            self.sessions.discard(session)
            log.info("xds_stream_closed", node=session.node_id, region=region,
                     acks=session.replies.acks, nacks=len(session.replies.nacks))


def _node_placement(node: object) -> tuple[str, str, int, int]:
    """(region, listen host, listen port, slow-path port or 0) from the node the Envoy
    bootstrap declares."""
    region = getattr(node, "cluster", "")
    fields = node.metadata.fields  # type: ignore[attr-defined]
    host = fields["listen_host"].string_value if "listen_host" in fields else "127.0.0.1"
    port = int(fields["listen_port"].number_value) if "listen_port" in fields else 0
    slow = int(fields["slow_path_port"].number_value) if "slow_path_port" in fields else 0
    if not region or not port:
        raise InvalidRequest(f"Envoy node {getattr(node, 'id', '')!r} must set cluster (its "
                             f"region) and metadata.listen_port; got cluster={region!r}, "
                             f"listen_port={port}")
    return region, host, port, slow


def add_ads(server: grpc.aio.Server, hub: TableSource, profile: Profile,
            settings: EnvoySettings) -> AdsServer:
    """Serve ADS on ``server`` (placement's own port) from ``hub``."""
    ads = AdsServer(hub, profile, settings)
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    return ads


def envoy_settings(cfg: MeshConfig) -> EnvoySettings:
    """What the compiled config takes from ``cfg``: routing profile margins, message limit,
    attempts, ejection, and ``[security]`` (TLS, client certificates, tenants, the limits on
    connections: streams per connection, idle and aged connections)."""
    sec = cfg.security
    return EnvoySettings(max_message_bytes=cfg.edge.max_message_bytes,
                         max_attempts=cfg.edge.max_attempts,
                         eject_consecutive_failures=cfg.edge.eject_consecutive_failures,
                         eject_base_s=cfg.edge.eject_base_s,
                         slo_margin_ms=cfg.routing.slo_margin_ms,
                         deadline_margin_ms=cfg.routing.deadline_margin_ms,
                         tls=sec.tls, client_certs=sec.edge_client_certs,
                         tenants=bool(sec.tenants), require_tenant=sec.require_tenant,
                         max_concurrent_streams=sec.limits.max_concurrent_streams,
                         idle_connection_timeout_s=sec.limits.idle_connection_timeout_s,
                         max_connection_age_s=sec.limits.max_connection_age_s)


class GuardedAccessLog(AccessLogFeedback):
    """The access-log service under TLS: what an Envoy logs becomes ``ReportObservations``,
    so the stream is held to that RPC's rule (``security.authz``: the edge role when
    ``edge_identities`` is set, any verified identity otherwise), checked once per stream."""

    def __init__(self, policy: AuthzPolicy, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy

    async def StreamAccessLogs(  # noqa: N802 (the ALS method name)
            self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
        ids = peer_identities(context)
        denied = self.policy.check(REPORT_METHOD, ids)
        if denied is not None:
            log.warning("access_log_denied", identity=list(ids), code=denied.code.name,
                        reason=denied.reason)
            await context.abort(denied.code, f"{ALS_METHOD}: {denied.reason}")
        return await super().StreamAccessLogs(request_iterator, context)


def serve_ads(server: grpc.aio.Server, service: PlacementService, cfg: MeshConfig) -> AdsServer:
    """ADS for ``cfg``'s mesh (``envoy_settings``), and the access-log service that turns
    Envoy's calls into observations (under TLS, only from identities that may report them).
    ADS itself is open to any verified identity, as ``WatchRoutes`` is: placement's port
    takes no connection without a client certificate under TLS."""
    tables: TableSource = service.hub if not cfg.placement.shards else federate(service, cfg)
    ads = add_ads(server, tables,
                  build_profile(cfg.routing.profile, cfg.routing.spread_band), envoy_settings(cfg))

    async def local(obs: telemetry_pb2.ObservationReport) -> object:
        return await service.ReportObservations(obs, None)  # type: ignore[arg-type]

    report = local if ads.federation is None else ads.federation.report(local)

    args = (report, cfg.edge.report_interval_s, cfg.routing.observed_min_samples,
            service.metrics.registry)
    ads.feedback = (AccessLogFeedback(*args) if cfg.security.plaintext else
                    GuardedAccessLog(AuthzPolicy.from_settings(cfg.security), *args))
    ads.feedback.learning = ads.learning
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(ads.feedback, server)
    return ads


def federate(service: PlacementService, cfg: MeshConfig) -> Federation:
    """The tables of every shard for this replica's Envoy edges (``federation.py``); the
    regions of the config's Envoy edges are watched from the start."""
    own = service.shard.shard
    peers = {shard_key(i): list(s.replicas) for i, s in enumerate(cfg.placement.shards)
             if i != own}
    federation = Federation(service.hub, shard_key(own if own is not None else -1), peers,
                            shard_lookup(cfg), f"{service.placement_id}/ads-federation",
                            channel_factory(cfg.security, "placement"))
    if cfg.edge.engine == "envoy":
        federation.start(sorted({e.region for e in cfg.edges}))
    return federation
