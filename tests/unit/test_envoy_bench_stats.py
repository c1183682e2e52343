"""benchmarks.envoy_stats: Envoy's admin counters read per downstream call, summed over the
clusters that carry calls, placement's own cluster kept apart (issue 12)."""

from __future__ import annotations

import pytest

from benchmarks import envoy_stats
from benchmarks.envoy_stats import Tally, difference, table


def _snap(calls: int, cx: int, hc: int, to_placement: int, logs: int) -> dict[str, float]:
    """A Switchyard-like Envoy: a deployment cluster (a '/' and a '.' in its name), the
    aggregate, placement's cluster, the admin's connection manager."""
    return {
        "http.switchyard.downstream_rq_total": calls,
        "http.admin.downstream_rq_total": 3 * calls,  # the admin's own: not calls
        "listener.127.0.0.1_1.http.switchyard.downstream_rq_total": 5 * calls,
        "http.switchyard.downstream_cx_tx_bytes_total": 170 * calls,
        "cluster.dep_b/tiny.v1.upstream_rq_total": calls,
        "cluster.dep_b/tiny.v1.upstream_cx_total": cx,
        "cluster.dep_b/tiny.v1.health_check.attempt": hc,
        "cluster.dep_b/tiny.v1.upstream_cx_tx_bytes_total": 210 * calls,
        "cluster.agg_tiny.upstream_cx_total": 0,
        "cluster.placement.upstream_rq_total": 1,
        "cluster.placement.upstream_cx_total": 1,
        "cluster.placement.upstream_cx_tx_bytes_total": to_placement,
        "access_logs.grpc_access_log.logs_written": logs,
    }


def test_counters_are_per_downstream_call_and_placement_is_kept_apart() -> None:
    t = Tally()
    t.add(difference(_snap(100, 2, 1, 0, 100), _snap(1100, 12, 3, 600_000, 1100)), 0.05, 0.3)
    assert t.calls == 1000  # the listener's connection manager, not admin's or listener.*
    assert t.per_call("upstream rq") == pytest.approx(1.0)  # placement's stream not counted
    assert t.per_call("new upstream cx") == pytest.approx(0.01)
    assert t.per_call("health checks") == pytest.approx(0.002)
    assert t.per_call("to placement B") == pytest.approx(600.0)
    assert t.per_call("upstream tx B") == pytest.approx(210.0)
    assert t.per_call("downstream tx B") == pytest.approx(170.0)
    assert t.per_call("access-log entries") == pytest.approx(1.0)


def test_a_pool_that_opens_a_connection_per_call_shows_in_the_table() -> None:
    t = Tally()
    t.add(difference(_snap(0, 0, 0, 0, 0), _snap(500, 500, 0, 0, 500)), 0.01, 0.25)
    t.add(difference(_snap(0, 0, 0, 0, 0), _snap(500, 500, 0, 0, 500)), 0.01, 0.35)
    text = table({("envoy-sy", 1): t}, {("envoy-sy", 1): 400.0})
    header, _, row = ([c.strip("| ") for c in line.split(" | ")]
                      for line in text.splitlines()[:3])
    assert row[header.index("downstream rq")] == "1,000"
    assert row[header.index("new upstream cx/call")] == "1.000"
    assert row[header.index("placement CPU µs/call")] == "20"
    assert row[header.index("Triton CPU, of a core")] == "35 %"  # median of 2: the upper


def test_a_cluster_named_placement_only_matches_whole() -> None:
    d = {"cluster.placement-b.upstream_rq_total": 7.0, "cluster.placement.upstream_rq_total": 3.0}
    assert envoy_stats._sum(d, "upstream_rq_total") == 7.0
    assert envoy_stats._sum(d, "upstream_rq_total", placement=True) == 3.0
