"""Each compiled order is cut at what a call can reach (``EnvoySettings.cap``, issues 12 + 15):
aggregates, rotations and each route's prices list at most ``cap`` deployments of the order
placement ranked for the class, never one it did not rank there."""

from __future__ import annotations

from typing import Any

from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from google.protobuf import json_format

from benchmarks.costsim.envoy_policy import EnvoyRules
from placement.edge_learning import Learned
from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.convert import candidate_from_pb
from services.xds.lua import LISTENER_FILTER
from services.xds.plan import Table, plan_region
from services.xds.resources import (
    EnvoySettings,
    RegionConfig,
    cluster_name,
    compile_region,
    route_config_name,
)
from services.xds.routes import ModelRoutes

PROFILE = build_profile("cheapest")
M = "summarize"
DROPPED = [f"d{i}/summarize-small" for i in range(5)]


def _table(n: int = 30) -> placement_pb2.RouteTable:
    """``n`` servable rows (the dearer, the faster) and, cheapest of all, five
    drained ones: a hard filter excludes those from every order."""
    rows = [placement_pb2.Candidate(
        deployment_id=f"b{i}/summarize-{'small' if i % 2 else 'large'}", backend_id=f"b{i}",
        endpoint=f"10.0.0.{i + 1}:8001", variant=f"summarize-{'small' if i % 2 else 'large'}",
        region="r-east", cloud="aws", quality=0.9, latency_p95_ms=20.0 + 7 * (n - 1 - i),
        cost_usd=1e-6 * (1 + i), compute_ms=50.0, spare_capacity=100.0, concurrency=1)
        for i in range(n)]
    rows += [placement_pb2.Candidate(
        deployment_id=d, backend_id=d.split("/")[0], endpoint=f"10.0.1.{j + 1}:8001",
        variant="summarize-small", region="r-east", cloud="aws", quality=0.9,
        latency_p95_ms=10.0, cost_usd=1e-9, spare_capacity=50.0, concurrency=1,
        edge_slots=1.0, dropped_reason="drained") for j, d in enumerate(DROPPED)]
    return placement_pb2.RouteTable(model=M, edge_region="r-east", default_slo_ms=300,
                                    candidates=rows)


def _children(rc: RegionConfig, name: str) -> list[str]:
    agg = aggregate_pb2.ClusterConfig()
    rc.clusters[name].message.cluster_type.typed_config.Unpack(agg)  # type: ignore[attr-defined]
    return list(agg.clusters)


def _model_routes(rc: RegionConfig) -> list[dict[str, Any]]:
    msg = rc.routes[route_config_name("r-east")].message
    routes = json_format.MessageToDict(msg, preserving_proto_field_name=True)[
        "virtual_hosts"][0]["routes"]
    return [r for r in routes if r["name"].startswith(M)]


def _uncapped(learned: Learned | None = None) -> ModelRoutes:
    t = _table()
    return plan_region({M: Table([candidate_from_pb(c) for c in t.candidates], 300)},
                       PROFILE, EnvoySettings().slo_margin_ms, learned)[M]


def test_the_default_cap_is_twice_the_attempts_at_least_eight() -> None:
    assert EnvoySettings().cap == 8
    assert EnvoySettings(max_attempts=6).cap == 12
    assert EnvoySettings(order_cap=3, max_attempts=6).cap == 3
    # the simulator's Envoy row compiles with the same cap
    assert EnvoyRules.compiled(EnvoySettings(max_attempts=5)).order_cap == 10


def test_an_order_longer_than_the_cap_is_cut_to_its_first_deployments() -> None:
    full = _uncapped()
    assert len(full.default) > 20  # the cut below is a real one
    for cap in (3, 8):
        rc = compile_region("r-east", [_table()], PROFILE, EnvoySettings(order_cap=cap))
        m = rc.models[M]
        assert m.default == full.default[:cap]
        assert _children(rc, f"model:{M}") == [cluster_name(d) for d in full.default[:cap]]
        assert len(m.classes) == len(full.classes)
        for i, (k, f) in enumerate(zip(m.classes, full.classes, strict=True)):
            assert (k.lo, k.hi, k.order) == (f.lo, f.hi, f.order[:cap])
            if k.order:
                assert _children(rc, f"model:{M}:slo{i}") == [cluster_name(d) for d in k.order]
    # a short order is left whole
    short = compile_region("r-east", [_table(5)], PROFILE, EnvoySettings())
    assert len(short.models[M].default) == 5


def test_a_routes_prices_are_only_its_capped_orders_deployments() -> None:
    rc = compile_region("r-east", [_table()], PROFILE, EnvoySettings())
    m = rc.models[M]
    routes = _model_routes(rc)
    orders = [*(k.order for k in m.classes), m.default]  # the routes' order, default last
    assert len(routes) == len(orders)
    for r, order in zip(routes, orders, strict=True):
        data = r["metadata"]["filter_metadata"][LISTENER_FILTER]
        assert set(data["cost"]) == set(order) and len(order) == 8
        assert set(data["feasible"]) <= set(order)
    assert len({k.order for k in m.classes}) > 1  # routes whose prices differ
    assert set(m.cost_usd) == set(m.default).union(*(k.order for k in m.classes))


def test_a_split_class_keeps_its_rotations_each_cut_and_priced() -> None:
    """A busy class split over many deployments: each rotation starts at its deployment (one
    past the order's cap too) and is cut at the cap; the route prices every one reached."""
    learned = Learned(rates={(M, None): 400.0})
    full = _uncapped(learned)
    rots = full.rotations[None]
    assert len(rots) > 3  # split over more deployments than the cap below keeps
    cap = 3
    rc = compile_region("r-east", [_table()], PROFILE, EnvoySettings(order_cap=cap), learned)
    m = rc.models[M]
    assert m.rotations[None] == tuple((w, o[:cap]) for w, o in rots)
    beyond = [o[0] for _, o in rots if o[0] not in m.default]
    assert beyond  # a rotation's first deployment past the cut order
    reached = set(m.default).union(*(o for _, o in m.rotations[None]))
    data = _model_routes(rc)[-1]["metadata"]["filter_metadata"][LISTENER_FILTER]
    assert set(data["cost"]) == reached
    assert set(beyond) <= set(data["feasible"])  # what the split sends them meets the SLO
    for _, o in m.rotations[None]:
        assert _children(rc, f"model:{M}@{o[0]}") == [cluster_name(d) for d in o]


def test_nothing_the_class_excludes_enters_a_capped_order() -> None:
    """Every cut order is a prefix of the order placement ranked for its class (already
    filtered for it): the drained rows, cheapest of all, are in no order and no price."""
    learned = Learned(rates={(M, None): 400.0, (M, 150): 5.0})
    full = _uncapped(learned)
    rc = compile_region("r-east", [_table()], PROFILE, EnvoySettings(order_cap=4), learned)
    m = rc.models[M]
    ranked_sets = [set(full.default), *(set(k.order) for k in full.classes)]
    assert not any(set(DROPPED) & s for s in ranked_sets)
    for cut, whole in [(m.default, full.default),
                       *((k.order, f.order) for k, f in zip(m.classes, full.classes,
                                                            strict=True))]:
        assert cut == whole[:len(cut)]
    for i, rots in m.rotations.items():
        for (_, cut), (_, whole) in zip(rots, full.rotations[i], strict=True):
            assert cut == whole[:len(cut)]
    children = {c for name in rc.clusters if name.startswith("model:")
                for c in _children(rc, name)}
    assert not children & {cluster_name(d) for d in DROPPED}
    for r in _model_routes(rc):
        data = r["metadata"]["filter_metadata"][LISTENER_FILTER]
        assert not set(data["cost"]) & set(DROPPED)
