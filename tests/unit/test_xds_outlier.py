"""What placement pushes Envoy about ejection and panic (services/xds/clusters.py): a route
whose deployments are all ejected still tries them, never a deployment outside its order.
Checked against the real Envoy in tests/integration/test_envoy_panic.py."""

from __future__ import annotations

from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.xds.resources import (
    EnvoySettings,
    RegionConfig,
    cluster_name,
    compile_region,
    model_cluster_name,
)

PROFILE = build_profile("cheapest")


def _cand(dep: str, cost: float, port: int) -> placement_pb2.Candidate:
    backend, variant = dep.split("/")
    return placement_pb2.Candidate(
        deployment_id=dep, backend_id=backend, endpoint=f"127.0.0.1:{port}", variant=variant,
        region="r-east", cloud="aws", quality=0.9, latency_p95_ms=50, cost_usd=cost,
        spare_capacity=100, concurrency=4)


def _region() -> RegionConfig:
    table = placement_pb2.RouteTable(model="summarize", edge_region="r-east", version=3,
                                     default_slo_ms=300,
                                     candidates=[_cand("b1/s", 1e-6, 9001),
                                                 _cand("b2/s", 2e-6, 9002)])
    return compile_region("r-east", [table], PROFILE, EnvoySettings(eject_consecutive_failures=4))


def test_an_ejected_deployments_host_is_still_used_when_nothing_else_is_left() -> None:
    rc = _region()
    for dep in ("b1/s", "b2/s"):
        c = rc.clusters[cluster_name(dep)].message
        # Envoy's default 50 % would do for one host; 0 (as before) meant "no healthy upstream".
        assert c.common_lb_config.healthy_panic_threshold.value > 0  # type: ignore[attr-defined]
        od = c.outlier_detection  # type: ignore[attr-defined]
        # Ejected on gateway failures only (UNAVAILABLE, timeouts), as the Python edge; a
        # backend's own INTERNAL/UNIMPLEMENTED answer (a caller's bad bytes) ejects nothing.
        assert od.consecutive_gateway_failure.value == 4
        assert od.enforcing_consecutive_gateway_failure.value == 100
        assert od.HasField("enforcing_consecutive_5xx")
        assert od.enforcing_consecutive_5xx.value == 0
        assert len(c.load_assignment.endpoints[0].lb_endpoints) == 1  # type: ignore[attr-defined]
    # The aggregate keeps Envoy's default panic (no threshold of 0 set on it): with every
    # child ejected it sends the call to its first child.
    agg = rc.clusters[model_cluster_name("summarize")].message
    assert not agg.common_lb_config.HasField("healthy_panic_threshold")  # type: ignore[attr-defined]
