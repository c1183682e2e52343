"""A call through an Envoy edge keeps its attempts until its own deadline (issue 12): what the
model routes placement pushes say about attempts that outlast their per-try timeout.

Envoy's router (1.40, ``Filter::onPerTryTimeout``): without ``hedge_on_per_try_timeout`` a
per-try timeout resets the attempt and retries; once ``num_retries`` are spent, or when the
retry budget refuses one, the call fails "upstream request timeout" (504, DEADLINE_EXCEEDED).
With it, the attempt is not reset: the next one starts beside it, a refused retry only means no
further attempt, and the call ends at the first good answer or at the caller's deadline
(``max_stream_duration`` from its grpc-timeout), Envoy's own reply there.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2, route_pb2

from placement.attempts import AttemptSettings
from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.xds.resources import EnvoySettings, compile_region, route_config_name

PROFILE = build_profile("cheapest")
DRILL_DEADLINE_S = 2.0  # tests/drill_harness.py: every drill call's deadline


def _cand(dep: str, p95: float, port: int) -> placement_pb2.Candidate:
    backend, variant = dep.split("/")
    return placement_pb2.Candidate(
        deployment_id=dep, backend_id=backend, endpoint=f"127.0.0.1:{port}", variant=variant,
        region="r-east", cloud="aws", quality=0.9, latency_p95_ms=p95, cost_usd=1e-6 * port,
        spare_capacity=100.0, concurrency=4)


def _routes(s: EnvoySettings) -> dict[str, route_components_pb2.Route]:
    table = placement_pb2.RouteTable(
        model="summarize", edge_region="r-east", version=1, default_slo_ms=300, candidates=[
            _cand("a/summarize-small", 80, 9001), _cand("b/summarize-small", 50, 9002),
            _cand("c/summarize-large", 120, 9003)])
    rc = compile_region("r-east", [table], PROFILE, s)
    config = rc.routes[route_config_name("r-east")].message
    assert isinstance(config, route_pb2.RouteConfiguration)
    return {r.name: r for r in config.virtual_hosts[0].routes}


def answered_until_s(route: route_components_pb2.Route, deadline_s: float) -> float:
    """How far into the caller's deadline an attempt of the call may still answer when every
    attempt outlasts its per-try timeout (the reading of Envoy's router above)."""
    policy = route.route.retry_policy
    per_try = float(policy.per_try_timeout.ToNanoseconds()) / 1e9
    if route.route.hedge_policy.hedge_on_per_try_timeout or not per_try:
        return deadline_s
    return min(deadline_s, (int(policy.num_retries.value) + 1) * per_try)


def test_every_model_route_keeps_a_timed_out_attempt_until_the_callers_deadline() -> None:
    s = EnvoySettings()
    routes = _routes(s)
    model_routes = [r for n, r in routes.items() if n.startswith("summarize")]
    assert len(model_routes) >= 2  # SLO classes and the default route
    for r in model_routes:
        assert r.route.retry_policy.per_try_timeout.ToMilliseconds() >= 250, r.name
        assert r.route.hedge_policy.hedge_on_per_try_timeout, r.name
        # the caller's deadline, not a route timeout, ends the call
        assert r.route.timeout.ToNanoseconds() == 0, r.name
        assert r.route.max_stream_duration.grpc_timeout_header_max.ToNanoseconds() == 0, r.name
        assert "grpc-timeout" in r.request_headers_to_remove, r.name
        # attempts as the Python edge makes them (placement.attempts: max_attempts)
        assert r.route.retry_policy.num_retries.value == s.max_attempts - 1, r.name


def test_a_drill_calls_attempts_cover_its_2_s_deadline() -> None:
    # A drill's call (2 s deadline, its SLO the deadline less the margin: the loosest class)
    # on a host where every attempt outlasts 250 ms: before, it failed at 3 x 250 ms.
    routes = _routes(EnvoySettings())
    loosest = max((r for n, r in routes.items() if n.startswith("summarize slo")),
                  key=lambda r: r.match.headers[-1].range_match.start)
    assert loosest.match.headers[-1].range_match.end > 1995
    assert loosest.route.retry_policy.per_try_timeout.ToMilliseconds() == 250
    assert answered_until_s(loosest, DRILL_DEADLINE_S) == DRILL_DEADLINE_S
    for name in ("summarize", *(n for n in routes if n.startswith("summarize slo"))):
        assert answered_until_s(routes[name], DRILL_DEADLINE_S) == DRILL_DEADLINE_S, name


def test_the_reading_of_envoys_router_cuts_attempts_without_a_hedge() -> None:
    # The helper above is not vacuous: the same route without the hedge gives 750 ms.
    r = route_components_pb2.Route()
    r.CopyFrom(_routes(EnvoySettings())["summarize"])
    r.route.ClearField("hedge_policy")
    assert answered_until_s(r, DRILL_DEADLINE_S) == 0.75


def test_health_rpcs_have_no_per_try_timeout_and_so_nothing_to_race() -> None:
    routes = _routes(EnvoySettings())
    for rpc in ("ServerLive", "ServerReady"):
        assert not routes[rpc].route.retry_policy.HasField("per_try_timeout"), rpc
        assert not routes[rpc].route.HasField("hedge_policy"), rpc


def test_the_per_try_floor_is_the_attempt_policys() -> None:
    # One rule: the floor of an attempt's timeout is placement.attempts' (250 ms).
    assert EnvoySettings().min_attempt_timeout_s == AttemptSettings().min_attempt_timeout_s
