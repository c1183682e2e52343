"""What the drills read of an Envoy edge (services/drills/edges.py), from admin answers in the
shape Envoy 1.40 gives them, and the resilience placement pushes for drills to pass
(per-try timeouts, the retry budget: services/xds/resources.py)."""

from __future__ import annotations

from google.protobuf import json_format

from services.drills.edges import parse_envoy
from services.xds.order import SloClass
from services.xds.resources import (
    EnvoySettings,
    ModelRoutes,
    model_cluster,
    per_try_timeout_s,
    route_configuration,
)

CLUSTERS = """\
dep:a/small::observability_name::dep:a/small
dep:a/small::default_priority::max_retries::3
dep:a/small::127.0.0.1:1001::rq_total::174
dep:a/small::127.0.0.1:1001::health_flags::/failed_outlier_check
dep:b/small::127.0.0.1:1002::health_flags::healthy
dep:c/large::127.0.0.1:1003::health_flags::/failed_active_hc/failed_outlier_check
slow-path::127.0.0.1:1004::health_flags::/failed_outlier_check
"""


def _cluster(name: str, children: list[str] | None = None) -> dict[str, object]:
    c: dict[str, object] = {"name": name}
    if children is not None:
        c["cluster_type"] = {"name": "envoy.clusters.aggregate",
                             "typed_config": {"clusters": children}}
    return {"cluster": c}


DYNAMIC = {"configs": [_cluster("dep:a/small"), _cluster("dep:b/small"),
                       _cluster("dep:c/large"), _cluster("dep:d/small"),
                       _cluster("model:m", ["dep:a/small", "dep:b/small"]),
                       _cluster("model:m:slo0", ["dep:c/large", "dep:a/small"])]}
STATIC_ADS = {"configs": [_cluster("placement")]}


def test_an_ads_envoy_view_names_ejected_deployments_and_routable_backends() -> None:
    v = parse_envoy("control_plane.connected_state: 1\n", CLUSTERS, DYNAMIC, STATIC_ADS)
    assert v.placement_connected and v.routes_source == "placement" and v.has_routes
    assert v.blocked == ("a/small", "c/large")  # not the slow path, not the healthy one
    assert v.known == {"a", "b", "c", "d"}
    assert v.routable == {"a", "b", "c"}  # d has a cluster but is in no failover order


def test_a_snapshot_envoy_has_routes_from_disk_and_no_placement() -> None:
    v = parse_envoy("control_plane.connected_state: 0\n", CLUSTERS.replace(
        "/failed_outlier_check", "healthy"), {}, DYNAMIC)
    assert not v.placement_connected and v.routes_source == "disk" and v.has_routes
    assert v.blocked == ("c/large",)
    # Envoy says 1 while it opens a new stream to a placement that is gone: any 0 read wins.
    blink = parse_envoy("control_plane.connected_state: 1\ncontrol_plane.connected_state: 0",
                        CLUSTERS, DYNAMIC, STATIC_ADS)
    assert not blink.placement_connected
    empty = parse_envoy("", "", {}, STATIC_ADS)
    assert not empty.placement_connected and not empty.has_routes and not empty.routable


def test_every_model_route_times_attempts_out_within_its_slo_class() -> None:
    s = EnvoySettings(max_attempts=3)
    assert per_try_timeout_s(1995, s) == 0.665
    assert per_try_timeout_s(300, s) == s.min_attempt_timeout_s  # the floor
    routes = ModelRoutes(default=("a/small",), default_slo_ms=300.0, classes=(
        SloClass(0, 900, ("a/small",)), SloClass(900, None, ("b/small", "a/small"))))
    rc = json_format.MessageToDict(route_configuration("r", {"m": routes}, s))
    by_name = {r["name"]: r for r in rc["virtualHosts"][0]["routes"]}
    timeouts = {n: r["route"]["retryPolicy"].get("perTryTimeout") for n, r in by_name.items()
                if n.startswith("m")}
    assert timeouts == {"m slo [0, 900)": "0.250s", "m slo [900, )": "0.300s", "m": "0.250s"}


def test_the_aggregate_cluster_budgets_retries_instead_of_three_in_flight() -> None:
    s = EnvoySettings()
    c = json_format.MessageToDict(model_cluster("model:m", ["a/small", "b/small"], s))
    (threshold,) = c["circuitBreakers"]["thresholds"]
    assert "maxRetries" not in threshold
    assert threshold["retryBudget"] == {"budgetPercent": {"value": 20.0},
                                        "minRetryConcurrency": 10}
