"""What placement pushes when it has learned an edge region's class rates and miss margins:
``compile_region(..., learned)`` runs ``order.weighted`` (the function the cost simulator's
Envoy row runs) and routes a split class through ``weighted_clusters`` of rotated orders."""

from __future__ import annotations

from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2

from placement.edge_learning import Learned
from placement.registry import build_profile
from services.xds.resources import (
    EnvoySettings,
    cluster_name,
    compile_region,
    model_cluster_name,
    route_config_name,
)
from services.xds.routes import rotation_cluster_name
from tests.xds_tables import TABLE

PROFILE = build_profile("cheapest")
S = EnvoySettings()




def _default_route(rc: object) -> object:
    routes = rc.routes[route_config_name("r-east")].message.virtual_hosts[0].routes  # type: ignore[attr-defined]
    return next(r for r in routes if r.name == "summarize")


def _children(rc: object, name: str) -> list[str]:
    agg = aggregate_pb2.ClusterConfig()
    rc.clusters[name].message.cluster_type.typed_config.Unpack(agg)  # type: ignore[attr-defined]
    return list(agg.clusters)


def test_nothing_learned_compiles_the_plain_orders() -> None:
    rc = compile_region("r-east", [TABLE], PROFILE, S)
    assert rc.models["summarize"].rotations == {}
    assert _default_route(rc).route.cluster == model_cluster_name("summarize")  # type: ignore[attr-defined]
    assert compile_region("r-east", [TABLE], PROFILE, S, Learned()).routes == rc.routes


def test_a_busy_class_is_split_over_rotations_of_its_order() -> None:
    """60 calls/s at 300 ms: the one slot of small (cheapest) carries part, big the rest."""
    rc = compile_region("r-east", [TABLE], PROFILE, S,
                        Learned(rates={("summarize", None): 60.0}))
    route = _default_route(rc).route  # type: ignore[attr-defined]
    assert not route.cluster
    split = {c.name: c.weight.value for c in route.weighted_clusters.clusters}
    first, second = (rotation_cluster_name("summarize", None, d) for d in ("small/s", "big/s"))
    assert set(split) == {first, second} and split[second] > split[first] > 0
    assert _children(rc, first) == [cluster_name("small/s"), cluster_name("big/s")]
    assert _children(rc, second) == [cluster_name("big/s"), cluster_name("small/s")]
    assert route.retry_policy.num_retries.value == S.max_attempts - 1  # retries as before
    # the SLO classes without a rate keep one aggregate each
    assert all(i is None for i in rc.models["summarize"].rotations)


def test_a_learned_margin_reorders_the_class() -> None:
    rc = compile_region("r-east", [TABLE], PROFILE, S,
                        Learned(rates={("summarize", None): 0.001},
                                margins={("summarize", None): {"small/s": 250.0}}))
    assert rc.orders["summarize"] == ["big/s", "small/s"]
    assert rc.models["summarize"].default_feasible == frozenset({"big/s"})
