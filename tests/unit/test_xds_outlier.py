"""What placement pushes Envoy about ejection and panic (services/xds/clusters.py, routes.py):
only the backend's own answers eject, timeouts and the caller's deadline never do, a refused
port is found by an active TCP check, and a route whose deployments are all out still tries
them. Checked against the real Envoy in tests/integration/test_envoy_outlier.py."""

from __future__ import annotations

from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.xds.resources import (
    EnvoySettings,
    cluster_name,
    compile_region,
    route_config_name,
)

PROFILE = build_profile("cheapest")


def _cand(dep: str, cost: float, port: int) -> placement_pb2.Candidate:
    backend, variant = dep.split("/")
    return placement_pb2.Candidate(
        deployment_id=dep, backend_id=backend, endpoint=f"127.0.0.1:{port}", variant=variant,
        region="r-east", cloud="aws", quality=0.9, latency_p95_ms=50, cost_usd=cost,
        spare_capacity=100, concurrency=4)


def _region() -> object:
    table = placement_pb2.RouteTable(model="summarize", edge_region="r-east", version=3,
                                     default_slo_ms=300,
                                     candidates=[_cand("b1/s", 1e-6, 9001),
                                                 _cand("b2/s", 2e-6, 9002)])
    return compile_region("r-east", [table], PROFILE, EnvoySettings(eject_consecutive_failures=4))


def test_only_the_backends_own_answers_eject_a_deployment() -> None:
    rc = _region()
    c = rc.clusters[cluster_name("b1/s")].message  # type: ignore[attr-defined]
    od = c.outlier_detection
    assert od.split_external_local_origin_errors  # timeouts and resets counted apart
    assert od.consecutive_5xx.value == 4  # UNAVAILABLE, INTERNAL... from the backend
    assert od.enforcing_consecutive_local_origin_failure.value == 0  # per-try timeouts etc.
    assert od.HasField("enforcing_consecutive_local_origin_failure")  # 0 set, not defaulted
    assert od.enforcing_consecutive_gateway_failure.value == 0
    # A refused port: the active TCP check takes the host out.
    [hc] = c.health_checks
    assert hc.HasField("tcp_health_check") and hc.unhealthy_threshold.value == 2
    assert hc.no_traffic_interval.ToMilliseconds() <= 1000  # unused deployments checked too
    # Panic: the one host is used when nothing else is left.
    assert c.common_lb_config.healthy_panic_threshold.value > 0


def test_model_routes_keep_the_callers_deadline_from_the_backend_and_the_slow_path_does_not(
        ) -> None:
    rc = _region()
    routes = rc.routes[route_config_name("r-east")].message \
        .virtual_hosts[0].routes  # type: ignore[attr-defined]
    model = [r for r in routes if r.name.startswith("summarize")]
    assert model and all("grpc-timeout" in r.request_headers_to_remove for r in model)
    assert all(r.route.max_stream_duration.HasField("grpc_timeout_header_max") for r in model)
    slow = next(r for r in routes if r.name == "slow-path")
    assert "grpc-timeout" not in slow.request_headers_to_remove  # the Python edge needs it
