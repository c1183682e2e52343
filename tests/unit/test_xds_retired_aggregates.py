"""An aggregate cluster the routes stop naming stays a few compiles (issue 12): a call already
routed retries and hedges through its route's cluster by name, and Envoy's router answers a
retry whose cluster is gone "no healthy upstream" (``Filter::doRetry``). In the Envoy drills
under load, bursts of 1-4 calls were lost so right after a kill or a restore reordered the
region and an SLO class's aggregate left."""

from __future__ import annotations

from envoy.config.route.v3 import route_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2

from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.xds.resources import (
    RETIRE_COMPILES,
    CompileCache,
    EnvoySettings,
    RegionConfig,
    cluster_name,
    compile_region,
    route_config_name,
)

PROFILE = build_profile("cheapest")
S = EnvoySettings()
GONE = "model:summarize:slo2"  # the third SLO class: there while a's p95 is 900 ms


def _cand(dep: str, cost: float, p95: float, port: int) -> placement_pb2.Candidate:
    backend, variant = dep.split("/")
    return placement_pb2.Candidate(
        deployment_id=dep, backend_id=backend, endpoint=f"127.0.0.1:{port}", variant=variant,
        region="r-east", cloud="aws", quality=0.9, latency_p95_ms=p95, cost_usd=cost,
        spare_capacity=100.0, concurrency=4)


def _table(a_p95: float) -> placement_pb2.RouteTable:
    """Three SLO classes with a's p95 at 900 ms, two at 20 ms (both deployments fit then)."""
    return placement_pb2.RouteTable(
        model="summarize", edge_region="r-east", version=1, default_slo_ms=300,
        candidates=[_cand("a/s", 1e-6, a_p95, 9001), _cand("b/s", 9e-6, 20, 9002)])


def _named(rc: RegionConfig) -> set[str]:
    config = rc.routes[route_config_name("r-east")].message
    assert isinstance(config, route_pb2.RouteConfiguration)
    return {r.route.cluster for r in config.virtual_hosts[0].routes
            if r.route.cluster.startswith("model:")}


def _children(rc: RegionConfig, name: str) -> list[str]:
    agg = aggregate_pb2.ClusterConfig()
    rc.clusters[name].message.cluster_type.typed_config.Unpack(agg)  # type: ignore[attr-defined]
    return list(agg.clusters)


def test_an_aggregate_no_route_names_stays_for_retries_then_goes() -> None:
    cache = CompileCache.serving()
    first = compile_region("r-east", [_table(900)], PROFILE, S, cache=cache)
    assert GONE in _named(first)
    order = _children(first, GONE)
    for i in range(RETIRE_COMPILES):
        rc = compile_region("r-east", [_table(20)], PROFILE, S, cache=cache)
        assert GONE not in _named(rc), i  # no new call is routed to it
        assert GONE in rc.clusters, i     # a routed call's retry still finds it
        assert _children(rc, GONE) == order, i  # as it was, its deployments kept
        assert all(c in rc.clusters for c in order), i
    rc = compile_region("r-east", [_table(20)], PROFILE, S, cache=cache)
    assert GONE not in rc.clusters  # then it goes
    assert {c for c in rc.clusters if c.startswith("model:")} == _named(rc)


def test_an_aggregate_named_again_is_the_routes_own_again() -> None:
    cache = CompileCache.serving()
    compile_region("r-east", [_table(900)], PROFILE, S, cache=cache)
    compile_region("r-east", [_table(20)], PROFILE, S, cache=cache)
    back = compile_region("r-east", [_table(900)], PROFILE, S, cache=cache)
    assert GONE in _named(back)
    assert not cache.retired["r-east"]
    for _ in range(RETIRE_COMPILES + 1):  # no longer retired: it goes with the next removal
        rc = compile_region("r-east", [_table(900)], PROFILE, S, cache=cache)
        assert GONE in rc.clusters


def test_without_retirement_a_compile_equals_one_from_scratch() -> None:
    cache = CompileCache()
    compile_region("r-east", [_table(900)], PROFILE, S, cache=cache)
    rc = compile_region("r-east", [_table(20)], PROFILE, S, cache=cache)
    scratch = compile_region("r-east", [_table(20)], PROFILE, S)
    assert GONE not in rc.clusters
    assert {n: r.version for n, r in rc.clusters.items()} == {
        n: r.version for n, r in scratch.clusters.items()}


def test_a_retired_order_keeps_no_deployment_the_tables_dropped() -> None:
    cache = CompileCache.serving()
    compile_region("r-east", [_table(900)], PROFILE, S, cache=cache)
    only_b = placement_pb2.RouteTable(model="summarize", edge_region="r-east", version=2,
                                      default_slo_ms=300, candidates=[_cand("b/s", 9e-6, 20, 9002)])
    rc = compile_region("r-east", [only_b], PROFILE, S, cache=cache)
    assert GONE in rc.clusters  # kept for routed calls ...
    assert cluster_name("a/s") not in rc.clusters  # ... but a/s is in no table: no cluster
