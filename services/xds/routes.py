"""The route configuration placement pushes to the Envoy edges of one region.

``routes:<R>`` holds, per logical model M, routes matching ``x-switchyard-model: M`` (the
header the listener's Lua filter sets from the request body) and the call's SLO class
(``x-switchyard-slo-ms``, whole ms, set by the same filter from ``x-slo-ms`` or the
deadline) to the aggregate of that class's order; without either, the model's default
SLO's order; when no deployment may serve M, a local 503 (UNAVAILABLE to gRPC callers).
Each such route carries, in metadata for the listener's Lua, what the Python edge's
``x-cost-usd`` and ``x-slo-met`` trailers need: each deployment's cost per call, which ones
meet the route's SLO, and (default route) the model's default SLO. Prices live there, not
in the deployment clusters, so a price change is a route update, never a cluster rebuild.

Its first route sends calls the listener's Lua marked ``x-switchyard-path: slow`` (streams,
hints compiled config cannot express, tenants' calls) to the cluster ``slow-path``, the
Envoy's co-located Python edge. No retries there: the Python edge runs the attempt policy
itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Registered in the default descriptor pool so ParseDict can resolve each "@type".
from envoy.config.route.v3 import route_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import (  # noqa: F401
    previous_hosts_pb2 as _previous_hosts_pb2,
)
from envoy.extensions.retry.priority.previous_priorities.v3 import (  # noqa: F401
    previous_priorities_config_pb2 as _previous_priorities_pb2,
)
from google.protobuf import json_format

from placement.attempts import RETRYABLE, VARIANT_GONE, VARIANT_GONE_PATTERN
from services.edge import deadline
from services.xds import lua, native, rewrite
from services.xds.envoy_types import (
    SLOW_PATH_CLUSTER,
    EnvoySettings,
    T,
    model_cluster_name,
    route_config_name,
)
from services.xds.order import SloClass, reachable

_T = T
_NO_END = 2**62  # range_match end for the last SLO class


@dataclass(frozen=True)
class ModelRoutes:
    default: tuple[str, ...]  # the order for calls with the model's default SLO
    classes: tuple[SloClass, ...]  # orders for calls that carry an SLO
    default_feasible: frozenset[str] = frozenset()  # of ``default``, those meeting the SLO
    default_slo_ms: float | None = None
    cost_usd: Mapping[str, float] = field(default_factory=dict)  # per call, by deployment
    # class index (None: the default route) -> weighted rotations of its order
    # (``order.weighted``); a class without any routes to its one aggregate
    rotations: Mapping[int | None, tuple[tuple[float, tuple[str, ...]], ...]] = field(
        default_factory=dict)
    # class index -> calls in flight planned through each of its aggregates (by its
    # rotation's first deployment; None: the order's own), ``order.WeightedOrder.inflight``:
    # what each aggregate's retry budget is compiled from (``clusters.retry_concurrency``)
    inflight: Mapping[int | None, Mapping[str | None, float]] = field(default_factory=dict)


def rotation_cluster_name(model: str, slo_class: int | None, first: str) -> str:
    """The aggregate of a class's order rotated to start at deployment ``first``."""
    return f"{model_cluster_name(model, slo_class)}@{first}"


def _weighted(model: str, slo_class: int | None, m: ModelRoutes) -> list[tuple[str, float]]:
    return [(rotation_cluster_name(model, slo_class, order[0]), w)
            for w, order in m.rotations.get(slo_class, ())]


def _slow_path_route() -> dict[str, Any]:
    """Calls the listener's Lua marked slow, to the co-located Python edge, which runs the
    attempt policy itself (no retries here) under the caller's own deadline: it gets the
    caller's grpc-timeout and answers an expired one DEADLINE_EXCEEDED in the stream's own
    trailers. No max_stream_duration here: Envoy's timer, started from the same header,
    could fire before the caller's own and reset a stream whose headers were already sent
    (RST_STREAM, INTERNAL to the caller, tests/integration/test_hostile_engines.py). No idle
    timeout either: a stream silent for a while (a caller between its requests, a long
    prefill) lives, as on a Python edge, until its caller's deadline or cancel or the slow
    path ends it; the listener's ``stream_idle_timeout`` (``listener.STREAM_IDLE_TIMEOUT_S``)
    ended it there, UNKNOWN "stream timeout" (tests/integration/test_envoy_stream_hostile.py).
    The caller's deadline counts from when Envoy's stream began, not from when the slow path
    got Envoy's headers (later: a caller's deadline ran out first and the slow path counted
    a cancel, ``services.edge.deadline``): Envoy's START_TIME and the caller's grpc-timeout,
    each overwriting what a caller sent."""
    told = [{"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for k, v in ((deadline.START_HEADER, "%START_TIME(%s.%6f)%"),
                         (deadline.TIMEOUT_HEADER, "%REQ(grpc-timeout)%"))]
    return {"name": "slow-path", "match": {"prefix": "/", "headers": [
                {"name": lua.PATH_HEADER, "string_match": {"exact": "slow"}}]},
            "request_headers_to_remove": [lua.PATH_HEADER], "request_headers_to_add": told,
            "metadata": {"filter_metadata": {lua.LISTENER_FILTER: {"path": "slow"}}},
            "route": {"cluster": SLOW_PATH_CLUSTER, "timeout": "0s", "idle_timeout": "0s"}}


def _trailer_metadata(m: ModelRoutes, feasible: frozenset[str], slo_ms: float | None,
                      order: Sequence[str], slo_class: int | None) -> dict[str, Any]:
    """What the listener's Lua needs for a fast-path call's ``x-cost-usd``/``x-slo-met``, and
    the variant of the order's first deployment, which it appends to the body once
    (``services/xds/rewrite.py``: the upstream Lua then rewrites only for another variant).
    Prices and feasibility only of the deployments this route's order and rotations reach
    (a call is answered by one of them): at 10,000 deployments every route listing every
    price was most of the route configuration's bytes."""
    sent = reachable(order, m.rotations.get(slo_class, ()))
    data: dict[str, Any] = {
        "path": "envoy",
        "cost": {d: f"{c:.10f}" for d, c in sorted(m.cost_usd.items()) if d in sent},
        "feasible": dict.fromkeys(sorted(feasible & sent), True)}
    if order:
        first = data[rewrite.FIRST_VARIANT_KEY] = order[0].rsplit("/", 1)[-1]
        if all(d.rsplit("/", 1)[-1] == first for d in sent):
            # no upstream rewrite reads x-switchyard-named: the module sets none for Triton
            data[rewrite.ONE_VARIANT_KEY] = True
    if slo_ms is not None:
        data["slo_ms"] = slo_ms
    # the C dynamic module reads cost and feasibility flattened (native.route_metadata)
    return {"metadata": {"filter_metadata": native.route_metadata({lua.LISTENER_FILTER: data})}}


def retry_on() -> str:
    """Envoy's gRPC retry conditions for a model route: connection failures and resets, and
    the statuses the attempt policy retries at another deployment (``placement.attempts``)
    that Envoy can tell apart: UNAVAILABLE and RESOURCE_EXHAUSTED (a full queue there), and
    ``VARIANT_GONE`` (Triton's NOT_FOUND for a variant it unloads or no longer serves), which
    Envoy has no status condition for: ``retriable-headers`` over ``GONE_HEADERS``. A
    timed-out attempt is retried through ``per_try_timeout``; CANCELLED and DEADLINE_EXCEEDED
    answers may be the caller's own, and ABORTED has no Envoy condition."""
    statuses = [name for status, name in (("UNAVAILABLE", "unavailable"),
                                          ("RESOURCE_EXHAUSTED", "resource-exhausted"))
                if status in RETRYABLE]
    gone = ["retriable-headers"] if VARIANT_GONE in RETRYABLE else []
    return ",".join([*statuses, *gone, "reset", "connect-failure", "refused-stream"])


# Triton answers an unknown model trailers-only: its grpc-status and grpc-message are
# response headers, which is where ``retriable_headers`` looks. The message is the policy's
# own pattern (RE2 here); a NOT_FOUND for a version the caller named does not match, and a
# NOT_FOUND local reply of the edge's own never reaches the router's retry.
GONE_HEADERS = [{"name": "grpc-message",
                 "string_match": {"safe_regex": {"regex": VARIANT_GONE_PATTERN}}}]


def per_try_timeout_s(slo_ms: float, s: EnvoySettings) -> float:
    """When the next deployment is tried beside an attempt on a route whose calls have at
    least ``slo_ms``: a share of the SLO that leaves the other attempts their turn (the
    Python edge's floor below it). Envoy counts the attempt as a gateway failure, fed to
    outlier detection, so a backend whose queue grows (one deployment taking every call
    while another restarts) is left; when that ejects every deployment of a route, the
    route still tries them (panic, ``clusters.py``). The attempt itself is not cut there
    (``HEDGE``): it keeps the rest of the caller's deadline."""
    return max(s.min_attempt_timeout_s, slo_ms / 1000 / s.max_attempts)


# A timed-out attempt is not cancelled: the next deployment is tried beside it (a hedge) and
# the first good answer wins, so every attempt may use the rest of the caller's deadline, as
# the Python edge's last attempt does (``placement.attempts.CallAttempts.next_timeout``).
# Cut at its per-try timeout instead, a call got max_attempts x max(250 ms, SLO / 3) of its
# deadline: ~750 ms of a 2 s one, and on a loaded host (load 7-13) every attempt of a call
# after a backend was killed took longer (test_envoy_drills: "upstream request timeout").
# A hedge the retry budget or num_retries refuses loses nothing: the attempt runs on. A
# caller's own deadline still ends the call as Envoy's reply (max_stream_duration), never a
# failure outlier detection counts.
HEDGE = {"hedge_on_per_try_timeout": True}


def _route_action(model: str, cluster: str, order: Sequence[str], s: EnvoySettings,
                  slo_ms: float | None = None,
                  weighted: Sequence[tuple[str, float]] = ()) -> dict[str, Any]:
    """``weighted``: (cluster, fraction) to split the calls over (Envoy picks one per call
    by weight) instead of ``cluster``."""
    if not order:
        return {"direct_response": {"status": 503, "body": {
            "inline_string": f"no deployment may serve {model!r} now"}}}
    target: dict[str, Any] = {"cluster": cluster} if not weighted else {
        "weighted_clusters": {"clusters": [{"name": n, "weight": max(1, round(w * 1000))}
                                           for n, w in weighted]}}
    route = {
        **target, "timeout": "0s",
        "max_stream_duration": {"grpc_timeout_header_max": "0s"},
        **({} if slo_ms is None else {"hedge_policy": HEDGE}),
        "retry_policy": {
            "retry_on": retry_on(),
            "retriable_headers": GONE_HEADERS,
            "num_retries": s.max_attempts - 1,
            **({} if slo_ms is None else
               {"per_try_timeout": f"{per_try_timeout_s(slo_ms, s):.3f}s"}),
            "retry_priority": {
                "name": "envoy.retry_priorities.previous_priorities", "typed_config": {
                    "@type": _T + "envoy.extensions.retry.priority.previous_priorities.v3"
                                  ".PreviousPrioritiesConfig",
                    "update_frequency": 1}},
            "retry_host_predicate": [{
                "name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
                    "@type": _T + "envoy.extensions.retry.host.previous_hosts.v3"
                                  ".PreviousHostsPredicate"}}],
            "host_selection_retry_max_attempts": 3}}
    # The backend never sees the caller's deadline: Envoy enforces it itself (the route's
    # max_stream_duration, from the caller's grpc-timeout, read before this removal), and an
    # expired deadline is then Envoy's own reply and a reset of the attempt, which outlier
    # detection never counts. Forwarded, the backend's own DEADLINE_EXCEEDED raced Envoy's
    # timer and, a 504 to outlier detection, ejected a healthy deployment after three calls
    # whose deadline was shorter than its service time (tests/integration/
    # test_envoy_hostile.py). Per-try timeouts are Envoy's and still eject (clusters.py).
    return {"request_headers_to_remove": ["grpc-timeout"], "route": route}


def _model_routes(model: str, m: ModelRoutes, s: EnvoySettings) -> list[dict[str, Any]]:
    """One route per SLO class (by the whole-ms SLO header), then the default SLO's."""
    is_model = {"name": lua.MODEL_HEADER, "string_match": {"exact": model}}
    routes = []
    for i, k in enumerate(m.classes):
        in_class = {"name": lua.SLO_HEADER, "range_match": {
            "start": k.lo, "end": _NO_END if k.hi is None else k.hi}}
        routes.append({"name": f"{model} slo [{k.lo}, {k.hi or ''})",
                       "match": {"prefix": "/", "headers": [is_model, in_class]},
                       **_route_action(model, model_cluster_name(model, i), k.order, s,
                                       k.lo, _weighted(model, i, m)),
                       **_trailer_metadata(m, k.feasible, None, k.order, i)})
    routes.append({"name": model, "match": {"prefix": "/", "headers": [is_model]},
                   **_route_action(model, model_cluster_name(model), m.default, s,
                                   m.default_slo_ms, _weighted(model, None, m)),
                   **_trailer_metadata(m, m.default_feasible, m.default_slo_ms, m.default,
                                      None)})
    return routes


# the RPCs whose request names the model (lua.NAMED_RPCS), by path
NAMED_PATHS = f"^{re.escape(lua.SERVICE_PATH)}({'|'.join(lua.NAMED_RPCS)})$"


def route_configuration(region: str, models: dict[str, ModelRoutes],
                        s: EnvoySettings) -> route_pb2.RouteConfiguration:
    routes = [_slow_path_route(),
              *(r for m in sorted(models) for r in _model_routes(m, models[m], s))]
    # Liveness and readiness: answered by the deployment the first servable model's calls
    # would go to (a Python edge answers them itself).
    servable = [m for m in sorted(models) if models[m].default]
    if servable:
        routes += [{"name": rpc, "match": {"path": lua.SERVICE_PATH + rpc},
                    **_route_action(servable[0], model_cluster_name(servable[0]),
                                    models[servable[0]].default, s)}
                   for rpc in ("ServerLive", "ServerReady")]
    # A named RPC no model route matched: NOT_FOUND, naming what the mesh serves.
    # The listener's local-reply mapper puts "model '<the name it read>' " before the body:
    # the Python edge's router's words (Router.candidates).
    routes.append({"name": "unknown-model", "match": {"safe_regex": {"regex": NAMED_PATHS}},
                   "direct_response": {"status": 404, "body": {"inline_string": (
                       "is not served by this mesh (known: "
                       f"{', '.join(sorted(models)) or 'none yet: no route table'})")}},
                   "response_headers_to_add": [grpc_status(5)]})
    return json_format.ParseDict({
        "name": route_config_name(region),
        # The slow-path route names a cluster only nodes with a slow path have (their Lua
        # alone sends calls there); a static snapshot of a node without one must still load.
        "validate_clusters": False,
        "virtual_hosts": [{"name": "models", "domains": ["*"], "routes": routes,
                           "request_body_buffer_limit": s.buffer_bytes}],
    }, route_pb2.RouteConfiguration())


def grpc_status(code: int) -> dict[str, Any]:
    """A header that makes Envoy's local reply to a gRPC call carry this status (instead of
    the one it derives from the HTTP code, e.g. UNKNOWN for 413)."""
    return {"header": {"key": "grpc-status", "value": str(code)},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
