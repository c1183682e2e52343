"""What the drills read of an Envoy edge's orders counts only the aggregates its routes name:
placement keeps an aggregate no route names a few compiles for calls already routed
(``services.xds.resources.RETIRE_COMPILES``), and its old order must not make a drained or
dead deployment look routable (``services/drills/edges.py``)."""

from __future__ import annotations

from services.drills.edges import parse_envoy, routed_clusters

STATS = "control_plane.connected_state: 1\n"
CLUSTERS = "dep:a/s::127.0.0.1:1::health_flags::healthy\n"


def _aggregate(name: str, children: list[str]) -> dict[str, object]:
    return {"cluster": {"name": name, "cluster_type": {
        "name": "envoy.clusters.aggregate", "typed_config": {"clusters": children}}}}


DYNAMIC = {"configs": [
    {"cluster": {"name": "dep:a/s"}}, {"cluster": {"name": "dep:b/s"}},
    {"cluster": {"name": "dep:c/s"}},
    _aggregate("model:m", ["dep:a/s", "dep:b/s"]),
    _aggregate("model:m:slo2", ["dep:c/s", "dep:a/s"]),  # retired: no route names it
]}
STATIC_ADS = {"configs": [{"cluster": {"name": "placement"}}]}


def _rds(*routes: dict[str, object]) -> dict[str, object]:
    return {"dynamic_route_configs": [{"route_config": {"name": "routes:r", "virtual_hosts": [
        {"name": "models", "routes": list(routes)}]}}]}


def test_only_the_aggregates_routes_name_make_a_backend_routable() -> None:
    routes = [_rds({"name": "m", "route": {"cluster": "model:m"}},
                   {"name": "slow-path", "route": {"cluster": "slow-path"}}), {}]
    v = parse_envoy(STATS, CLUSTERS, DYNAMIC, STATIC_ADS, routes)
    assert v.routable == {"a", "b"}  # c is only in the retired aggregate's order
    assert v.known == {"a", "b", "c"} and v.has_routes


def test_weighted_rotations_and_a_snapshots_inline_routes_count() -> None:
    listener = {"static_listeners": [{"listener": {"filter_chains": [{"filters": [
        {"typed_config": {"route_config": {"virtual_hosts": [{"routes": [
            {"route": {"weighted_clusters": {"clusters": [
                {"name": "model:m:slo2", "weight": 1}]}}}]}]}}}]}]}}]}
    assert routed_clusters(listener) == {"model:m:slo2"}
    v = parse_envoy(STATS, CLUSTERS, DYNAMIC, STATIC_ADS, [{}, listener])
    assert v.routable == {"a", "c"}


def test_without_route_dumps_every_aggregate_counts_as_before() -> None:
    assert parse_envoy(STATS, CLUSTERS, DYNAMIC, STATIC_ADS).routable == {"a", "b", "c"}
