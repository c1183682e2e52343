"""Clusters placement pushes to an Envoy edge.

- one cluster per deployment ``dep:<deployment_id>`` (one endpoint, the backend; its variant,
  backend and region in endpoint metadata under ``switchyard``). It depends only on the
  deployment, never on load or prices, so a placement change does not rebuild it. Backends
  are dialled as the Python edge dials them (plaintext gRPC: Triton serves no TLS here).
  Its host is used anyway when every deployment of a route is ejected (panic);
- one aggregate cluster per failover order (``order.py``), its children in that order; its
  upstream filters copy the chosen endpoint's variant into a header and rewrite the request's
  model name (``rewrite.py``) and add the Python edge's trailers for the attempt that answered;
- ``slow-path``: the node's co-located Python edge on 127.0.0.1, over mTLS when the mesh has
  ``[security]`` TLS (``tls.py``): it is the same Python edge, with the same server
  credentials, and a loopback port is open to every local process, so Envoy presents the
  edge's certificate like any other client.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from typing import Any

# Registered in the default descriptor pool so ParseDict can resolve each "@type".
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as _aggregate_pb2  # noqa: F401
from envoy.extensions.filters.http.header_mutation.v3 import (  # noqa: F401
    header_mutation_pb2 as _header_mutation_pb2,
)
from envoy.extensions.filters.http.lua.v3 import lua_pb2 as _lua_pb2  # noqa: F401
from envoy.extensions.filters.http.upstream_codec.v3 import (  # noqa: F401
    upstream_codec_pb2 as _upstream_codec_pb2,
)
from envoy.extensions.upstreams.http.v3 import (  # noqa: F401
    http_protocol_options_pb2 as _protocol_options_pb2,
)
from google.protobuf import json_format

from services.api.switchyard.v1 import placement_pb2
from services.edge.hints import REQUEST_ID_CHARS
from services.xds import lua, rewrite, tls
from services.xds.envoy_types import (
    SLOW_PATH_CLUSTER,
    SLOW_PATH_MAX_REQUESTS,
    EnvoySettings,
    T,
    address,
    cluster_name,
    http2,
)

_T = T
SLOW_PATH_HOST = "127.0.0.1"


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
                "explicit_http_config": {"http2_protocol_options": http2(s)}}},
        # The deployment's one host is ejected after consecutive gateway failures (refused or
        # reset connections, gRPC UNAVAILABLE, timed-out attempts: 502/503/504 to Envoy), what
        # the Python edge holds against a backend (``placement.attempts.SERVER_FAILURES``);
        # the aggregate then starts calls at the next deployment instead of retrying there.
        # Not other 5xx: Envoy maps a backend's own gRPC answer to HTTP for outlier detection
        # (INTERNAL 500, UNIMPLEMENTED 501), so a caller's unparseable bytes or a unary call to
        # a streaming-only model, three in a row, ejected a healthy deployment
        # (tests/integration/test_hostile_engines.py).
        "outlier_detection": {
            "consecutive_5xx": s.eject_consecutive_failures,
            "enforcing_consecutive_5xx": 0,
            "consecutive_gateway_failure": s.eject_consecutive_failures,
            "enforcing_consecutive_gateway_failure": 100,
            "interval": "1s", "base_ejection_time": f"{s.eject_base_s}s",
            "max_ejection_percent": 100},
        # Panic: when every deployment of an aggregate is ejected, the aggregate (itself in
        # panic, its total health 0) sends the call to its first child, and the child, whose
        # one host is ejected, uses it anyway instead of answering "no healthy upstream".
        # Only the route's own order is ever tried, so no call's hints are weakened.
        "common_lb_config": {"healthy_panic_threshold": {"value": PANIC_THRESHOLD_PERCENT}},
        "health_checks": health_checks(s),
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{
            "endpoint": {"address": address(c.endpoint)},
            "metadata": {"filter_metadata": {lua.METADATA_NAMESPACE: {
                "deployment": c.deployment_id, "variant": c.variant,
                "backend": c.backend_id, "region": c.region}}}}]}]},
    }, cluster_pb2.Cluster())


def health_checks(s: EnvoySettings) -> list[dict[str, Any]]:
    """A deployment cluster's active checks: Triton's ``grpc.health.v1`` ``Check`` (SERVING
    while the server is ready), so a backend that stops answering (stopped, wedged, a port
    that accepts and never replies) is found without spending a call's attempt on it, and
    one that refuses is found before the first call. Outlier detection stays: a backend the
    checks find healthy whose calls fail or time out is still ejected.

    A new cluster is warming (invisible to routing) until its first check is done, pass or
    fail; the ADS server sends a new deployment cluster alone and what names it only after
    Envoy's ACK, which Envoy holds back until no cluster is warming (``pushes.py``). Its
    first check passed, a host is healthy at once; after that ``health_unhealthy`` failures
    in a row (about ``health_unhealthy`` × (interval + timeout) for a hung backend) mark it
    unhealthy and ``health_healthy`` passes bring it back. No initial jitter: it would delay
    warming. An Envoy holding N deployment clusters checks about N / ``health_idle_s`` per
    second while they carry no calls, N / ``health_interval_s`` once they have
    (``EnvoySettings``: the cost of a check and why these intervals)."""
    if s.health_interval_s is None:
        return []
    return [{"timeout": f"{s.health_timeout_s}s", "interval": f"{s.health_interval_s}s",
             "interval_jitter": f"{s.health_interval_s / 10}s",
             "no_traffic_interval": f"{s.health_idle_s}s",
             "unhealthy_threshold": s.health_unhealthy, "healthy_threshold": s.health_healthy,
             "grpc_health_check": {}}]


# A deployment cluster's one host is used even when ejected (Envoy's panic mode) whenever the
# aggregate has nothing healthy left; with one host per cluster any value above 0 means that.
# Per-try timeouts still count toward ejection: Envoy cannot tell a hung backend (every
# attempt times out) from an overloaded one (split_external_local_origin_errors puts both with
# refused connections, and each new stream resets that count), and without them a hung
# backend was never left (tests/integration/test_envoy_drills.py, hung-backend: every call
# paid a per-try timeout, p50 290 ms, until the fault ended). Panic is what keeps an
# overloaded host's ejections from refusing calls.
PANIC_THRESHOLD_PERCENT = 100


def _trailer(header: str, value: str) -> dict[str, Any]:
    """Set ``header`` to ``value`` (an Envoy substitution format string)."""
    return {"append": {"header": {"key": header, "value": value},
                       "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}


def _from_endpoint(header: str, key: str) -> dict[str, Any]:
    """Set ``header`` to the chosen endpoint's ``switchyard.<key>`` metadata."""
    return _trailer(header, f"%UPSTREAM_METADATA({lua.METADATA_NAMESPACE}:{key})%")


def retry_concurrency(inflight: float, budget_percent: float, floor: int) -> int:
    """An aggregate's ``min_retry_concurrency``: the retries it lets be in flight at once.

    Envoy counts an aggregate's retries against the aggregate's own circuit breakers (its
    ``max_retries`` or ``retry_budget``: the only breaker the aggregate applies, the rest are
    its children's), but the aggregate counts no requests of its own (its children's
    connection pools do), so the budget's ``budget_percent`` of its active requests is 0 and
    ``min_retry_concurrency`` is the whole budget. It is sized from the calls the plan
    expects in flight through the aggregate (``inflight``, rate × p95): a backend that dies
    under them fails them all at once, and every one may be retried, plus ``budget_percent``
    of them again (the configured ``[edge] retry_budget_ratio``, for calls that fail on it
    before it is ejected); never under ``floor`` (``retry_min_concurrency``). A storm is
    still bounded: at most that many retries at once, about one per call the aggregate
    carries. Rounded up to a power of two so that a drifting rate does not re-push the
    cluster at every compile (it changes when the planned calls in flight double or
    halve)."""
    want = math.ceil(inflight * (1.0 + budget_percent / 100.0)) if inflight > 0 else 0
    if want <= floor:
        return floor
    return 1 << (want - 1).bit_length()


def model_cluster(name: str, deployment_ids: Sequence[str], s: EnvoySettings,
                  min_retry_concurrency: int | None = None) -> cluster_pb2.Cluster:
    """The aggregate cluster: children in failover order; the per-attempt variant rewrite,
    left out when every child serves one variant: the listener's Lua already appended it
    (the route's first deployment is one of them), and the upstream Lua cost ~0.3 of plain
    Envoy's CPU per call for nothing (``benchmarks/envoy_ablation.py``).
    ``min_retry_concurrency``: its retry budget (``retry_concurrency``; None: the floor,
    ``EnvoySettings.retry_min_concurrency``)."""
    one_variant = len({d.rsplit("/", 1)[-1] for d in deployment_ids}) == 1
    rewrites = [] if one_variant else [
        {"name": "switchyard.variant_rewrite", "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": rewrite.VARIANT_REWRITE}}}]
    return json_format.ParseDict({
        "name": name,
        "connect_timeout": f"{s.connect_timeout_s}s",
        "lb_policy": "CLUSTER_PROVIDED",
        # Retries are counted against the aggregate: Envoy's default of 3 retries in flight
        # per cluster failed calls whose first attempt hit a killed backend or timed out
        # (upstream_rq_retry_overflow). A budget sized by the calls it carries instead
        # (``retry_concurrency``: its min_retry_concurrency is what holds).
        "circuit_breakers": {"thresholds": [{"retry_budget": {
            "budget_percent": {"value": s.retry_budget_percent},
            "min_retry_concurrency": s.retry_min_concurrency
            if min_retry_concurrency is None else min_retry_concurrency}}]},
        "cluster_type": {"name": "envoy.clusters.aggregate", "typed_config": {
            "@type": _T + "envoy.extensions.clusters.aggregate.v3.ClusterConfig",
            "clusters": [cluster_name(d) for d in deployment_ids]}},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": http2(s)},
                "http_filters": [
                    {"name": "switchyard.variant_header", "typed_config": {
                        "@type": _T + "envoy.extensions.filters.http.header_mutation.v3"
                                      ".HeaderMutation",
                        "mutations": {
                            "request_mutations": [{"remove": rewrite.NAMED_HEADER}]
                            if one_variant else [_from_endpoint(lua.VARIANT_HEADER,
                                                                "variant")],
                            # the Python edge's trailers, for the attempt that answered
                            "response_trailers_mutations": [
                                _from_endpoint("x-served-by", "deployment"),
                                _from_endpoint("x-served-region", "region"),
                                _trailer("x-attempts", "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"),
                                _trailer("x-request-id",
                                         f"%REQ(x-request-id):{REQUEST_ID_CHARS}%"),
                                _trailer(lua.PATH_TRAILER, "envoy")]}}},
                    *rewrites,
                    {"name": "envoy.filters.http.upstream_codec", "typed_config": {
                        "@type": _T + "envoy.extensions.filters.http.upstream_codec.v3"
                                      ".UpstreamCodec"}}]}},
    }, cluster_pb2.Cluster())


def slow_path_cluster(port: int, s: EnvoySettings) -> cluster_pb2.Cluster:
    """The node's co-located Python edge on 127.0.0.1:``port``; its answers say ``slow``."""
    cluster: dict[str, Any] = {
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
                "explicit_http_config": {"http2_protocol_options": http2(s)},
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
            {"endpoint": {"address": address(f"{SLOW_PATH_HOST}:{port}")}}]}]},
    }
    if s.tls:
        cluster["transport_socket"] = tls.upstream()
    return json_format.ParseDict(cluster, cluster_pb2.Cluster())
