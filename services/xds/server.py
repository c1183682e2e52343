"""Placement's ADS server: Envoy edges subscribe over xDS and get their region's config.

Both ADS variants are served: ``DeltaAggregatedResources`` (what the bootstrap asks for) and
``StreamAggregatedResources`` (state of the world). Each Envoy stream is a ``WatchRoutes``
watcher of the same ``RouteHub`` (so it sees exactly the tables Python edges see, coalesced
the same way) plus a session (``session.py``). When the hub publishes a change for the
stream's region, or Envoy (un)subscribes, ACKs or NACKs, the stream compiles the region's
tables (``compiles.py``: on one worker thread, once per hub version, shared by every Envoy
of the region; between publishes every ``learn_every_s`` while the region's access log
taught placement something, ``learning.py``) and sends what changed per resource type,
clusters first, a new deployment cluster alone and what names it only once Envoy has warmed
it (``pushes.py``). With
``[[placement.shards]]`` the tables are read through a ``federation.Federation`` instead of
the hub: this shard's rows merged with every other shard's, and the access log's
observations forwarded to the shard owning each deployment.

The node says who it is in its bootstrap: ``node.id`` is the edge id, ``node.cluster`` its
region, and ``node.metadata`` holds ``listen_host``/``listen_port`` for the listener placement
pushes back (``services.edge.envoy.bootstrap``) and, when the Envoy has a co-located Python
edge for the slow path, ``slow_path_port``: that node also gets the ``slow-path`` cluster and
a listener whose Lua sends streams and hinted calls there; ``envoy_filters: module`` when its
Envoy loads the C dynamic module (``native.py``), whose filter then replaces the listener Lua.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import math
import re
from collections import deque
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
from services.edge.shards import shard_key, shard_lookup
from services.grpc_errors import abort
from services.placement.server import PlacementService
from services.security.authz import PLACEMENT, AuthzPolicy
from services.security.identity import peer_identities
from services.security.transport import channel_factory
from services.xds import native
from services.xds.compiles import COMPILE_SHARE, RegionCompiles, _Inputs
from services.xds.federation import Federation, TableSource
from services.xds.feedback import AccessLogFeedback
from services.xds.learning import RegionLearning
from services.xds.listener import tenant_sans
from services.xds.pushes import WARM_HOLD_S, PushOrder
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
from services.xds.returns import Returns
from services.xds.session import Delta, DeltaSession, SotwSession

log = structlog.get_logger("switchyard.xds")
ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
ALS_METHOD = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"
REPORT_METHOD = PLACEMENT + "ReportObservations"  # the rule the access log is held to
Session = DeltaSession | SotwSession


NODE_CACHE_MAX = 256  # listeners, slow-path clusters: kept for this many node addresses


def _bounded(cache: dict[Any, Any], key: object = None) -> dict[Any, Any]:
    """``cache`` with room for one more entry: its oldest dropped while it holds
    ``NODE_CACHE_MAX`` (``key``, an entry about to be replaced, needs no room)."""
    while len(cache) >= NODE_CACHE_MAX and key not in cache:
        del cache[next(iter(cache))]
    return cache


# xds-protos ships no stubs: its servicer base is Any to mypy.
class AdsServer(RegionCompiles,
                ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, hub: TableSource, profile: Profile, settings: EnvoySettings,
                 learn_every_s: float = TIME_CONSTANT_S,
                 compile_share: float = COMPILE_SHARE) -> None:
        self.hub = hub  # a RouteHub, or a Federation of every shard's (``federation.py``)
        self.federation: Federation | None = hub if isinstance(hub, Federation) else None
        self.profile = profile
        self.settings = settings
        self.sessions: set[Session] = set()
        self.pushes = 0
        self.pushed_bytes = 0  # serialized responses, for the push-cost benchmark
        self.on_reply: Callable[[Session], None] | None = None  # hook: Envoy ACKed or NACKed
        self.warm_hold_s = WARM_HOLD_S  # longest wait for Envoy to warm new clusters
        self.warm_waits: deque[float] = deque(maxlen=1000)  # seconds each such wait lasted
        self.feedback: AccessLogFeedback | None = None  # Envoy's calls, as observations
        # what the access log taught placement of each region (fed by ``feedback``)
        self.learning = RegionLearning()
        # between hub publishes, a region is recompiled this often with what it learned
        self.learn_every_s = learn_every_s
        # when each region's deployments came back: their slow-start shares (``returns.py``)
        self.returns = Returns(settings.slow_start_s)
        self._init_compiles(compile_share)
        # Per node address, built once: at most NODE_CACHE_MAX each (``_bounded``), the
        # oldest forgotten first, so Envoys connecting with ever new ports cost a rebuild,
        # never unbounded memory.
        self._listeners: dict[tuple[str, int, str, bool, bool], Resource] = {}
        self._module_clusters = native.ModuleClusters()  # as nodes loading the module get them
        self._slow_path: dict[int, Resource] = {}
        # (region, slow-path port) -> (region's clusters, with the slow path, their delta)
        self._with_slow_path: dict[tuple[str, int], tuple[
            dict[str, Resource], dict[str, Resource], Delta | None]] = {}

    def _compile(self, region: str, inputs: _Inputs) -> RegionConfig:
        """The region compiled from ``inputs``, with the slow-start shares of what came
        back (``returns.py``: its rows are looked at here, off the loop)."""
        tables = inputs.tables()
        with self._compile_lock:
            learned = inputs.learned
            if self.returns.ramp_s > 0:
                self.returns.observe(region, [(t.model, t.candidates) for t in tables],
                                     inputs.at)
                learned = dataclasses.replace(learned,
                                              warming=self.returns.shares(region, inputs.at))
            return compile_region(region, tables, self.profile, self.settings, learned,
                                  cache=self.cache)

    def offer(self, region: str, host: str, port: int, slow_path_port: int = 0,
              rc: RegionConfig | None = None, module: bool = False
              ) -> dict[str, dict[str, Resource]]:
        rc = rc or self.region_config(region)
        clusters = rc.clusters
        if slow_path_port:  # the region's clusters and this node's slow path, kept per port
            key = (region, slow_path_port)
            kept = self._with_slow_path.get(key)
            if kept is None or kept[0] is not clusters:
                slow = self._slow_path.get(slow_path_port)
                if slow is None:
                    slow = _bounded(self._slow_path)[slow_path_port] = resource(
                        SLOW_PATH_CLUSTER, slow_path_cluster(slow_path_port, self.settings))
                merged = {**clusters, SLOW_PATH_CLUSTER: slow}
                d = self._compiled[region].delta if region in self._compiled else None
                # the region's delta, as this node holds it (the slow path on both sides)
                delta = (None if kept is None or d is None or d.before is not kept[0]
                         or d.after is not clusters
                         else Delta(kept[1], merged, d.changed, d.gone))
                kept = _bounded(self._with_slow_path, key)[key] = (clusters, merged, delta)
            clusters = kept[1]
        if module:  # its aggregates' upstream rewrite is the module's too (native.py)
            clusters = self._module_clusters.offer((region, slow_path_port), clusters)
        lkey = (host, port, region, bool(slow_path_port), module)
        ingress = self._listeners.get(lkey)
        if ingress is None:  # ``module``: the node loads the C dynamic module (native.py)
            ingress = _bounded(self._listeners)[lkey] = resource(
                LISTENER_NAME, listener(host, port, region, self.settings,
                                        slow_path=bool(slow_path_port), module=module))
        return {CLUSTER: clusters, LISTENER: {LISTENER_NAME: ingress}, ROUTE: rc.routes}

    def cluster_delta(self, region: str, slow_path_port: int,
                      offered: dict[str, Resource], module: bool = False) -> Delta | None:
        """The region's last change of clusters as this node is offered them, for the
        sessions' shortcut; None when it is not known. ``module``: as a node that loads the
        C dynamic module is offered them (``native.ModuleClusters``)."""
        if module:
            key = (region, slow_path_port)
            source = self._module_clusters.source(key, offered)
            d = None if source is None else self.cluster_delta(region, slow_path_port, source)
            before = None if d is None else self._module_clusters.previous(key, d.before)
            return None if d is None or before is None else Delta(before, offered, d.changed,
                                                                  d.gone)
        if slow_path_port:
            kept = self._with_slow_path.get((region, slow_path_port))
            return kept[2] if kept is not None and kept[1] is offered else None
        cached = self._compiled.get(region)
        return cached.delta if cached is not None and cached.delta.after is offered else None

    async def DeltaAggregatedResources(  # noqa: N802 (the xDS method name)
            self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
            context: grpc.aio.ServicerContext[
                discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse],
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        try:  # ErrorInterceptor maps no bidirectional stream's errors: the node's are here
            async for resp in self._serve(request_iterator, DeltaSession):
                yield resp
        except InvalidRequest as exc:
            await abort(context, exc)

    async def StreamAggregatedResources(  # noqa: N802 (the xDS method name)
            self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
            context: grpc.aio.ServicerContext[
                discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse],
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        try:
            async for resp in self._serve(request_iterator, SotwSession):
                yield resp
        except InvalidRequest as exc:
            await abort(context, exc)

    async def _serve(self, request_iterator: AsyncIterator[Any],
                     make_session: Callable[[str, str], Session]) -> AsyncIterator[Any]:
        """One Envoy stream: requests in, pushes out whenever they or the region's tables
        change; the stream's session decides what each push carries."""
        first = await anext(request_iterator, None)
        if first is None:
            return
        region, host, port, slow_port = _node_placement(first.node)
        module = native.node_loads_module(first.node.metadata.fields)
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
                await asyncio.sleep(self.relearn_wait_s(region))
                if self.relearn_due(region):
                    kick.set()

        tasks = [asyncio.create_task(read()), asyncio.create_task(follow()),
                 asyncio.create_task(relearn())]
        log.info("xds_stream_open", node=session.node_id, region=region,
                 listen=f"{host}:{port}", slow_path_port=slow_port,
                 filters="module" if module else "lua",
                 protocol=type(session).__name__)
        order = PushOrder(session, self.warm_hold_s)
        loop = asyncio.get_running_loop()
        try:
            while not closed.is_set() or inbox:
                hold = order.wait_s(loop.time())
                if hold is None:
                    await kick.wait()
                else:  # for Envoy's answer to new clusters, or the hold's end (``pushes.py``)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(kick.wait(), hold)
                kick.clear()
                asked = self.hub.version
                replied = any(req.response_nonce for req in inbox)
                for req in inbox:
                    session.receive(req)
                    if (waited := order.receive(req, loop.time())) is not None:
                        self.warm_waits.append(waited)
                inbox.clear()
                if replied and self.on_reply is not None:
                    self.on_reply(session)
                if (hold := order.wait_s(loop.time())) is not None and hold > 0:
                    continue  # the region's changes wait for the new clusters to warm
                rc = await self.region_config_async(region)
                if self.stale(region, asked) and not closed.is_set():
                    kick.set()  # woken after the compile this push is from began: again
                offered = self.offer(region, host, port, slow_port, rc, module)
                delta = self.cluster_delta(region, slow_port, offered[CLUSTER], module)
                for resp in order.pushes(offered, str(self.hub.version), delta, loop.time()):
                    self.pushes += 1
                    self.pushed_bytes += resp.ByteSize()
                    log.debug("xds_push", node=session.node_id, type_url=resp.type_url,
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
                     acks=session.replies.acks, nacks=session.replies.nack_count)


def _node_placement(node: object) -> tuple[str, str, int, int]:
    """(region, listen host, listen port, slow-path port or 0) from the node the Envoy
    bootstrap declares."""
    region = getattr(node, "cluster", "")
    fields = node.metadata.fields  # type: ignore[attr-defined]
    who = f"Envoy node {getattr(node, 'id', '')[:128]!r}"
    host = fields["listen_host"].string_value if "listen_host" in fields else "127.0.0.1"
    port = _port(fields, "listen_port", who)
    slow = _port(fields, "slow_path_port", who)
    if not region or not port:
        raise InvalidRequest(f"{who} must set cluster (its region) and metadata.listen_port; "
                             f"got cluster={region[:64]!r}, listen_port={port}")
    if not _LISTEN_HOST.fullmatch(host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise InvalidRequest(f"{who} metadata.listen_host {host[:64]!r} is not an IP "
                                 "address or a host name") from None
    return region, host, port, slow


_LISTEN_HOST = re.compile(r"[A-Za-z0-9._-]{1,253}")


def _port(fields: Any, name: str, who: str) -> int:
    """``metadata.<name>``: a port 1..65535, or 0 when absent (a NaN, a fraction or a port
    out of range is refused, not passed to int() or to Envoy's listener)."""
    if name not in fields:
        return 0
    value = fields[name].number_value
    if not (value == int(value) if math.isfinite(value) else False) or not 0 <= value <= 65535:
        raise InvalidRequest(f"{who} metadata.{name} {value!r} is not a port 1..65535")
    return int(value)


def add_ads(server: grpc.aio.Server, hub: TableSource, profile: Profile,
            settings: EnvoySettings) -> AdsServer:
    """Serve ADS on ``server`` (placement's own port) from ``hub``."""
    ads = AdsServer(hub, profile, settings)
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    return ads


def envoy_settings(cfg: MeshConfig) -> EnvoySettings:
    """What the compiled config takes from ``cfg``: routing profile margins, message limit,
    attempts, ejection, and ``[security]`` (TLS, client certificates, tenants, the limits on
    connections: streams per connection, idle and aged connections) and, with
    ``[edge] envoy_slow_start`` (off), ``[edge] slow_start_s`` as the slow-start ramp."""
    sec = cfg.security
    return EnvoySettings(max_message_bytes=cfg.edge.max_message_bytes,
                         max_attempts=cfg.edge.max_attempts,
                         retry_budget_percent=cfg.edge.retry_budget_ratio * 100,
                         eject_consecutive_failures=cfg.edge.eject_consecutive_failures,
                         eject_base_s=cfg.edge.eject_base_s,
                         slo_margin_ms=cfg.routing.slo_margin_ms,
                         deadline_margin_ms=cfg.routing.deadline_margin_ms,
                         tls=sec.tls, client_certs=sec.edge_client_certs,
                         tenants=bool(sec.tenants), require_tenant=sec.require_tenant,
                         tenant_sans=tenant_sans(sec),
                         max_concurrent_streams=sec.limits.max_concurrent_streams,
                         idle_connection_timeout_s=sec.limits.idle_connection_timeout_s,
                         max_connection_age_s=sec.limits.max_connection_age_s,
                         max_metadata_bytes=sec.limits.max_metadata_bytes,
                         max_metadata_count=sec.limits.max_metadata_count,
                         slow_start_s=cfg.edge.slow_start_s if cfg.edge.envoy_slow_start else 0.0)


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
