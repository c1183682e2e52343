"""The status placement hears of an Envoy edge's call is the call's real final status
(``services.xds.feedback``): a trailers-only error (its status in the response headers) is
the answering deployment's failure; the caller's own deadline or cancel, Envoy's own replies
and a backend's answer to a bad request are held against no deployment."""

from __future__ import annotations

from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import duration_pb2

from services.edge.stats import EdgeStats
from services.xds.feedback import answered_by, final_status, observation_report, record


def _entry(cluster: str = "dep:b1/small", details: str = "via_upstream",
           trailers: dict[str, str] | None = None, headers: dict[str, str] | None = None,
           ) -> accesslog_pb2.HTTPAccessLogEntry:
    e = accesslog_pb2.HTTPAccessLogEntry()
    c = e.common_properties
    c.upstream_cluster = cluster
    c.time_to_first_upstream_tx_byte.CopyFrom(duration_pb2.Duration(nanos=1_000_000))
    c.time_to_last_upstream_rx_byte.CopyFrom(duration_pb2.Duration(nanos=11_000_000))
    e.response.response_code_details = details
    e.response.response_trailers.update(trailers or {})
    e.response.response_headers.update(headers or {})
    return e


def _report(stats: EdgeStats) -> dict[str, tuple[int, int]]:
    return {o.deployment_id: (o.samples, o.failures)
            for o in observation_report("e", "r", stats, 1.0).observations}


def test_a_trailers_only_unavailable_is_the_answering_deployments_failure() -> None:
    stats = EdgeStats(min_samples=1)
    e = _entry(headers={"grpc-status": "14"})  # no trailers: the status is in the headers
    assert (final_status(e), answered_by(e)) == ("UNAVAILABLE", "b1/small")
    assert record(stats, e)
    assert _report(stats) == {"b1/small": (0, 1)}


def test_a_served_call_is_a_sample_of_the_deployment_its_trailer_names() -> None:
    stats = EdgeStats(min_samples=1)
    e = _entry(cluster="m:summarize", trailers={"x-served-by": "b2/large", "grpc-status": "0"})
    assert (final_status(e), answered_by(e)) == ("OK", "b2/large")
    assert record(stats, e)
    assert _report(stats) == {"b2/large": (1, 0)}


def test_the_callers_deadline_cancel_and_envoys_own_replies_blame_no_deployment() -> None:
    stats = EdgeStats(min_samples=1)
    cancelled = _entry(details="http2.remote_reset")  # the caller reset: no status at all
    deadline = _entry(details="max_duration_timeout", headers={"grpc-status": "4"})
    # the backend's own DEADLINE_EXCEEDED: it saw the caller's grpc-timeout run out
    backend_deadline = _entry(headers={"grpc-status": "4"})
    bad_request = _entry(headers={"grpc-status": "3"})  # the request's fault, not the backend's
    local = _entry(cluster="", details="route_not_found", headers={"grpc-status": "5"})
    assert final_status(cancelled) is None and answered_by(cancelled) == ""
    assert answered_by(deadline) == "" and answered_by(local) == ""
    assert final_status(backend_deadline) == "DEADLINE_EXCEEDED"
    for e in (cancelled, deadline, backend_deadline, bad_request, local):
        assert not record(stats, e), e
    assert _report(stats) == {}
