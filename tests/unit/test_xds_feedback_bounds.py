"""What an Envoy's access-log stream can make placement keep (review10's findings 10 and 12).

- One entry with an upstream time no call takes (a valid protobuf Duration of 10^10 s) was a
  deployment's p50/p95 in the edge's next reports, and placement's check refuses a report with
  a latency past ``validate.MAX_MS`` whole: every good deployment's observations of that edge
  were lost for 10 intervals, until the idle deployment aged out. The entry is dropped.
- A stream's region is its ``identifier.node.cluster``, the caller's word: every made-up
  region kept a learning state in placement for good. State is kept only for regions placement
  compiles routes for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import duration_pb2

from placement.errors import InvalidRequest
from services.edge.stats import EdgeStats
from services.placement import validate
from services.xds.feedback import AccessLogFeedback, observation_report, record
from services.xds.learning import RegionLearning


def _entry(deployment: str, upstream: duration_pb2.Duration) -> accesslog_pb2.HTTPAccessLogEntry:
    e = accesslog_pb2.HTTPAccessLogEntry()
    c = e.common_properties
    c.time_to_first_upstream_tx_byte.CopyFrom(duration_pb2.Duration(nanos=1_000_000))
    c.time_to_last_upstream_rx_byte.CopyFrom(upstream)
    e.response.response_trailers["x-served-by"] = deployment
    e.response.response_trailers["grpc-status"] = "0"
    return e


class _Catalog:
    regions: ClassVar[dict[str, None]] = {"r-east": None}


def test_an_entry_with_an_absurd_upstream_time_is_dropped_and_the_reports_pass() -> None:
    stats = EdgeStats(min_samples=3)
    assert not record(stats, _entry("b2/small", duration_pb2.Duration(seconds=10**10)))
    refused: list[str] = []
    for _ in range(12):
        for i in range(20):  # the edge's real calls, every interval
            assert record(stats, _entry("b1/small",
                                        duration_pb2.Duration(nanos=(11 + i) * 1_000_000)))
        report = observation_report("envoy-1", "r-east", stats, interval_s=1.0)
        assert [o.deployment_id for o in report.observations] == ["b1/small"]
        try:
            validate.check_observations(report, _Catalog())  # type: ignore[arg-type]
        except InvalidRequest as exc:
            refused.append(exc.message)
    assert refused == []


def test_an_upstream_time_at_the_bound_is_still_a_sample() -> None:
    """A stream held open for days is a real measurement (validate's MAX_MS note)."""
    stats = EdgeStats(min_samples=1)
    assert record(stats, _entry("b1/small", duration_pb2.Duration(seconds=3 * 86_400)))
    (p95,) = [o.p95_ms for o in observation_report("e", "r-east", stats, 1.0).observations]
    assert p95 > 2 * 86_400_000


async def test_streams_naming_regions_placement_does_not_compile_for_leave_no_state() -> None:
    async def report(_r: object) -> None:
        return None

    feedback = AccessLogFeedback(report, interval_s=3600.0, min_samples=3)
    feedback.learning = learning = RegionLearning()
    learning.compiled("r-east", {})

    class _Context:
        async def abort(self, code: object, message: str) -> None:
            raise AssertionError(message)

    async def one(region: str) -> AsyncIterator[als_pb2.StreamAccessLogsMessage]:
        msg = als_pb2.StreamAccessLogsMessage()
        msg.identifier.node.id = f"envoy-{region[:20]}"
        msg.identifier.node.cluster = region
        msg.http_logs.log_entry.add().request.request_headers["x-switchyard-model"] = "m"
        yield msg

    for i in range(50):
        await feedback.StreamAccessLogs(one(f"not-a-region-{i}-" + "x" * 1000), _Context())
    await feedback.StreamAccessLogs(one("r-east"), _Context())
    assert not feedback.edges  # every stream closed
    assert list(learning.regions) == ["r-east"]
    assert feedback.entries == 51
