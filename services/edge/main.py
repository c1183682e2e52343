"""Run one edge router: ``switchyard edge --config mesh.toml --id edge-us-east``."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from placement.errors import SwitchyardError
from placement.registry import PROFILES, build_profile
from services import logs
from services.api.switchyard.v1 import edge_pb2, edge_pb2_grpc, placement_pb2
from services.config import EdgeConfig, MeshConfig
from services.edge import deadline, explain
from services.edge.accesslog import AccessLog
from services.edge.budget import RetryBudget
from services.edge.control import HealthChecker, PlacementLink
from services.edge.health import HealthView
from services.edge.outlier import OutlierSettings
from services.edge.router import Router, RouterSettings
from services.edge.routes import RouteStore
from services.edge.service import SERVICE, InferenceService
from services.edge.shards import ShardedLink, catalog_shards, shard_lookup
from services.edge.stats import EdgeStats
from services.edge.upstream import Upstreams
from services.grpc_errors import AnyContext, abort
from services.placement.shard import configured_shards
from services.security import transport
from services.security.tenants import TenantGate
from services.security.xfcc import ForwardedCerts, certificate_identities
from services.serving import add_health_and_reflection, mark_serving, start_metrics

log = structlog.get_logger("switchyard.edge")
ADMIN = edge_pb2.DESCRIPTOR.services_by_name["EdgeAdmin"].full_name
# Room for what an Envoy edge adds to a call it sends its slow path in that gRPC server's
# header-list limit (x-forwarded-client-cert, a hash and the client certificate's subject and
# names, is the largest): its Envoy's listener holds the caller's own list to
# max_metadata_bytes, and the tenant gate holds a call's list without Envoy's headers to it
# again, in the listener's words. Held to max_metadata_bytes with them, a stream or a tenant's
# call within ~200 bytes of the limit passed the listener and the slow path's gRPC refused it:
# 'received metadata size exceeds hard limit (8225 vs. 8192)' (tests/integration/
# test_hostile_round8.py).
ENVOY_HEADER_BYTES = 4096
# What an Envoy edge adds, uncounted on its slow path against max_metadata_count as its
# listener (native/rules.c sy_metadata_refusal) counts the caller's own: x-request-id (Envoy's
# own when the caller sent none), x-forwarded-proto, x-forwarded-client-cert and the
# slow-path route's deadline headers. Counted, a call the listener let through with 64
# entries was refused there as 'call carries 68 metadata entries (limit 64)', and a tenant's
# with 63 and its credential too (tests/integration/test_hostile_round7.py). Each with the
# bytes of it uncounted against max_metadata_bytes, together ENVOY_HEADER_BYTES: the
# listener counted x-request-id's (0 here); of the others what Envoy writes (a scheme, two
# numbers: 'x-switchyard-envoy-start: 1795832033.744256' is a 73-byte entry, 64 was short
# (review9); the certificate), past that the caller's, so a direct caller of the slow path
# gets no more room under those names than the listener gives (review8).
ENVOY_HEADERS: dict[str, int] = {
    "x-request-id": 0, "x-forwarded-proto": 64, deadline.START_HEADER: 80,
    deadline.TIMEOUT_HEADER: 80, "x-forwarded-client-cert": ENVOY_HEADER_BYTES - 64 - 2 * 80}


class EdgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter("switchyard_edge_calls_total", "Calls answered",
                             ["model", "deployment", "status"], registry=self.registry)
        self.latency = Histogram("switchyard_edge_call_seconds", "Call latency at the edge",
                                 ["model"], registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
        self.attempts = Counter("switchyard_edge_attempts_total", "Upstream attempts",
                                ["model"], registry=self.registry)
        self.slo_calls = Counter("switchyard_edge_slo_calls_total",
                                 "Calls with an SLO, by whether each met its own (met: answered "
                                 "OK within it)", ["model", "met"], registry=self.registry)
        self.ejections = Counter("switchyard_edge_ejections_total", "Outlier ejections",
                                 ["deployment"], registry=self.registry)
        self.backend_ejections = Counter(
            "switchyard_edge_backend_ejections_total",
            "Outlier ejections of a whole backend (timeouts, lost connections): every "
            "deployment on it", ["backend"], registry=self.registry)
        self.streams_given_up = Counter(
            "switchyard_edge_streams_given_up_total",
            "Stream attempts given up: silent on a backend the health checks find unreachable",
            ["backend"], registry=self.registry)
        self.inflight = Gauge(
            "switchyard_edge_inflight",
            "Inference calls the edge is serving now, from the moment its handler takes one to "
            "the moment it ends, however it ends", ["kind"], registry=self.registry)
        self.stream_tokens = Counter(
            "switchyard_edge_stream_tokens_total",
            "Stream tokens as the x-tokens-in / x-tokens-out trailers count them (a stream "
            "that is not an LLM's: its responses out)", ["model", "direction"],
            registry=self.registry)
        self.stage = Histogram("switchyard_edge_pipeline_stage_seconds",
                               "Routing pipeline stage time (sampled)", ["stage", "plugin"],
                               registry=self.registry,
                               buckets=(1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 1e-3))


@dataclass
class RunningEdge:
    server: grpc.aio.Server
    router: Router
    link: PlacementLink | ShardedLink
    checker: HealthChecker  # active checks; the health view itself is router.health
    port: int
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    health_servicer: Any = None
    gate: TenantGate | None = None
    metrics: EdgeMetrics | None = None  # its /metrics series (tests read them here too)

    def reload_policies(self, cfg: MeshConfig) -> None:
        """Tenant policies from a re-read config take effect for the next call."""
        if self.gate is not None:
            self.gate.reload(cfg.security)
        log.info("policies_reloaded", tenants=len(cfg.security.tenants))

    async def stop(self, grace: float = 1.0, drain_s: float = 0.0) -> None:
        """Graceful: report NOT_SERVING (load balancers stop sending), keep serving for
        ``drain_s``, then stop accepting and let in-flight calls finish within ``grace``;
        the upstream streams the edge let go of (``Upstreams.drain``: their callers left, or
        the grace ended them) get another ``grace`` to end before they are cancelled."""
        if self.health_servicer is not None and drain_s > 0:
            await self.health_servicer.enter_graceful_shutdown()
            await asyncio.sleep(drain_s)
        await self.server.stop(grace)
        for t in self.tasks:
            t.cancel()
        await self.router.upstreams.close(grace)


class EdgeAdminService(edge_pb2_grpc.EdgeAdminServicer):
    """``EdgeAdmin``: where tenants are required, a caller's credential is checked first, as
    for the edge's control RPCs (``tenants.OPEN_RPCS``: none of these is a probe)."""

    def __init__(self, edge_id: str, router: Router, link: PlacementLink | ShardedLink,
                 inference: InferenceService) -> None:
        self.edge_id, self.router, self.link = edge_id, router, link
        self.inference = inference

    async def _credential(self, context: AnyContext) -> None:
        try:
            self.inference.credential(context)
        except SwitchyardError as exc:
            await abort(context, exc)

    async def Status(self, request: edge_pb2.EdgeStatusRequest,
                     context: grpc.aio.ServicerContext[
                         edge_pb2.EdgeStatusRequest, edge_pb2.EdgeStatusResponse],
                     ) -> edge_pb2.EdgeStatusResponse:
        await self._credential(context)
        r = self.router
        resp = edge_pb2.EdgeStatusResponse(
            edge_id=self.edge_id, region=r.store.region, routes_version=r.store.version,
            placement_connected=self.link.connected, routes_source=r.store.source,
            tables=list(r.store.tables.values()))
        unusable = r.health.view().unusable
        for dep in sorted(r.store.deployment_ids()):
            s = r.stats.by_deployment.get(dep)
            resp.deployments.append(edge_pb2.DeploymentHealth(
                deployment_id=dep, ejected=dep in unusable,
                ejected_for_s=r.health.ejected_for(dep, dep.split("/", 1)[0]),
                calls=s.calls if s else 0,
                failures=s.failures if s else 0, p95_ms=r.stats.p95.get(dep, 0.0)))
        return resp

    async def Explain(self, request: placement_pb2.ExplainRequest,
                      context: AnyContext) -> placement_pb2.ExplainResponse:
        await self._credential(context)
        return await explain.handle(self.router, request, context)  # LLM streams


async def _catalog_replicas(cfg: MeshConfig, configured: list[str]) -> list[str]:
    """Placement replicas from the Consul catalog first, then the configured ones."""
    from services.discovery import ask_catalog

    found: list[str] = await ask_catalog(
        cfg, lambda d: d.placement_endpoints(), [], "using the configured placement replicas")
    return [*found, *(r for r in configured if r not in found)]


def make_dialer(cfg: MeshConfig, region: str) -> Callable[[str], str]:
    """Backend endpoint → address to dial: the emulated-WAN relay for remote regions."""
    if not cfg.wan.emulate:
        return lambda endpoint: endpoint
    from services.backends.wan import relay_routes

    relays = {r.target: f"127.0.0.1:{r.listen_port}" for r in relay_routes(cfg)
              if r.edge_region == region}
    return lambda endpoint: relays.get(endpoint, endpoint)


async def start_edge(cfg: MeshConfig, edge: EdgeConfig, port: int | None = None,
                     placement: list[str] | None = None, metrics_port: int | None = None,
                     dial: Callable[[str], str] | None = None,
                     forwarded_certs: bool = False) -> RunningEdge:
    """``forwarded_certs``: this edge is an Envoy edge's slow path and, over TLS, reads a
    caller's client certificate from what its Envoy forwards (``security/xfcc.py``)."""
    rt = cfg.edge
    metrics = EdgeMetrics()
    store = RouteStore(edge.region, cfg.path(cfg.run_dir) / f"{edge.id}.routes.pb",
                       shard_of=shard_lookup(cfg))
    store.load()
    stats = EdgeStats(cfg.routing.observed_min_samples)

    def on_eject(dep: str, s: float) -> None:
        metrics.ejections.labels(dep).inc()
        log.warning("deployment_ejected", deployment=dep, for_s=s)

    def on_backend_eject(backend: str, s: float) -> None:
        metrics.backend_ejections.labels(backend).inc()
        log.warning("backend_ejected", backend=backend, for_s=s)

    health = HealthView(
        store, OutlierSettings(rt.eject_consecutive_failures, rt.eject_base_s,
                               max_share=rt.eject_max_share,
                               failure_rate=rt.eject_failure_rate,
                               min_requests=rt.eject_min_requests,
                               interval_s=rt.eject_interval_s),
        rt.slow_start_s,
        on_eject=on_eject, on_backend_eject=on_backend_eject)
    observer = lambda stage, plugin, s: metrics.stage.labels(stage, plugin).observe(s)  # noqa: E731
    profiles = {n: build_profile(n, cfg.routing.spread_band, observer) for n in PROFILES}
    upstreams = Upstreams(dial or make_dialer(cfg, edge.region), rt.max_message_bytes)
    access_log = AccessLog(metrics.calls, metrics.latency, metrics.attempts,
                           enabled=logs.enabled("info"),
                           known_model=lambda model: model in store.candidates,
                           slo_calls=metrics.slo_calls, stream_tokens=metrics.stream_tokens)
    router = Router(store, upstreams, health, stats,
                    RetryBudget(rt.retry_budget_ratio, rt.retry_budget_min_per_s), profiles,
                    frozenset(r.name for r in cfg.regions),
                    RouterSettings(cfg.routing.slo_margin_ms, cfg.routing.deadline_margin_ms,
                                   rt.max_attempts, cfg.routing.fail_fast,
                                   cfg.routing.profile, rt.hedge_max_slo_ms),
                    access_log.done)
    def table_changed() -> None:
        health.table_changed()
        access_log.retain(store.deployment_ids())

    replicas = placement or [f"{cfg.placement.host}:{cfg.placement.port}",
                             *cfg.placement.replicas]
    if placement is None and cfg.discovery == "consul":
        replicas = await _catalog_replicas(cfg, replicas)
    link: PlacementLink | ShardedLink
    if cfg.placement.shards and placement is None:  # one watch per shard (issue 15)
        shards = (await catalog_shards(cfg) if cfg.discovery == "consul"
                  else configured_shards(cfg))
        link = ShardedLink(edge.id, edge.region, shards, store, stats,
                           on_update=table_changed, report_interval_s=rt.report_interval_s,
                           channel_factory=transport.channel_factory(cfg.security, "edge"),
                           streams=router.streams)
    else:
        link = PlacementLink(edge.id, edge.region, replicas, store, stats,
                             on_update=table_changed,
                             report_interval_s=rt.report_interval_s,
                             channel_factory=transport.channel_factory(cfg.security, "edge"),
                             streams=router.streams)
    checker = HealthChecker(store, upstreams, health, link, rt.health_interval_s,
                            stalls=router.stalls,
                            given_up=lambda b, n: metrics.streams_given_up.labels(b).inc(n),
                            call_stalls=router.call_stalls)
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", transport.receive_limit(rt.max_message_bytes)),
        ("grpc.max_send_message_length", rt.max_message_bytes),
        ("grpc.so_reuseport", 1),
        *transport.server_options(cfg.security.limits,
                                  ENVOY_HEADER_BYTES if forwarded_certs else 0),
    ])
    gate = TenantGate(cfg.security, {r.name: r.cloud for r in cfg.regions},
                      uncounted=ENVOY_HEADERS if forwarded_certs else None)
    forwarded = (ForwardedCerts(frozenset(certificate_identities(
        cfg.security.cert_for("edge")[0]))) if forwarded_certs and cfg.security.tls else None)
    inference = InferenceService(router, gate=gate, max_message_bytes=rt.max_message_bytes,
                                 forwarded=forwarded, inflight=metrics.inflight)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        SERVICE, inference.handlers()),))
    edge_pb2_grpc.add_EdgeAdminServicer_to_server(
        EdgeAdminService(edge.id, router, link, inference), server)
    hs = add_health_and_reflection(server, [SERVICE, ADMIN])
    bound = transport.bind(server, edge.host, edge.port if port is None else port, cfg.security,
                           "edge", require_client_auth=cfg.security.edge_client_certs)
    await server.start()
    await mark_serving(hs, [SERVICE, ADMIN])
    mport = start_metrics(edge.metrics_port if metrics_port is None else metrics_port,
                          edge.host, metrics.registry)
    running = RunningEdge(server, router, link, checker, bound, health_servicer=hs, gate=gate,
                          metrics=metrics)
    running.tasks = [asyncio.create_task(link.watch()), asyncio.create_task(link.report()),
                     asyncio.create_task(checker.run()), asyncio.create_task(access_log.run())]
    log.info("edge_listening", edge=edge.id, region=edge.region,
             address=f"{edge.host}:{bound}", metrics_port=mport, placement=replicas,
             routes_from=store.source)
    return running


def route_file(cfg: MeshConfig, edge_id: str) -> pathlib.Path:
    return cfg.path(cfg.run_dir) / f"{edge_id}.routes.pb"
