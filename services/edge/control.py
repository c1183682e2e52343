"""The edge's background work, off the call path.

- ``PlacementLink``: watches route tables (any placement replica; on loss, the next one,
  with jittered backoff) and reports what the edge observed (latency and call rates per
  deployment; for LLM streams, the token speeds and token costs ``StreamStats`` learned).
  Losing placement changes nothing for calls: the edge keeps routing on its last table
  (static stability).
- ``HealthChecker``: active ``ServerReady`` checks of every backend in the tables, reported
  to the health view (``health.py``), which blocks a backend failing ``unhealthy_after``
  checks in a row until one passes. Each check's round trip is an RTT sample reported to
  placement.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Protocol

import grpc
import structlog
from tritonclient.grpc import service_pb2

from services.api.switchyard.v1 import placement_pb2, placement_pb2_grpc, telemetry_pb2
from services.convert import stream_seen_to_pb
from services.edge.health import HealthView
from services.edge.routes import RouteStore
from services.edge.stalls import StallWatch
from services.edge.stats import EdgeStats
from services.edge.token_stats import StreamStats
from services.edge.upstream import Upstreams
from services.security.transport import CLIENT_KEEPALIVE

log = structlog.get_logger("switchyard.edge")


class RttSink(Protocol):
    """Where health checks leave each backend's round trip (a link reports them)."""

    rtt_ms: dict[str, float]


class PlacementLink:
    def __init__(self, edge_id: str, region: str, replicas: list[str], store: RouteStore,
                 stats: EdgeStats, on_update: Callable[[], None],
                 report_interval_s: float = 2.0,
                 channel_factory: Callable[..., grpc.aio.Channel] = grpc.aio.insecure_channel,
                 streams: StreamStats | None = None, shard: str | None = None) -> None:
        """``shard``: the placement shard these replicas serve (``services/edge/shards.py``
        runs one link per shard); None: they serve every row."""
        self.edge_id = edge_id
        self.shard = shard
        self.streams = streams
        self.region = region
        self.replicas = replicas
        self.store = store
        self.stats = stats
        self.on_update = on_update
        self.report_interval_s = report_interval_s
        self.connected = False
        self.connected_to = ""
        self.rtt_ms: dict[str, float] = {}  # backend id -> last health-check round trip
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._channel_factory = channel_factory

    def _stub(self, address: str) -> placement_pb2_grpc.PlacementStub:
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = self._channel_factory(address,
                                                                 options=CLIENT_KEEPALIVE)
        return placement_pb2_grpc.PlacementStub(ch)

    async def watch(self) -> None:
        """Forever: follow route updates from whichever replica answers."""
        backoff, i = 0.1, 0
        while True:
            address = self.replicas[i % len(self.replicas)]
            try:
                call = self._stub(address).WatchRoutes(placement_pb2.WatchRoutesRequest(
                    edge_id=self.edge_id, edge_region=self.region,
                    known_version=self.store.version))
                async for update in call:
                    if not self.connected:
                        log.info("placement_connected", placement=address,
                                 replica=update.placement_id)
                    self.connected, self.connected_to, backoff = True, address, 0.1
                    self.store.apply(update, shard=self.shard)
                    self.on_update()
                    await asyncio.to_thread(self.store.persist)
                exc: Exception = ConnectionError("WatchRoutes stream ended")
            except grpc.aio.AioRpcError as err:
                exc = err
            if self.connected:
                log.warning("placement_lost", placement=address, error=str(exc)[:200],
                            action="routing on the last table; retrying other replicas")
            self.connected = False
            i += 1
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 2.0)

    async def report(self) -> None:
        """Forever: refresh observed quantiles and send them to the connected replica."""
        while True:
            await asyncio.sleep(self.report_interval_s)
            obs = self.observations(self.rtt_ms)
            if self.connected:  # stream windows wait for a placement to take them
                self.add_streams(obs)
            if not self.connected or not obs:
                continue
            await self.send(obs)

    def observations(self, rtt_ms: dict[str, float]) -> list[telemetry_pb2.Observation]:
        """The edge's observations since the last call (each window is taken once)."""
        snapshot = self.stats.refresh()
        return [telemetry_pb2.Observation(
            deployment_id=dep, edge_region=self.region, samples=n, failures=f,
            p50_ms=p50, p95_ms=p95,
            rtt_ms=rtt_ms.get(dep.split("/", 1)[0], 0.0),
            calls_per_s=round(calls / self.report_interval_s, 2))
            for dep, (n, f, p50, p95, calls) in snapshot.items()]

    async def send(self, obs: list[telemetry_pb2.Observation]) -> None:
        """Observations to the replica this link watches (dropped on failure)."""
        try:
            await self._stub(self.connected_to).ReportObservations(
                telemetry_pb2.ObservationReport(edge_id=self.edge_id,
                                                edge_region=self.region,
                                                observations=obs), timeout=2.0)
        except grpc.aio.AioRpcError as exc:
            log.debug("observations_not_sent", error=exc.code().name)


    def add_streams(self, obs: list[telemetry_pb2.Observation]) -> None:
        """What the edge learned of LLM streams, on each deployment's observation."""
        if self.streams is None:
            return
        by_dep = {o.deployment_id: o for o in obs}
        for dep, seen in self.streams.report().items():
            o = by_dep.get(dep)
            if o is None:
                o = by_dep[dep] = telemetry_pb2.Observation(deployment_id=dep,
                                                            edge_region=self.region)
                obs.append(o)
            o.streams.CopyFrom(stream_seen_to_pb(seen))


class HealthChecker:
    """The I/O of active health checks; the verdicts (and what they block) are the health
    view's (``HealthView.checked``)."""

    def __init__(self, store: RouteStore, upstreams: Upstreams, health: HealthView,
                 link: RttSink, interval_s: float = 0.25, timeout_s: float = 0.5,
                 stalls: StallWatch | None = None,
                 given_up: Callable[[str, int], None] = lambda backend, n: None,
                 call_stalls: StallWatch | None = None) -> None:
        """``stalls``: the stream attempts to give up on a backend found unreachable;
        ``given_up(backend, n)`` when ``n`` of them were (a metric); ``call_stalls``: the
        unary attempts to give up there (logged)."""
        self.store = store
        self.upstreams = upstreams
        self.health = health
        self.link = link
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.stalls = stalls
        self.given_up = given_up
        self.call_stalls = call_stalls

    async def run(self) -> None:
        while True:
            await self.check_all()
            self.health.tick()
            await asyncio.sleep(self.interval_s)

    async def check_all(self) -> None:
        endpoints = self.store.endpoints()
        await asyncio.gather(*(self.check(b, ep) for b, ep in endpoints.items()))

    async def check(self, backend_id: str, endpoint: str) -> None:
        t0 = time.perf_counter()
        detail = ""
        try:
            resp = await self.upstreams.get(endpoint).checks.ServerReady(
                service_pb2.ServerReadyRequest(), timeout=self.timeout_s)
            ok = resp.ready
            detail = "" if ok else "answered not ready"
        except grpc.aio.AioRpcError as err:
            ok = False
            detail = f"{err.code().name} ({err.details()})"
            unreachable = True
        else:
            unreachable = False
        took_ms = (time.perf_counter() - t0) * 1000
        if ok:
            self.link.rtt_ms[backend_id] = took_ms
        self.health.checked(backend_id, ok, f"{detail} after {took_ms:.0f} ms")
        if unreachable and self.stalls is not None and self.health.failing(backend_id) and (
                n := self.stalls.sweep(backend_id, f"last: {detail} after {took_ms:.0f} ms")):
            log.warning("streams_given_up", backend=backend_id, streams=n,
                        silent_s=self.stalls.silent_s)
            self.given_up(backend_id, n)
        calls = self.call_stalls
        if unreachable and calls is not None and self.health.failing(backend_id) and (
                n := calls.sweep(backend_id, f"last: {detail} after {took_ms:.0f} ms")):
            log.warning("calls_given_up", backend=backend_id, calls=n, silent_s=calls.silent_s)
