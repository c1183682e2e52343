"""What Envoy edges observe, back to placement: Envoy's gRPC access-log service (ALS).

Each Envoy edge's listener logs every call to placement (``access_log`` in the listener
``resources.py`` builds; Envoy batches entries, ``buffer_flush_interval``). Per stream this
module keeps the same :class:`~services.edge.stats.EdgeStats` a Python edge keeps, records
each call (the deployment from its ``x-served-by`` trailer or, for a trailers-only error, the
deployment cluster that answered; the upstream time; the call's final gRPC status, from its
trailers or a trailers-only answer's headers; never the caller's own deadline or cancel),
and every ``report_interval_s`` hands placement's own ``ReportObservations`` the
report a Python edge would have sent: observed p95 per deployment and the call rate this edge
sends it (which sets the slot shares). Calls the Envoy sent to its slow path are skipped: the
co-located Python edge reports those under its own id. Every entry also goes to the region's
``learning.RegionLearning`` when one is attached (placement's ADS server attaches its own):
class rates and miss margins for the region's next compile. One rule, one owner: nothing here
interprets the numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import structlog
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from prometheus_client import CollectorRegistry, Counter

from placement.attempts import CALLER_STATUSES, RETRYABLE
from services.api.switchyard.v1 import telemetry_pb2
from services.edge.stats import EdgeStats
from services.placement.validate import MAX_MS
from services.xds.envoy_types import cluster_name
from services.xds.learning import RegionLearning
from services.xds.resources import SLOW_PATH_CLUSTER

log = structlog.get_logger("switchyard.xds")

Report = Callable[[telemetry_pb2.ObservationReport], Awaitable[object]]


def _ms(d: object) -> float:
    return float(d.seconds) * 1e3 + float(d.nanos) / 1e6  # type: ignore[attr-defined]


_STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
_DEPLOYMENT_CLUSTER = cluster_name("")
# What a deployment's own answer holds against it, as the attempt policy blames a backend
# (``placement.attempts``): what it retries, less what may be the caller's own deadline or
# cancel (the backend sees the caller's grpc-timeout). Any other status answers the request.
BLAMED = RETRYABLE - CALLER_STATUSES


def final_status(entry: accesslog_pb2.HTTPAccessLogEntry) -> str | None:
    """The gRPC status the caller got, by name: from the response trailers, or the response
    headers of a trailers-only answer (most errors, Envoy's own replies); None when the call
    ended without one (reset by the caller)."""
    r = entry.response
    raw = str(r.response_trailers.get("grpc-status") or r.response_headers.get("grpc-status")
              or "")
    if not raw:
        return None
    try:
        return _STATUS_NAMES.get(int(raw), raw)
    except ValueError:
        return raw


def answered_by(entry: accesslog_pb2.HTTPAccessLogEntry) -> str:
    """The deployment whose answer the caller got (its ``x-served-by`` trailer, or, for a
    trailers-only answer, the deployment cluster Envoy's last attempt went to); empty when
    Envoy answered itself (a local reply, the caller's deadline) or the caller reset."""
    served = str(entry.response.response_trailers.get("x-served-by", ""))
    if served:
        return served
    cluster = str(entry.common_properties.upstream_cluster)
    if (entry.response.response_code_details == "via_upstream"
            and cluster.startswith(_DEPLOYMENT_CLUSTER)):
        return cluster[len(_DEPLOYMENT_CLUSTER):]
    return ""


def record(stats: EdgeStats, entry: accesslog_pb2.HTTPAccessLogEntry) -> bool:
    """One logged call into ``stats`` with its final status, as the Python edge records an
    attempt: a success with its latency, a failure when the deployment's answer is one the
    attempt policy blames it for (``BLAMED``). False (nothing recorded) when the slow path
    answered (the co-located Python edge reports its own calls: not counted twice), Envoy
    answered itself or the caller ended the call (its deadline, its cancel: never held
    against a backend), the deployment answered the request with another error, or the
    entry's upstream time is past any call's (``validate.MAX_MS``)."""
    c = entry.common_properties
    if c.upstream_cluster == SLOW_PATH_CLUSTER:
        return False
    deployment = answered_by(entry)
    status = final_status(entry)
    if not deployment or (status != "OK" and status not in BLAMED):
        return False
    upstream_ms = _ms(c.time_to_last_upstream_rx_byte) - _ms(c.time_to_first_upstream_tx_byte)
    if not upstream_ms <= MAX_MS:
        # A duration no call takes (a protobuf Duration reaches 10,000 years): as the
        # deployment's p95 it would get this edge's whole report refused by placement's
        # check, every good deployment's observations with it, until the sample aged out.
        return False
    stats.record(deployment, max(upstream_ms, 0.0), status == "OK")
    return True


PATHS = ("envoy", "slow", "local")  # what ``path_of`` answers


def path_of(entry: accesslog_pb2.HTTPAccessLogEntry) -> str:
    """Which path served a logged request: ``slow`` (the co-located Python edge), ``envoy``
    (a deployment, by compiled config) or ``local`` (Envoy answered it itself)."""
    cluster = entry.common_properties.upstream_cluster
    if cluster == SLOW_PATH_CLUSTER:
        return "slow"
    return "envoy" if cluster else "local"


def observation_report(edge_id: str, region: str, stats: EdgeStats,
                       interval_s: float) -> telemetry_pb2.ObservationReport:
    """What ``services.edge.control`` reports, from the same ``EdgeStats.refresh``."""
    return telemetry_pb2.ObservationReport(edge_id=edge_id, edge_region=region, observations=[
        telemetry_pb2.Observation(deployment_id=dep, edge_region=region, samples=n,
                                  failures=f, p50_ms=p50, p95_ms=p95,
                                  calls_per_s=round(calls / interval_s, 2))
        for dep, (n, f, p50, p95, calls) in stats.refresh().items()])


class _Edge:
    """One Envoy edge's calls, from all its ALS streams (Envoy opens one per worker)."""

    def __init__(self, edge_id: str, region: str, min_samples: int) -> None:
        self.edge_id = edge_id
        self.region = region
        self.stats = EdgeStats(min_samples)
        self.streams = 0
        self.reporter: asyncio.Task[None] | None = None


# xds-protos ships no stubs: its servicer base is Any to mypy.
class AccessLogFeedback(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    def __init__(self, report: Report, interval_s: float, min_samples: int,
                 registry: CollectorRegistry | None = None) -> None:
        self.report = report
        # Requests per Envoy edge and path, on placement's /metrics: an edge's series only
        # while it has an access-log stream open (``_leave``), so the labels stay bounded by
        # the Envoys connected, whatever ids they connect with.
        self.paths = Counter("switchyard_envoy_requests_total",
                             "Requests Envoy edges logged, by the path that answered them "
                             "(envoy, slow, local)", ["edge", "path"],
                             registry=registry or CollectorRegistry())
        self.interval_s = interval_s
        self.min_samples = min_samples
        self.calls = 0  # logged calls with a deployment, all edges
        self.slow_calls = 0  # logged calls the Envoys sent to their slow path (not recorded)
        self.entries = 0  # every logged request, all edges
        self.edges: dict[str, _Edge] = {}
        self.learning: RegionLearning | None = None  # per region, for the compile

    async def _report_forever(self, edge: _Edge) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            report = observation_report(edge.edge_id, edge.region, edge.stats, self.interval_s)
            if not report.observations:
                continue
            try:
                await self.report(report)
            except Exception as exc:  # one refused report; the edge keeps reporting
                # A refused report (placement's validation, e.g. a region it does not know)
                # loses that interval's observations only; the task, and the next reports,
                # go on, and the operator sees why.
                log.warning("envoy_feedback_report_refused", edge=edge.edge_id,
                            region=edge.region, error=str(exc),
                            next_step="check the Envoy node's id and region against the mesh "
                                      "config (the bootstrap's node.id and node.cluster)")

    def _join(self, node_id: str, region: str) -> _Edge:
        edge = self.edges.get(node_id)
        if edge is None:
            edge = self.edges[node_id] = _Edge(node_id, region, self.min_samples)
            edge.reporter = asyncio.create_task(self._report_forever(edge))
            log.info("envoy_feedback_open", edge=node_id, region=region)
        edge.streams += 1
        return edge

    async def _leave(self, edge: _Edge) -> None:
        edge.streams -= 1
        if edge.streams or edge.reporter is None:
            return
        del self.edges[edge.edge_id]
        # Its series leave /metrics with it: node ids are whatever Envoys connect with, so
        # kept forever they were an unbounded label set (a restarted Envoy starts a new
        # series at 0, a counter reset Prometheus' rate() reads as one).
        for path in PATHS:
            with contextlib.suppress(KeyError):
                self.paths.remove(edge.edge_id, path)
        edge.reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await edge.reporter

    async def StreamAccessLogs(  # noqa: N802 (the ALS method name)
            self, request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage],
            context: grpc.aio.ServicerContext[
                als_pb2.StreamAccessLogsMessage, als_pb2.StreamAccessLogsResponse],
    ) -> als_pb2.StreamAccessLogsResponse:
        edge: _Edge | None = None
        try:
            async for msg in request_iterator:
                if edge is None:
                    node = msg.identifier.node
                    if not node.id or not node.cluster:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, (
                            "an access-log stream's first message names its Envoy in "
                            "identifier.node.id and identifier.node.cluster (the edge region); "
                            f"got id {node.id!r}, cluster {node.cluster!r}"))
                    edge = self._join(node.id, node.cluster)
                for entry in msg.http_logs.log_entry:
                    self.entries += 1
                    self.paths.labels(edge.edge_id, path_of(entry)).inc()
                    self.calls += record(edge.stats, entry)
                    if self.learning is not None:
                        self.learning.observe(edge.region, entry)
                    self.slow_calls += entry.common_properties.upstream_cluster == \
                        SLOW_PATH_CLUSTER
        finally:
            if edge is not None:
                await self._leave(edge)
        return als_pb2.StreamAccessLogsResponse()
