"""Envoy's access-log entries become the observations a Python edge would report."""

from __future__ import annotations

from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import duration_pb2

from services.edge.stats import EdgeStats
from services.xds.feedback import observation_report, path_of, record


def _entry(deployment: str, first_tx_ms: int, last_rx_ms: int, status: str = "0"
           ) -> accesslog_pb2.HTTPAccessLogEntry:
    e = accesslog_pb2.HTTPAccessLogEntry()
    e.common_properties.time_to_first_upstream_tx_byte.CopyFrom(
        duration_pb2.Duration(nanos=first_tx_ms * 1_000_000))
    e.common_properties.time_to_last_upstream_rx_byte.CopyFrom(
        duration_pb2.Duration(nanos=last_rx_ms * 1_000_000))
    if deployment:
        e.response.response_trailers["x-served-by"] = deployment
    e.response.response_trailers["grpc-status"] = status
    return e


def test_calls_become_p95_samples_failures_and_a_call_rate_per_deployment() -> None:
    stats = EdgeStats(min_samples=3)
    for i in range(20):
        assert record(stats, _entry("b1/small", 1, 11 + i))  # upstream time 10..29 ms
    assert record(stats, _entry("b1/small", 1, 500, status="14"))  # failed: not a latency
    assert not record(stats, _entry("", 0, 0, status="5"))  # refused by Envoy: no deployment
    report = observation_report("edge-1", "r-east", stats, interval_s=2.0)
    assert (report.edge_id, report.edge_region) == ("edge-1", "r-east")
    (obs,) = report.observations
    assert obs.deployment_id == "b1/small" and obs.edge_region == "r-east"
    assert (obs.samples, obs.failures) == (20, 1)
    assert obs.p95_ms == 28.0 and obs.p50_ms == 20.0
    assert obs.calls_per_s == 10.5  # 21 calls over the 2 s interval
    again = observation_report("edge-1", "r-east", stats, interval_s=2.0)
    assert again.observations[0].calls_per_s == 0.0  # counted since the previous report


def test_calls_envoy_sent_to_its_slow_path_are_left_to_the_python_edge_that_served_them() -> None:
    stats = EdgeStats(min_samples=1)
    slow = _entry("b1/small", 1, 11)
    slow.common_properties.upstream_cluster = "slow-path"
    assert not record(stats, slow)  # the co-located Python edge reports it under its own id
    fast = _entry("b1/small", 1, 11)
    fast.common_properties.upstream_cluster = "model:summarize"
    assert record(stats, fast)
    (obs,) = observation_report("edge-1", "r-east", stats, interval_s=1.0).observations
    assert obs.samples == 1


def test_each_logged_request_is_named_by_the_path_that_answered_it() -> None:
    slow, fast, local = _entry("b1/small", 1, 11), _entry("b1/small", 1, 11), _entry("", 0, 0)
    slow.common_properties.upstream_cluster = "slow-path"
    fast.common_properties.upstream_cluster = "model:summarize"
    assert [path_of(e) for e in (slow, fast, local)] == ["slow", "envoy", "local"]
