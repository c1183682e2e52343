"""Placement's access-log service against Envoy peers that come and go or misbehave, over
real gRPC on 127.0.0.1: an edge's metric series leave with its last stream (node ids are
whatever Envoys connect with), a refused report does not end the edge's reporting, and a
stream naming no node is refused naming the field."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from google.protobuf import duration_pb2
from prometheus_client import CollectorRegistry

from services.api.switchyard.v1 import telemetry_pb2
from services.xds.feedback import AccessLogFeedback
from tests.mesh_harness import eventually

pytestmark = pytest.mark.asyncio


class Reports:
    """Placement's side of ``ReportObservations``: refuses the first ``refuse`` reports."""

    def __init__(self, refuse: int) -> None:
        self.refuse = refuse
        self.seen: list[telemetry_pb2.ObservationReport] = []

    async def __call__(self, report: telemetry_pb2.ObservationReport) -> None:
        self.seen.append(report)
        if len(self.seen) <= self.refuse:
            raise ValueError("observations[0].edge_region: 'r-nowhere' is not a region")


Served = tuple[AccessLogFeedback, als_pb2_grpc.AccessLogServiceStub, CollectorRegistry, Reports]


@pytest_asyncio.fixture
async def served() -> AsyncIterator[Served]:
    registry = CollectorRegistry()
    reports = Reports(refuse=1)
    feedback = AccessLogFeedback(reports, interval_s=0.05, min_samples=1, registry=registry)
    server = grpc.aio.server()
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(feedback, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield feedback, als_pb2_grpc.AccessLogServiceStub(channel), registry, reports
    finally:
        await channel.close()
        await server.stop(0)


def _message(node_id: str, region: str = "r-east") -> als_pb2.StreamAccessLogsMessage:
    msg = als_pb2.StreamAccessLogsMessage()
    msg.identifier.node.id = node_id
    msg.identifier.node.cluster = region
    e = msg.http_logs.log_entry.add()
    e.common_properties.upstream_cluster = "dep_b1_small"
    e.common_properties.time_to_first_upstream_tx_byte.CopyFrom(duration_pb2.Duration(nanos=10**6))
    e.common_properties.time_to_last_upstream_rx_byte.CopyFrom(duration_pb2.Duration(nanos=2 * 10**7))
    e.response.response_trailers["x-served-by"] = "b1/small"
    e.response.response_trailers["grpc-status"] = "0"
    assert isinstance(e, accesslog_pb2.HTTPAccessLogEntry)
    return msg


def _series(registry: CollectorRegistry) -> set[str]:
    return {s.labels["edge"] for m in registry.collect() for s in m.samples
            if s.name == "switchyard_envoy_requests_total"}


async def test_an_edges_series_leave_with_its_last_stream(served: Served) -> None:
    feedback, stub, registry, _ = served
    for i in range(20):  # 20 Envoys with made-up ids, one after the other
        await stub.StreamAccessLogs(iter([_message(f"envoy-{i}")]), timeout=10)
    await eventually(lambda: not feedback.edges, 10, "every edge has left")
    assert _series(registry) == set()  # before: all 20 kept for good
    assert feedback.entries == 20


async def test_a_refused_report_does_not_end_the_edges_reporting(served: Served) -> None:
    feedback, stub, _, reports = served

    async def calls() -> AsyncIterator[als_pb2.StreamAccessLogsMessage]:
        # the stream (and its edge) stays open while the reporter runs its intervals
        yield _message("envoy-a")
        await eventually(lambda: len(reports.seen) >= 1, 10, "a first report (refused)")
        yield _message("envoy-a")  # a call in the next interval
        await eventually(lambda: len(reports.seen) >= 2, 10, "a report after the refused one")

    await stub.StreamAccessLogs(calls(), timeout=20)
    # the first report was refused; the reporter went on to send the next interval's
    assert len(reports.seen) >= 2
    assert all(r.edge_id == "envoy-a" for r in reports.seen)
    await eventually(lambda: not feedback.edges, 10, "the edge has left")


@pytest.mark.parametrize(("node_id", "region"), [("", "r-east"), ("envoy-x", "")])
async def test_a_stream_naming_no_node_is_refused_naming_the_field(
        served: Served, node_id: str, region: str) -> None:
    feedback, stub, registry, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.StreamAccessLogs(iter([_message(node_id, region)]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "identifier.node.id" in (err.value.details() or "")
    assert not feedback.edges and _series(registry) == set()
