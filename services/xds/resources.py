"""Placement's route tables compiled to Envoy resources (clusters, routes, a listener).

What an Envoy edge of region R gets, per logical model M:

- one cluster per deployment ``dep:<deployment_id>`` (one endpoint, the backend; its variant,
  backend and region in endpoint metadata under ``switchyard``). It depends only on the
  deployment, never on load or prices, so a placement change does not rebuild it;
- one aggregate cluster per failover order (``order.py``): ``model:<M>`` for the model's
  default SLO, ``model:<M>:slo<i>`` for its i-th SLO class. Envoy sends each call to the
  first child with healthy hosts and a retry (``previous_priorities``) to the next one. The
  names stay while the classes do, so a new order updates a cluster in place rather than
  adding one and removing another; its upstream filters copy the chosen endpoint's variant
  into a header and rewrite the request's model name (``lua.py``);
- in the route configuration ``routes:<R>``, routes matching ``x-switchyard-model: M`` (the
  header the listener's Lua filter sets from the request body) and the call's SLO class
  (``x-switchyard-slo-ms``, whole ms, set by the same filter from ``x-slo-ms`` or the
  deadline) to the aggregate of that class's order; without either, the model's default
  SLO's order; when no deployment may serve M, a local 503 (UNAVAILABLE to gRPC callers).
  Each such route carries, in metadata for the listener's Lua, what the Python edge's
  ``x-cost-usd`` and ``x-slo-met`` trailers need: each deployment's cost per call, which ones
  meet the route's SLO, and (default route) the model's default SLO. Prices live there, not
  in the deployment clusters, so a price change is a route update, never a cluster rebuild;
- the *slow path*: the route configuration's first route sends calls the listener's Lua
  marked ``x-switchyard-path: slow`` (streams, hints compiled config cannot express) to the
  cluster ``slow-path``, the Envoy's co-located Python edge on 127.0.0.1 (its port from the
  node's metadata, so this cluster is per node, not per region). No retries there: the
  Python edge runs the attempt policy itself.

Resources are built as dicts shaped like Envoy's YAML and parsed into the ``xds-protos``
messages, which checks every field name.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Registered in the default descriptor pool so ParseDict can resolve each "@type".
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2 as _als_pb2  # noqa: F401
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as _aggregate_pb2  # noqa: F401
from envoy.extensions.filters.http.header_mutation.v3 import (  # noqa: F401
    header_mutation_pb2 as _header_mutation_pb2,
)
from envoy.extensions.filters.http.lua.v3 import lua_pb2 as _lua_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2 as _router_pb2  # noqa: F401
from envoy.extensions.filters.http.upstream_codec.v3 import (  # noqa: F401
    upstream_codec_pb2 as _upstream_codec_pb2,
)
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2 as _hcm_pb2,
)
from envoy.extensions.retry.host.previous_hosts.v3 import (  # noqa: F401
    previous_hosts_pb2 as _previous_hosts_pb2,
)
from envoy.extensions.retry.priority.previous_priorities.v3 import (  # noqa: F401
    previous_priorities_config_pb2 as _previous_priorities_pb2,
)
from envoy.extensions.upstreams.http.v3 import (  # noqa: F401
    http_protocol_options_pb2 as _protocol_options_pb2,
)
from google.protobuf import json_format
from google.protobuf.message import Message

from placement.pipeline import Profile
from services.api.switchyard.v1 import placement_pb2
from services.convert import candidate_from_pb
from services.xds import lua, rewrite
from services.xds.order import SloClass, ranked, slo_classes

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
LISTENER_NAME = "ingress"
PLACEMENT_CLUSTER = "placement"  # the one static cluster of an Envoy edge's bootstrap
SLOW_PATH_CLUSTER = "slow-path"  # the node's co-located Python edge
SLOW_PATH_MAX_REQUESTS = 1 << 20

_T = "type.googleapis.com/"
_HEADROOM = 64 * 1024  # gRPC framing, headers, the appended model name
_NO_END = 2**62  # range_match end for the last SLO class


@dataclass(frozen=True, slots=True)
class EnvoySettings:
    """The knobs of the compiled config, from the mesh config (``[edge]``, ``[routing]``)."""

    max_message_bytes: int = 16 * 1024 * 1024
    max_attempts: int = 3
    eject_consecutive_failures: int = 3
    eject_base_s: float = 5.0
    slo_margin_ms: float = 2.0
    deadline_margin_ms: float = 5.0  # no x-slo-ms: SLO = the call's deadline minus this
    connect_timeout_s: float = 1.0
    min_attempt_timeout_s: float = 0.25  # placement.attempts' floor of an attempt timeout
    retry_budget_percent: float = 20.0   # [edge] retry_budget_ratio's default, as a percent
    retry_min_concurrency: int = 10      # retries always allowed in flight per model route

    @property
    def buffer_bytes(self) -> int:
        return self.max_message_bytes + _HEADROOM


@dataclass(frozen=True, slots=True)
class Resource:
    name: str
    version: str  # content hash: equal content, equal version, nothing to push
    message: Message


def cluster_name(deployment_id: str) -> str:
    return f"dep:{deployment_id}"


def model_cluster_name(model: str, slo_class: int | None = None) -> str:
    """The aggregate of the model's default order, or of its ``slo_class``-th SLO class."""
    return f"model:{model}" if slo_class is None else f"model:{model}:slo{slo_class}"


def route_config_name(region: str) -> str:
    return f"routes:{region}"


def resource(name: str, message: Message) -> Resource:
    digest = hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()[:16]
    return Resource(name, digest, message)


def _http2(s: EnvoySettings) -> dict[str, Any]:
    return {"initial_stream_window_size": s.buffer_bytes,
            "initial_connection_window_size": 2 * s.buffer_bytes}


def _address(endpoint: str) -> dict[str, Any]:
    host, _, port = endpoint.rpartition(":")
    return {"socket_address": {"address": host, "port_value": int(port)}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def deployment_cluster(c: placement_pb2.Candidate, s: EnvoySettings) -> cluster_pb2.Cluster:
    name = cluster_name(c.deployment_id)
    host = c.endpoint.rpartition(":")[0]
    return json_format.ParseDict({
        "name": name, "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": f"{s.connect_timeout_s}s",
        "per_connection_buffer_limit_bytes": s.buffer_bytes,
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": _http2(s)}}},
        # The deployment's one host is ejected after consecutive failures (refused or reset
        # connections, 5xx, gRPC UNAVAILABLE...), as the Python edge's outlier detector does;
        # the aggregate then starts calls at the next deployment instead of retrying there.
        "outlier_detection": {
            "consecutive_5xx": s.eject_consecutive_failures,
            "consecutive_gateway_failure": s.eject_consecutive_failures,
            "interval": "1s", "base_ejection_time": f"{s.eject_base_s}s",
            "max_ejection_percent": 100},
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{
            "endpoint": {"address": _address(c.endpoint)},
            "metadata": {"filter_metadata": {lua.METADATA_NAMESPACE: {
                "deployment": c.deployment_id, "variant": c.variant,
                "backend": c.backend_id, "region": c.region}}}}]}]},
    }, cluster_pb2.Cluster())


def _trailer(header: str, value: str) -> dict[str, Any]:
    """Set ``header`` to ``value`` (an Envoy substitution format string)."""
    return {"append": {"header": {"key": header, "value": value},
                       "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}


def _from_endpoint(header: str, key: str) -> dict[str, Any]:
    """Set ``header`` to the chosen endpoint's ``switchyard.<key>`` metadata."""
    return _trailer(header, f"%UPSTREAM_METADATA({lua.METADATA_NAMESPACE}:{key})%")


def model_cluster(name: str, deployment_ids: Sequence[str],
                  s: EnvoySettings) -> cluster_pb2.Cluster:
    """The aggregate cluster: children in failover order; the per-attempt variant rewrite."""
    return json_format.ParseDict({
        "name": name,
        "connect_timeout": f"{s.connect_timeout_s}s",
        "lb_policy": "CLUSTER_PROVIDED",
        # Retries are counted against the aggregate: Envoy's default of 3 retries in flight
        # per cluster failed calls whose first attempt hit a killed backend or timed out
        # (upstream_rq_retry_overflow). A budget as the Python edge's (budget.py) instead.
        "circuit_breakers": {"thresholds": [{"retry_budget": {
            "budget_percent": {"value": s.retry_budget_percent},
            "min_retry_concurrency": s.retry_min_concurrency}}]},
        "cluster_type": {"name": "envoy.clusters.aggregate", "typed_config": {
            "@type": _T + "envoy.extensions.clusters.aggregate.v3.ClusterConfig",
            "clusters": [cluster_name(d) for d in deployment_ids]}},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": _http2(s)},
                "http_filters": [
                    {"name": "switchyard.variant_header", "typed_config": {
                        "@type": _T + "envoy.extensions.filters.http.header_mutation.v3"
                                      ".HeaderMutation",
                        "mutations": {
                            "request_mutations": [_from_endpoint(lua.VARIANT_HEADER,
                                                                 "variant")],
                            # the Python edge's trailers, for the attempt that answered
                            "response_trailers_mutations": [
                                _from_endpoint("x-served-by", "deployment"),
                                _from_endpoint("x-served-region", "region"),
                                _trailer("x-attempts", "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"),
                                _trailer("x-request-id", "%REQ(x-request-id)%"),
                                _trailer(lua.PATH_TRAILER, "envoy")]}}},
                    {"name": "switchyard.variant_rewrite", "typed_config": {
                        "@type": _T + "envoy.extensions.filters.http.lua.v3.Lua",
                        "default_source_code": {"inline_string": rewrite.VARIANT_REWRITE}}},
                    {"name": "envoy.filters.http.upstream_codec", "typed_config": {
                        "@type": _T + "envoy.extensions.filters.http.upstream_codec.v3"
                                      ".UpstreamCodec"}}]}},
    }, cluster_pb2.Cluster())


def slow_path_cluster(port: int, s: EnvoySettings) -> cluster_pb2.Cluster:
    """The node's co-located Python edge on 127.0.0.1:``port``; its answers say ``slow``."""
    return json_format.ParseDict({
        "name": SLOW_PATH_CLUSTER, "type": "STATIC",
        "connect_timeout": f"{s.connect_timeout_s}s",
        "per_connection_buffer_limit_bytes": s.buffer_bytes,
        # Long LLM streams pile up here: Envoy's default of 1024 requests in flight per
        # cluster would turn the 1025th into UNAVAILABLE; the Python edge holds its own limits.
        "circuit_breakers": {"thresholds": [{
            "max_requests": SLOW_PATH_MAX_REQUESTS, "max_pending_requests": SLOW_PATH_MAX_REQUESTS,
            "max_connections": SLOW_PATH_MAX_REQUESTS}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": _http2(s)},
                "http_filters": [
                    {"name": "switchyard.path_trailer", "typed_config": {
                        "@type": _T + "envoy.extensions.filters.http.header_mutation.v3"
                                      ".HeaderMutation",
                        "mutations": {"response_trailers_mutations": [
                            _trailer(lua.PATH_TRAILER, "slow")]}}},
                    {"name": "envoy.filters.http.upstream_codec", "typed_config": {
                        "@type": _T + "envoy.extensions.filters.http.upstream_codec.v3"
                                      ".UpstreamCodec"}}]}},
        "load_assignment": {"cluster_name": SLOW_PATH_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _address(f"127.0.0.1:{port}")}}]}]},
    }, cluster_pb2.Cluster())


def _slow_path_route() -> dict[str, Any]:
    """Calls the listener's Lua marked slow, to the co-located Python edge, which runs the
    attempt policy itself (no retries here) under the caller's own deadline."""
    return {"name": "slow-path", "match": {"prefix": "/", "headers": [
                {"name": lua.PATH_HEADER, "string_match": {"exact": "slow"}}]},
            "request_headers_to_remove": [lua.PATH_HEADER],
            "metadata": {"filter_metadata": {lua.LISTENER_FILTER: {"path": "slow"}}},
            "route": {"cluster": SLOW_PATH_CLUSTER, "timeout": "0s",
                      "max_stream_duration": {"grpc_timeout_header_max": "0s"}}}


def _trailer_metadata(m: ModelRoutes, feasible: frozenset[str], slo_ms: float | None,
                      order: Sequence[str]) -> dict[str, Any]:
    """What the listener's Lua needs for a fast-path call's ``x-cost-usd``/``x-slo-met``, and
    the variant of the order's first deployment, which it appends to the body once
    (``services/xds/rewrite.py``: the upstream Lua then rewrites only for another variant)."""
    data: dict[str, Any] = {
        "path": "envoy",
        "cost": {d: f"{c:.10f}" for d, c in sorted(m.cost_usd.items())},
        "feasible": dict.fromkeys(sorted(feasible), True)}
    if order:
        data[rewrite.FIRST_VARIANT_KEY] = order[0].rsplit("/", 1)[-1]
    if slo_ms is not None:
        data["slo_ms"] = slo_ms
    return {"metadata": {"filter_metadata": {lua.LISTENER_FILTER: data}}}


def per_try_timeout_s(slo_ms: float, s: EnvoySettings) -> float:
    """An attempt's timeout on a route whose calls have at least ``slo_ms``: a share of the
    SLO that leaves the other attempts their turn (the Python edge's floor below it). Envoy
    counts a timed-out attempt as a gateway failure: retried at the next deployment and fed
    to outlier detection, so a backend whose queue grows (one deployment taking every call
    while another restarts) is left before calls run out their deadline there."""
    return max(s.min_attempt_timeout_s, slo_ms / 1000 / s.max_attempts)


def _route_action(model: str, cluster: str, order: Sequence[str], s: EnvoySettings,
                  slo_ms: float | None = None) -> dict[str, Any]:
    if not order:
        return {"direct_response": {"status": 503, "body": {
            "inline_string": f"no deployment may serve {model!r} now"}}}
    return {"route": {
        "cluster": cluster, "timeout": "0s",
        "max_stream_duration": {"grpc_timeout_header_max": "0s"},
        "retry_policy": {
            "retry_on": "unavailable,reset,connect-failure,refused-stream",
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
            "host_selection_retry_max_attempts": 3}}}


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
                                       k.lo),
                       **_trailer_metadata(m, k.feasible, None, k.order)})
    routes.append({"name": model, "match": {"prefix": "/", "headers": [is_model]},
                   **_route_action(model, model_cluster_name(model), m.default, s,
                                   m.default_slo_ms),
                   **_trailer_metadata(m, m.default_feasible, m.default_slo_ms, m.default)})
    return routes


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
    named = "|".join(lua.NAMED_RPCS)
    routes.append({"name": "unknown-model", "match": {"safe_regex": {
        "regex": f"^{re.escape(lua.SERVICE_PATH)}({named})$"}},
                   "direct_response": {"status": 404, "body": {"inline_string": (
                       "the model is not served by this mesh (it serves: "
                       f"{', '.join(sorted(models)) or 'nothing yet'})")}},
                   "response_headers_to_add": [_grpc_status(5)]})
    return json_format.ParseDict({
        "name": route_config_name(region),
        # The slow-path route names a cluster only nodes with a slow path have (their Lua
        # alone sends calls there); a static snapshot of a node without one must still load.
        "validate_clusters": False,
        "virtual_hosts": [{"name": "models", "domains": ["*"], "routes": routes,
                           "request_body_buffer_limit": s.buffer_bytes}],
    }, route_pb2.RouteConfiguration())


def _grpc_status(code: int) -> dict[str, Any]:
    """A header that makes Envoy's local reply to a gRPC call carry this status (instead of
    the one it derives from the HTTP code, e.g. UNKNOWN for 413)."""
    return {"header": {"key": "grpc-status", "value": str(code)},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def _status_for(http: int, grpc_code: int, key: str) -> dict[str, Any]:
    """Envoy's local reply ``http`` (e.g. no healthy upstream, overflow) as ``grpc_code``."""
    return {"filter": {"status_code_filter": {"comparison": {
                "op": "EQ", "value": {"default_value": http, "runtime_key": key}}}},
            "headers_to_add": [_grpc_status(grpc_code)]}


def listener(host: str, port: int, region: str, s: EnvoySettings,
             slow_path: bool = False) -> listener_pb2.Listener:
    """``slow_path``: this node has a co-located Python edge (cluster ``slow-path``) for what
    compiled config cannot express; without one, such calls are refused (UNIMPLEMENTED)."""
    hcm = {
        "@type": _T + "envoy.extensions.filters.network.http_connection_manager.v3"
                      ".HttpConnectionManager",
        "stat_prefix": "switchyard", "codec_type": "HTTP2",
        "http2_protocol_options": _http2(s),
        "rds": {"route_config_name": route_config_name(region), "config_source": {
            "ads": {}, "resource_api_version": "V3"}},
        # Envoy's own replies as the documented statuses, never UNKNOWN: a message over the
        # buffer limit (413) is RESOURCE_EXHAUSTED, as on the Python edge; no healthy
        # upstream, overflow, a refused or reset connection (503) UNAVAILABLE; the call's own
        # deadline passing at Envoy (504) DEADLINE_EXCEEDED; a malformed request (400)
        # INVALID_ARGUMENT.
        "local_reply_config": {"mappers": [
            {**_status_for(413, 8, "switchyard.413"),
             "body": {"inline_string": f"message over the edge's max_message_bytes "
                                       f"({s.max_message_bytes} bytes)"}},
            _status_for(503, 14, "switchyard.503"),
            _status_for(504, 4, "switchyard.504"),
            _status_for(400, 3, "switchyard.400")]},
        # Every call, batched, to placement's access-log service (feedback.py).
        "access_log": [{"name": "envoy.access_loggers.http_grpc", "typed_config": {
            "@type": _T + "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            "common_config": {"log_name": "switchyard", "transport_api_version": "V3",
                              "buffer_flush_interval": "0.5s",
                              "grpc_service": {"envoy_grpc": {
                                  "cluster_name": PLACEMENT_CLUSTER}}},
            "additional_response_trailers_to_log": ["x-served-by", "grpc-status"]}}],
        "http_filters": [
            {"name": lua.LISTENER_FILTER, "typed_config": {
                "@type": _T + "envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": rewrite.listener_script(
                    lua.model_name_script(s.deadline_margin_ms, slow_path))}}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": _T + "envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return json_format.ParseDict({
        "name": LISTENER_NAME,
        "address": {"socket_address": {"address": host, "port_value": port}},
        "per_connection_buffer_limit_bytes": s.buffer_bytes,
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}],
    }, listener_pb2.Listener())


@dataclass(frozen=True)
class ModelRoutes:
    default: tuple[str, ...]  # the order for calls with the model's default SLO
    classes: tuple[SloClass, ...]  # orders for calls that carry an SLO
    default_feasible: frozenset[str] = frozenset()  # of ``default``, those meeting the SLO
    default_slo_ms: float | None = None
    cost_usd: Mapping[str, float] = field(default_factory=dict)  # per call, by deployment


@dataclass(frozen=True)
class RegionConfig:
    """Everything an edge of one region needs except its listener (which is per node)."""

    region: str
    clusters: dict[str, Resource]
    routes: dict[str, Resource]
    models: dict[str, ModelRoutes]

    @property
    def orders(self) -> dict[str, list[str]]:
        """Model -> the default SLO's failover order."""
        return {m: list(r.default) for m, r in self.models.items()}


def compile_region(region: str, tables: Iterable[placement_pb2.RouteTable], profile: Profile,
                   s: EnvoySettings) -> RegionConfig:
    clusters: dict[str, Resource] = {}
    models: dict[str, ModelRoutes] = {}
    for table in tables:
        for c in table.candidates:
            name = cluster_name(c.deployment_id)
            if name not in clusters:
                clusters[name] = resource(name, deployment_cluster(c, s))
        cands = [candidate_from_pb(c) for c in table.candidates]
        ranks, feasible = ranked(cands, profile, table.default_slo_ms, s.slo_margin_ms)
        default = tuple(c.deployment_id for c in ranks)
        m = models[table.model] = ModelRoutes(
            default, tuple(slo_classes(cands, profile, s.slo_margin_ms)), feasible,
            table.default_slo_ms, {c.deployment_id: c.cost_usd for c in table.candidates})
        named = [(model_cluster_name(table.model), default),
                 *((model_cluster_name(table.model, i), k.order)
                   for i, k in enumerate(m.classes))]
        for name, order in named:
            if order:
                clusters[name] = resource(name, model_cluster(name, order, s))
    rc = route_config_name(region)
    return RegionConfig(region, clusters,
                        {rc: resource(rc, route_configuration(region, models, s))}, models)
