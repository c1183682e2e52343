"""Route tables compiled to Envoy resources: failover order from placement's own pipeline,
stable per-deployment clusters, the variant in endpoint metadata, a local 503 for nothing."""

from __future__ import annotations

import re
from typing import Any

import pytest
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from google.protobuf import json_format

from placement.attempts import VARIANT_GONE, attempt_status
from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.convert import candidate_from_pb
from services.xds.order import SloClass, failover_order, slo_classes
from services.xds.resources import (
    EnvoySettings,
    cluster_name,
    compile_region,
    listener,
    model_cluster_name,
    route_config_name,
    slow_path_cluster,
)

PROFILE = build_profile("cheapest")


def _cand(dep: str, cost: float, p95: float, dropped: str = "", port: int = 9000,
          spare: float = 100.0) -> placement_pb2.Candidate:
    backend, variant = dep.split("/")
    return placement_pb2.Candidate(
        deployment_id=dep, backend_id=backend, endpoint=f"127.0.0.1:{port}", variant=variant,
        region="r-east", cloud="aws", quality=0.9, latency_p95_ms=p95, cost_usd=cost,
        spare_capacity=spare, dropped_reason=dropped, concurrency=4)


def _table(*cands: placement_pb2.Candidate, slo: float = 300) -> placement_pb2.RouteTable:
    return placement_pb2.RouteTable(model="summarize", edge_region="r-east", version=3,
                                    default_slo_ms=slo, candidates=cands)


def test_failover_order_is_feasible_cheapest_first_then_hard_ok_fastest_first() -> None:
    table = _table(_cand("cheap/s", 1e-6, 900),        # misses the SLO: fallback
                   _cand("mid/s", 2e-6, 100),
                   _cand("fast/s", 9e-6, 20),
                   _cand("slowest/s", 1e-7, 2000),     # misses the SLO, slower still
                   _cand("drained/s", 1e-8, 10, dropped="drained"))  # never
    cands = [candidate_from_pb(c) for c in table.candidates]
    order = [c.deployment_id for c in failover_order(cands, PROFILE, 300, 2.0)]
    assert order == ["mid/s", "fast/s", "cheap/s", "slowest/s"]


def test_a_retry_goes_to_another_server_before_another_variant_of_the_one_that_failed() -> None:
    table = _table(_cand("a/small", 1e-6, 50), _cand("a/large", 2e-6, 60),
                   _cand("b/small", 3e-6, 70))
    cands = [candidate_from_pb(c) for c in table.candidates]
    order = [c.deployment_id for c in failover_order(cands, PROFILE, 300, 2.0)]
    assert order == ["a/small", "b/small", "a/large"]  # cheapest first; a's sibling last


def test_slo_classes_change_order_exactly_where_a_deployment_starts_to_fit() -> None:
    # p95 + margin: fast 22 ms, mid 102, cheap 902 (margin 2); cheapest that fits wins.
    table = _table(_cand("cheap/s", 1e-6, 900), _cand("mid/s", 2e-6, 100),
                   _cand("fast/s", 9e-6, 20))
    cands = [candidate_from_pb(c) for c in table.candidates]
    classes = slo_classes(cands, PROFILE, 2.0)
    # Below 22 nothing fits (fastest first, best effort) and from 22 only fast does: the
    # same order, but a call served by fast meets its SLO only in the second class (its
    # x-slo-met), so two classes.
    assert [(k.lo, k.hi, k.order, k.feasible) for k in classes] == [
        (0, 22, ("fast/s", "mid/s", "cheap/s"), frozenset()),
        (22, 102, ("fast/s", "mid/s", "cheap/s"), {"fast/s"}),
        (102, 902, ("mid/s", "fast/s", "cheap/s"), {"fast/s", "mid/s"}),
        (902, None, ("cheap/s", "mid/s", "fast/s"), {"fast/s", "mid/s", "cheap/s"})]
    for k in classes:  # the pipeline agrees at both ends of every class
        for slo in (k.lo, (k.hi or k.lo + 10_000) - 1):
            assert tuple(c.deployment_id for c in failover_order(cands, PROFILE, slo, 2.0)
                         ) == k.order, (k, slo)
    assert isinstance(classes[0], SloClass)


def test_a_region_compiles_to_stable_deployment_clusters_an_aggregate_and_routes() -> None:
    s = EnvoySettings()
    table = _table(_cand("b1/summarize-large", 2e-6, 50, port=9001),
                   _cand("b2/summarize-small", 1e-6, 80, port=9002))
    rc = compile_region("r-east", [table], PROFILE, s)
    default = ["b2/summarize-small", "b1/summarize-large"]
    assert rc.orders == {"summarize": default}
    agg = aggregate_pb2.ClusterConfig()
    rc.clusters[model_cluster_name("summarize")].message.cluster_type.typed_config.Unpack(agg)
    assert list(agg.clusters) == [cluster_name(d) for d in default]
    dep = rc.clusters[cluster_name("b1/summarize-large")].message
    lb = dep.load_assignment.endpoints[0].lb_endpoints[0]
    assert lb.endpoint.address.socket_address.port_value == 9001
    assert lb.metadata.filter_metadata["switchyard"]["variant"] == "summarize-large"
    # Load and prices move: the deployment clusters stay byte-identical (no rebuild in Envoy).
    moved = _table(_cand("b1/summarize-large", 5e-7, 40, port=9001),
                   _cand("b2/summarize-small", 1e-6, 95, port=9002))
    rc2 = compile_region("r-east", [moved], PROFILE, s)
    for name in (cluster_name("b1/summarize-large"), cluster_name("b2/summarize-small")):
        assert rc2.clusters[name].version == rc.clusters[name].version
    assert rc2.orders["summarize"] == ["b1/summarize-large", "b2/summarize-small"]
    routes = rc.routes[route_config_name("r-east")].message.virtual_hosts[0].routes
    by_name = {r.name: r for r in routes}
    plain = by_name["summarize"]  # no SLO header: the model's default SLO's order
    assert [h.name for h in plain.match.headers] == ["x-switchyard-model"]
    assert plain.route.cluster == model_cluster_name("summarize")
    assert plain.route.retry_policy.num_retries.value == s.max_attempts - 1
    # Whole-ms SLOs below 82 (small's 80 + margin 2): large first; from 82: small first.
    # Below 52 (large's 50 + 2) nothing meets the SLO: the same order, a best effort.
    none, tight, loose = (r for r in routes if r.name.startswith("summarize slo"))
    assert tight.match.headers[-1].name == "x-switchyard-slo-ms"
    assert [(r.match.headers[-1].range_match.start, r.match.headers[-1].range_match.end)
            for r in (none, tight)] == [(0, 52), (52, 82)]
    assert loose.match.headers[-1].range_match.start == 82
    assert (tight.route.cluster, loose.route.cluster) == (model_cluster_name("summarize", 1),
                                                          model_cluster_name("summarize", 2))
    for name, order in ((none.route.cluster, ["b1/summarize-large", "b2/summarize-small"]),
                        (tight.route.cluster, ["b1/summarize-large", "b2/summarize-small"]),
                        (loose.route.cluster, default)):
        rc.clusters[name].message.cluster_type.typed_config.Unpack(agg)
        assert list(agg.clusters) == [cluster_name(d) for d in order]
    names = [r.name for r in routes]
    assert names.index(tight.name) < names.index("summarize")  # classes before the default
    # What the listener's Lua needs for x-cost-usd / x-slo-met, per route.
    def trailer_data(route: object) -> dict[str, object]:
        meta = route.metadata.filter_metadata["switchyard.model_name"]  # type: ignore[attr-defined]
        return json_format.MessageToDict(meta)
    costs = {"b1/summarize-large": "0.0000020000", "b2/summarize-small": "0.0000010000"}
    # ... and the variant of the order's first deployment, which the listener appends once.
    assert trailer_data(plain) == {"path": "envoy", "cost": costs, "slo_ms": 300.0,
                                   "feasible": {"b1/summarize-large": True,
                                                "b2/summarize-small": True},
                                   "first_variant": default[0].rsplit("/", 1)[1]}
    assert trailer_data(none) == {"path": "envoy", "cost": costs, "feasible": {},
                                  "first_variant": "summarize-large"}
    assert trailer_data(tight)["feasible"] == {"b1/summarize-large": True}
    assert trailer_data(tight)["first_variant"] == "summarize-large"
    # Prices move: the routes change (cheap to push), the deployment clusters did not above.
    assert (rc2.routes[route_config_name("r-east")].version
            != rc.routes[route_config_name("r-east")].version)


def test_calls_marked_slow_go_first_to_the_nodes_python_edge_without_retries() -> None:
    s = EnvoySettings()
    rc = compile_region("r-east", [_table(_cand("b1/s", 1e-6, 50))], PROFILE, s)
    first = rc.routes[route_config_name("r-east")].message.virtual_hosts[0].routes[0]
    assert [(h.name, h.string_match.exact) for h in first.match.headers] == [
        ("x-switchyard-path", "slow")]
    assert first.route.cluster == "slow-path" and not first.route.HasField("retry_policy")
    assert list(first.request_headers_to_remove) == ["x-switchyard-path"]
    slow = slow_path_cluster(7001, s)
    assert slow.circuit_breakers.thresholds[0].max_requests.value > 100_000  # not Envoy's 1024
    assert slow.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address \
        .port_value == 7001
    # The listener's Lua sends slow calls there only when the node has a slow path.
    hcm = http_connection_manager_pb2.HttpConnectionManager()
    for has, flag in ((True, "local SLOW_PATH = true"), (False, "local SLOW_PATH = false")):
        listener("127.0.0.1", 1, "r-east", s, slow_path=has).filter_chains[0].filters[0] \
            .typed_config.Unpack(hcm)
        lua = lua_pb2.Lua()
        hcm.http_filters[0].typed_config.Unpack(lua)
        assert flag in lua.default_source_code.inline_string


def test_a_model_nothing_may_serve_gets_a_local_503_and_no_aggregate() -> None:
    table = _table(_cand("b1/s", 1e-6, 50, dropped="drained"))
    rc = compile_region("r-east", [table], PROFILE, EnvoySettings())
    assert not [n for n in rc.clusters if n.startswith("model:")]
    assert cluster_name("b1/s") in rc.clusters  # kept: it comes back without a rebuild
    routes = rc.routes[route_config_name("r-east")].message.virtual_hosts[0].routes
    (route,) = (r for r in routes if r.name == "summarize")
    assert route.direct_response.status == 503


def test_envoys_own_replies_carry_the_documented_grpc_statuses() -> None:
    s = EnvoySettings(max_message_bytes=1 << 20)
    rc = compile_region("r-east", [_table(_cand("b1/s", 1e-6, 50))], PROFILE, s)
    last = rc.routes[route_config_name("r-east")].message.virtual_hosts[0].routes[-1]
    assert last.name == "unknown-model"
    assert "ModelInfer|ModelReady" in last.match.safe_regex.regex
    assert "(known: summarize)" in last.direct_response.body.inline_string
    assert [(h.header.key, h.header.value) for h in last.response_headers_to_add] == [
        ("grpc-status", "5")]  # NOT_FOUND, not the UNIMPLEMENTED Envoy derives from 404
    hcm = http_connection_manager_pb2.HttpConnectionManager()
    listener("127.0.0.1", 50051, "r-east", s).filter_chains[0].filters[0].typed_config.Unpack(hcm)
    def status(m: Any) -> int:
        f = m.filter.and_filter.filters[0] if m.filter.HasField("and_filter") else m.filter
        return int(f.status_code_filter.comparison.value.default_value)

    mapped = {status(m): [(h.header.key, h.header.value) for h in m.headers_to_add]
              for m in hcm.local_reply_config.mappers}
    # over the limit: RESOURCE_EXHAUSTED, not UNKNOWN; no healthy upstream, overflow, a
    # refused connection: UNAVAILABLE; the deadline: DEADLINE_EXCEEDED; malformed:
    # INVALID_ARGUMENT (Envoy alone would say INTERNAL); silent past the stream idle
    # timeout: UNAVAILABLE (Envoy alone: UNKNOWN)
    assert mapped == {413: [("grpc-status", "8")], 503: [("grpc-status", "14")],
                      408: [("grpc-status", "14")],
                      504: [("grpc-status", "4")], 400: [("grpc-status", "3")],
                      404: [("grpc-status", "5")]}
    assert str(1 << 20) in hcm.local_reply_config.mappers[0].body.inline_string
    # the caller's deadline (not an attempt's timeout, UT) and an unknown model in the
    # Python edge's words (tests/integration/test_hostile_round10_native.py)
    words = {(status(m), m.filter.HasField("and_filter")): m for m in
             hcm.local_reply_config.mappers}
    assert words[504, True].filter.and_filter.filters[1].response_flag_filter.flags == ["UT"]
    assert not words[504, True].HasField("body")
    assert words[504, False].body.inline_string == "Deadline Exceeded"
    assert words[404, True].body_format_override.text_format_source.inline_string == (
        "model '%REQ(x-switchyard-model)%' %LOCAL_REPLY_BODY%")


def test_a_full_queue_is_retried_at_the_next_deployment_under_the_retry_budget() -> None:
    # The attempt policy retries RESOURCE_EXHAUSTED elsewhere (placement.attempts.RETRYABLE):
    # every model route's retry policy does too, and the aggregates keep their retry budget.
    s = EnvoySettings()
    table = _table(_cand("b1/summarize-large", 2e-6, 50, port=9001),
                   _cand("b2/summarize-small", 1e-6, 80, port=9002))
    rc = compile_region("r-east", [table], PROFILE, s)
    routes = rc.routes[route_config_name("r-east")].message.virtual_hosts[0].routes
    model_routes = [r for r in routes if r.name.startswith("summarize")]
    assert len(model_routes) == 4  # three SLO classes and the default
    for r in model_routes:
        conditions = r.route.retry_policy.retry_on.split(",")
        assert {"resource-exhausted", "unavailable"} <= set(conditions), r.name
        assert r.route.retry_policy.num_retries.value == s.max_attempts - 1
    slow = next(r for r in routes if r.name == "slow-path")
    assert not slow.route.HasField("retry_policy")  # the Python edge retries for itself
    # ... and ends an expired deadline itself, in the stream's trailers (Envoy's timer could
    # reset a stream whose headers were sent: INTERNAL to the caller)
    assert not slow.route.HasField("max_stream_duration")
    budget = rc.clusters[model_cluster_name("summarize")].message.circuit_breakers
    (threshold,) = budget.thresholds
    assert threshold.retry_budget.budget_percent.value == s.retry_budget_percent


@pytest.mark.parametrize(("details", "retried"), [
    ("Request for unknown model: 'summarize-small' has no available versions", True),
    ("Request for unknown model: 'summarize-small' is not found", True),
    ("Request for unknown model: 'summarize-small' version 7 is not found", False),
    ("some model's own NOT_FOUND", False),
])
def test_a_variant_gone_is_retried_by_envoy_as_the_attempt_policy_retries_it(
        details: str, retried: bool) -> None:
    # Envoy has no gRPC NOT_FOUND condition: every model route matches Triton's message in
    # its response headers (trailers-only) with the attempt policy's own pattern.
    table = _table(_cand("b1/summarize-large", 2e-6, 50, port=9001),
                   _cand("b2/summarize-small", 1e-6, 80, port=9002))
    rc = compile_region("r-east", [table], PROFILE, EnvoySettings())
    routes = rc.routes[route_config_name("r-east")].message.virtual_hosts[0].routes
    for r in (r for r in routes if r.name.startswith("summarize")):
        policy = r.route.retry_policy
        assert "retriable-headers" in policy.retry_on.split(","), r.name
        (matcher,) = policy.retriable_headers
        assert matcher.name == "grpc-message"
        pattern = matcher.string_match.safe_regex.regex
        assert bool(re.match(pattern, details)) is retried, (r.name, details)
        assert (attempt_status("NOT_FOUND", details) == VARIANT_GONE) is retried
