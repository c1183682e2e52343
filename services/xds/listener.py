"""The listener placement pushes to each Envoy edge (per node: its own address).

One filter chain: TLS with the edge's certificate when the mesh has ``[security]`` TLS
(``tls.py``; client certificates required when ``edge_client_certs``), then the HTTP
connection manager with the listener's Lua (``lua.py``: the slow path, SLO class, model
name, the fast path's cost and SLO trailers), or the C dynamic module doing the same where the
node's Envoy loads it (``native.py``), and the router; its routes come over ADS
(``routes.py``); every call is logged to placement's access-log service (``feedback.py``);
Envoy's own local replies carry the documented gRPC statuses.
"""

from __future__ import annotations

from typing import Any

# Registered in the default descriptor pool so ParseDict can resolve each "@type".
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2 as _als_pb2  # noqa: F401
from envoy.extensions.filters.http.dynamic_modules.v3 import (  # noqa: F401
    dynamic_modules_pb2 as _dynamic_modules_pb2,
)
from envoy.extensions.filters.http.lua.v3 import lua_pb2 as _lua_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2 as _router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2 as _hcm_pb2,
)
from google.protobuf import json_format
from google.protobuf import wrappers_pb2 as _wrappers_pb2  # noqa: F401 (the module's config)

from services.security.settings import SecuritySettings
from services.xds import lua, native, rewrite, tls
from services.xds.envoy_types import (
    LISTENER_NAME,
    PLACEMENT_CLUSTER,
    EnvoySettings,
    T,
    http2,
    route_config_name,
)
from services.xds.routes import NAMED_PATHS, grpc_status

_T = T


def _status_for(http: int, grpc_code: int, key: str) -> dict[str, Any]:
    """Envoy's local reply ``http`` (e.g. no healthy upstream, overflow) as ``grpc_code``."""
    return {"filter": {"status_code_filter": {"comparison": {
                "op": "EQ", "value": {"default_value": http, "runtime_key": key}}}},
            "headers_to_add": [grpc_status(grpc_code)]}


# With ``[security.limits]`` on metadata: Envoy's own header limits (its codec's, defaults
# 60 KiB and 100 entries) raised so that the listener's Lua, not the codec, judges a call's
# metadata up to these, answering the Python edge's statuses; past them Envoy's codec resets
# the stream (INTERNAL) or, over the bytes, closes the connection (UNAVAILABLE), as before.
HEADER_LIST_KB = 256
HEADER_COUNT = 4096


# Envoy's own default made explicit (and a test's to shorten): a fast-path call on which nothing
# moves this long (a caller that never sends its message) is ended by Envoy, UNAVAILABLE
# saying so. Not a slow-path stream: its route turns it off (routes.py).
STREAM_IDLE_TIMEOUT_S = 300.0
# A caller's deadline passing at Envoy, in the words gRPC's core gives it on a Python edge.
DEADLINE_WORDS = "Deadline Exceeded"


def _metadata_limits(s: EnvoySettings) -> dict[str, Any]:
    return {} if s.max_metadata_bytes is None else {"max_request_headers_kb": HEADER_LIST_KB}


def _connection_limits(s: EnvoySettings) -> dict[str, Any]:
    """``[security.limits]``' idle and aged connections, as the Python edge's server closes
    them (``transport.server_options``), and the header count the Lua judges."""
    limits: dict[str, Any] = {}
    if s.max_metadata_count is not None:
        limits["max_headers_count"] = HEADER_COUNT
    if s.idle_connection_timeout_s is not None:
        limits["idle_timeout"] = f"{s.idle_connection_timeout_s}s"
    if s.max_connection_age_s:
        limits["max_connection_duration"] = f"{s.max_connection_age_s}s"
    return {"common_http_protocol_options": limits} if limits else {}


def _forwarded_certs(s: EnvoySettings) -> dict[str, Any]:
    """With tenants identified by a client certificate: the caller's certificate (its SANs
    and subject) to the slow path in ``x-forwarded-client-cert``, set by Envoy from the
    verified TLS session; a header the caller sent is dropped (``services/security/xfcc.py``).
    Without: Envoy's default, SANITIZE (the header never passes)."""
    if not s.tenant_sans:
        return {}
    return {"forward_client_cert_details": "SANITIZE_SET",
            "set_current_client_cert_details": {"subject": True, "dns": True, "uri": True}}


def tenant_calls(s: EnvoySettings) -> lua.TenantCalls:
    """Which ModelInfer calls the listener's Lua sends to the slow path for tenants."""
    if s.require_tenant:
        return "all"
    return "credential" if s.tenants else "off"


def tenant_sans(sec: SecuritySettings) -> tuple[str, ...]:
    """The ``client_san`` of every tenant a client certificate identifies; none without
    client certificates (the Python edge then never sees one either)."""
    if not (sec.tls and sec.edge_client_certs):
        return ()
    return tuple(sorted(t.client_san for t in sec.tenants if t.client_san))


def listener_filter(s: EnvoySettings, slow_path: bool, module: bool) -> dict[str, Any]:
    """The listener's per-call work (slow path, hints, SLO class, model name, the first
    deployment's variant, the fast path's cost and SLO trailers): the C dynamic module
    (``native.py``) when the node's Envoy loads it, else the Lua; one rule set, held equal by
    ``tests/unit/test_envoy_dynmod_parity.py``."""
    if module:
        return native.listener_filter(s.deadline_margin_ms, slow_path, tenant_calls(s),
                                      s.max_message_bytes, s.max_metadata_bytes,
                                      s.max_metadata_count, s.tenant_sans)
    return {"name": lua.LISTENER_FILTER, "typed_config": {
        "@type": _T + "envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string": rewrite.listener_script(
            lua.model_name_script(s.deadline_margin_ms, slow_path, tenant_calls(s),
                                  s.max_message_bytes, s.tenant_sans, s.max_metadata_bytes,
                                  s.max_metadata_count))}}}


def listener(host: str, port: int, region: str, s: EnvoySettings,
             slow_path: bool = False, module: bool = False) -> listener_pb2.Listener:
    """``slow_path``: this node has a co-located Python edge (cluster ``slow-path``) for what
    compiled config cannot express; without one, such calls are refused (UNIMPLEMENTED).
    ``module``: the node's Envoy loads the C dynamic module (its bootstrap says so,
    ``native.NODE_KEY``), which then does the listener Lua's work (``listener_filter``)."""
    hcm = {
        "@type": _T + "envoy.extensions.filters.network.http_connection_manager.v3"
                      ".HttpConnectionManager",
        "stat_prefix": "switchyard", "codec_type": "HTTP2",
        "http2_protocol_options": {**http2(s), **(
            {} if s.max_concurrent_streams is None else
            {"max_concurrent_streams": s.max_concurrent_streams})},
        "stream_idle_timeout": f"{STREAM_IDLE_TIMEOUT_S}s",
        **_connection_limits(s),
        **_metadata_limits(s),
        **_forwarded_certs(s),
        "rds": {"route_config_name": route_config_name(region), "config_source": {
            "ads": {}, "resource_api_version": "V3"}},
        # Envoy's own replies as the documented statuses, never UNKNOWN: a message over the
        # buffer limit (413) is RESOURCE_EXHAUSTED, as on the Python edge; no healthy
        # upstream, overflow, a refused or reset connection (503) UNAVAILABLE; the call's own
        # deadline passing at Envoy (504) DEADLINE_EXCEEDED; a malformed request (400)
        # INVALID_ARGUMENT; a call silent past the stream idle timeout (408) UNAVAILABLE.
        "local_reply_config": {"mappers": [
            {**_status_for(413, 8, "switchyard.413"),
             "body": {"inline_string": f"message over the edge's max_message_bytes "
                                       f"({s.max_message_bytes} bytes)"}},
            _status_for(503, 14, "switchyard.503"),
            # nothing moved on a call for STREAM_IDLE_TIMEOUT_S (Envoy's 408, else UNKNOWN)
            {**_status_for(408, 14, "switchyard.408"),
             "body": {"inline_string": f"nothing moved on this call for "
                                       f"{STREAM_IDLE_TIMEOUT_S:g} s (the edge's stream idle "
                                       f"timeout)"}},
            # every attempt timed out (the router's UT, 'upstream request timeout'), then the
            # caller's deadline in gRPC's core's words on a Python edge (Envoy's: 'downstream
            # duration timeout')
            {"filter": {"and_filter": {"filters": [
                _status_for(504, 4, "switchyard.504")["filter"],
                {"response_flag_filter": {"flags": ["UT"]}}]}},
             "headers_to_add": [grpc_status(4)]},
            {**_status_for(504, 4, "switchyard.504"),
             "body": {"inline_string": DEADLINE_WORDS}},
            # the unknown-model route's reply (routes.py) naming the model the listener read,
            # as the Python edge's router words it
            {"filter": {"and_filter": {"filters": [
                _status_for(404, 5, "switchyard.404")["filter"],
                {"header_filter": {"header": {"name": ":path", "string_match": {
                    "safe_regex": {"regex": NAMED_PATHS}}}}}]}},
             "headers_to_add": [grpc_status(5)],
             "body_format_override": {"text_format_source": {"inline_string":
                 f"model '%REQ({lua.MODEL_HEADER})%' %LOCAL_REPLY_BODY%"}}},
            _status_for(400, 3, "switchyard.400")]},
        # Every call, batched, to placement's access-log service (feedback.py), with its
        # model and whole-ms SLO class as the Lua set them (learning.py: the region's class
        # rates and margins; the call's exact SLO is the Lua's dynamic metadata, which
        # entries carry in common_properties.metadata).
        "access_log": [{"name": "envoy.access_loggers.http_grpc", "typed_config": {
            "@type": _T + "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            "common_config": {"log_name": "switchyard", "transport_api_version": "V3",
                              "buffer_flush_interval": "0.5s",
                              "grpc_service": {"envoy_grpc": {
                                  "cluster_name": PLACEMENT_CLUSTER}}},
            "additional_request_headers_to_log": [lua.MODEL_HEADER, lua.SLO_HEADER],
            "additional_response_trailers_to_log": ["x-served-by", "grpc-status"],
            # a trailers-only answer (most errors) has its status in the headers
            "additional_response_headers_to_log": ["grpc-status"]}}],
        "http_filters": [
            listener_filter(s, slow_path, module),
            # No per-status-code counters or latency histograms per cluster (nobody reads
            # them: feedback is the access log; upstream_rq_total and the connection stats
            # stay) and no x-envoy-* headers (a Python edge sends none): less work per call
            # (benchmarks/envoy_ablation.py).
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": _T + "envoy.extensions.filters.http.router.v3.Router",
                "dynamic_stats": False, "suppress_envoy_headers": True}}],
    }
    chain: dict[str, Any] = {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                          "typed_config": hcm}]}
    if s.tls:
        chain["transport_socket"] = tls.downstream(s.client_certs)
    return json_format.ParseDict({
        "name": LISTENER_NAME,
        "address": {"socket_address": {"address": host, "port_value": port}},
        "per_connection_buffer_limit_bytes": s.buffer_bytes,
        "filter_chains": [chain],
    }, listener_pb2.Listener())
