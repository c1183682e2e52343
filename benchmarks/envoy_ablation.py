"""Ablation of the Switchyard Envoy config: ``sy`` (everything placement pushes, as a static
bootstrap, ``benchmarks/envoy_configs.py``) with ONE thing removed or changed at a time, for
``benchmarks/envoy_filters.py --ablation`` (issue 12: where the CPU over plain Envoy goes).

Each variant names what it takes out of ``sy``; a removal is not a working edge unless said
(e.g. without the retry policy a failed attempt is not retried), it prices that piece. What
placement does not push is not ablated: no active health checks (the edge's verdicts come
from the Python side), no hedging (``hedge_policy``), no TLS (the benchmark mesh, like the
local default, is plaintext).
"""

from __future__ import annotations

from typing import Any

from benchmarks._fleet import MODEL
from benchmarks.envoy_configs import (
    AGG_CLUSTER,
    DEP_CLUSTER,
    PROTOCOL_OPTIONS,
    Config,
    Variant,
    switchyard,
)
from services.xds import lua

UPSTREAM_LUA = "switchyard.variant_rewrite"
HEADER_MUTATION = "switchyard.variant_header"


def _model_routes(c: Config) -> list[dict[str, Any]]:
    return [r for r in c.route_config["virtual_hosts"][0]["routes"]
            if r.get("route", {}).get("cluster") == AGG_CLUSTER]


def _upstream_filters(c: Config) -> list[dict[str, Any]]:
    f: list[dict[str, Any]] = (
        c.clusters[AGG_CLUSTER]["typed_extension_protocol_options"][PROTOCOL_OPTIONS]
        ["http_filters"])
    return f


def _drop_upstream(c: Config, name: str) -> None:
    opts = c.clusters[AGG_CLUSTER]["typed_extension_protocol_options"][PROTOCOL_OPTIONS]
    opts["http_filters"] = [f for f in opts["http_filters"] if f["name"] != name]


def no_access_log(c: Config) -> None:
    switchyard(c)
    c.access_log = []


def access_log_batched(c: Config) -> None:
    """The access log with a 1 MiB buffer (Envoy's default 16 KiB: a gRPC message to
    placement every ~40 entries) and a 1 s flush interval (pushed: 0.5 s)."""
    switchyard(c)
    common = c.access_log[0]["typed_config"]["common_config"]
    common.update(buffer_size_bytes=1 << 20, buffer_flush_interval="1s")


def access_log_lean(c: Config) -> None:
    """The access log without the extra request headers and trailers it logs."""
    switchyard(c)
    cfg = c.access_log[0]["typed_config"]
    for k in ("additional_request_headers_to_log", "additional_response_trailers_to_log"):
        cfg.pop(k, None)


def no_header_mutation(c: Config) -> None:
    """No upstream header_mutation: no variant header (the upstream Lua then never
    rewrites: the listener's first-variant append serves this call) and no trailers."""
    switchyard(c)
    _drop_upstream(c, HEADER_MUTATION)


def no_trailers(c: Config) -> None:
    """header_mutation keeps the variant header, adds no response trailers."""
    switchyard(c)
    for f in _upstream_filters(c):
        if f["name"] == HEADER_MUTATION:
            f["typed_config"]["mutations"].pop("response_trailers_mutations", None)


def direct_cluster(c: Config) -> None:
    """The route names the deployment's cluster (which gets the upstream filters), no
    aggregate in between."""
    switchyard(c)
    filters = _upstream_filters(c)
    c.clusters[DEP_CLUSTER]["typed_extension_protocol_options"][PROTOCOL_OPTIONS][
        "http_filters"] = filters
    for r in _model_routes(c):
        r["route"]["cluster"] = DEP_CLUSTER
    del c.clusters[AGG_CLUSTER]


def no_retry(c: Config) -> None:
    switchyard(c)
    for r in _model_routes(c):
        r["route"].pop("retry_policy", None)


def retry_without_plugins(c: Config) -> None:
    """Retries kept, without the previous_priorities / previous_hosts plugins."""
    switchyard(c)
    for r in _model_routes(c):
        for k in ("retry_priority", "retry_host_predicate", "host_selection_retry_max_attempts"):
            r["route"]["retry_policy"].pop(k, None)


def no_per_try_timeout(c: Config) -> None:
    switchyard(c)
    for r in _model_routes(c):
        r["route"]["retry_policy"].pop("per_try_timeout", None)


def no_retry_budget(c: Config) -> None:
    """The aggregate's retry-budget circuit breaker removed (Envoy's default thresholds)."""
    switchyard(c)
    c.clusters[AGG_CLUSTER].pop("circuit_breakers", None)


def no_outlier_detection(c: Config) -> None:
    switchyard(c)
    c.clusters[DEP_CLUSTER].pop("outlier_detection", None)


def no_stats(c: Config) -> None:
    switchyard(c)
    c.stats = False


def no_request_id(c: Config) -> None:
    """``generate_request_id: false`` (the x-request-id trailer is then empty unless the
    caller sent one)."""
    switchyard(c)
    c.hcm_extra["generate_request_id"] = False


def router_defaults(c: Config) -> None:
    """The router as Envoy's defaults have it: per-status-code counters and latency
    histograms per cluster (``dynamic_stats``), x-envoy-* headers added."""
    switchyard(c)
    c.router["typed_config"] = {"@type": c.router["typed_config"]["@type"]}


def many_routes(c: Config) -> None:
    """100 more models' routes before this one's (routes are sorted by model; Envoy tries
    them in order), as a region serving 100 models would have."""
    switchyard(c)
    routes = c.route_config["virtual_hosts"][0]["routes"]
    first = routes.index(_model_routes(c)[0])
    extra = []
    for i in range(100):
        r: dict[str, Any] = {k: v for k, v in routes[first].items() if k != "name"}
        extra.append({**r, "name": f"m{i:03d}", "match": {"prefix": "/", "headers": [
            {"name": lua.MODEL_HEADER, "string_match": {"exact": f"m{i:03d}"}}]}})
    routes[first:first] = extra


def no_buffer_limits(c: Config) -> None:
    """Envoy's default buffer limits and HTTP/2 windows (pushed: 16 MiB + 64 KiB each)."""
    switchyard(c)
    c.listener_extra.pop("per_connection_buffer_limit_bytes", None)
    c.hcm_extra.pop("http2_protocol_options", None)
    c.route_config["virtual_hosts"][0].pop("request_body_buffer_limit", None)
    for cluster in (c.clusters[DEP_CLUSTER], c.clusters[AGG_CLUSTER]):
        cluster.pop("per_connection_buffer_limit_bytes", None)
        cluster["typed_extension_protocol_options"][PROTOCOL_OPTIONS]["explicit_http_config"] \
            = {"http2_protocol_options": {}}


def no_local_replies(c: Config) -> None:
    switchyard(c)
    c.hcm_extra.pop("local_reply_config", None)


def no_response_lua(c: Config) -> None:
    """The listener Lua without its response function (no x-cost-usd / x-slo-met)."""
    switchyard(c)
    for f in c.filters:
        if f["name"] == lua.LISTENER_FILTER:
            src = f["typed_config"]["default_source_code"]
            src["inline_string"] = src["inline_string"].split(
                "\nfunction envoy_on_response", 1)[0]


ABLATIONS = (
    Variant("sy-no-als", "− the gRPC access log", MODEL, (no_access_log,)),
    Variant("sy-als-batch", "access log: 1 MiB buffer, 1 s flush", MODEL,
            (access_log_batched,)),
    Variant("sy-als-lean", "access log: no extra headers/trailers logged", MODEL,
            (access_log_lean,)),
    Variant("sy-no-hdrmut", "− upstream header_mutation (variant header, trailers)", MODEL,
            (no_header_mutation,)),
    Variant("sy-no-trailers", "− the trailers header_mutation adds", MODEL, (no_trailers,)),
    Variant("sy-direct", "deployment cluster, no aggregate", MODEL, (direct_cluster,)),
    Variant("sy-no-retry", "− retry policy", MODEL, (no_retry,)),
    Variant("sy-retry-bare", "retries without previous_* plugins", MODEL,
            (retry_without_plugins,)),
    Variant("sy-no-pertry", "− per-try timeout", MODEL, (no_per_try_timeout,)),
    Variant("sy-no-budget", "− the aggregate's retry budget", MODEL, (no_retry_budget,)),
    Variant("sy-no-outlier", "− outlier detection", MODEL, (no_outlier_detection,)),
    Variant("sy-no-stats", "− stats (all rejected)", MODEL, (no_stats,)),
    Variant("sy-no-reqid", "− x-request-id generation", MODEL, (no_request_id,)),
    Variant("sy-router-dflt", "+ router defaults (dynamic stats, x-envoy-* headers)", MODEL,
            (router_defaults,)),
    Variant("sy-routes100", "+ 100 models' routes ahead", MODEL, (many_routes,)),
    Variant("sy-no-buflim", "− buffer limits / HTTP/2 windows", MODEL, (no_buffer_limits,)),
    Variant("sy-no-locreply", "− local_reply_config mappers", MODEL, (no_local_replies,)),
    Variant("sy-no-resp", "− the listener Lua's response side", MODEL, (no_response_lua,)),
)
