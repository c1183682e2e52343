"""The pushed module config bisected against plain Envoy, one difference at a time (issue 12),
for ``benchmarks/envoy_filters.py --only bisect``.

``dm`` is what placement pushes to a node that loads the C dynamic module, as a static
bootstrap (``envoy_dynmod.sy_dm_no_upstream``: the module's listener filter, the aggregate
over one variant with no upstream filter chain, since f52d0b2 the module adds the trailers
itself). Each ``dm-*`` variant is ``dm`` with ONE difference from plain Envoy taken out; a
removal is not a working edge unless said, it prices that piece. ``dm-bare`` takes out all of
them at once but keeps the module (what the module and the route re-match alone cost), and
``dm-no-module`` is ``dm`` without the module (routes by path, the call names the variant).
"""

from __future__ import annotations

from typing import Any

from benchmarks._fleet import MODEL, VARIANT
from benchmarks.envoy_configs import (
    AGG_CLUSTER,
    DEP_CLUSTER,
    PROTOCOL_OPTIONS,
    Config,
    Edit,
    Variant,
)
from benchmarks.envoy_dynmod import sy_dm_no_upstream
from services.xds import lua


def _model_routes(c: Config) -> list[dict[str, Any]]:
    return [r for r in c.route_config["virtual_hosts"][0]["routes"]
            if r.get("route", {}).get("cluster") in (AGG_CLUSTER, DEP_CLUSTER)]


def direct(c: Config) -> None:
    """The routes name the deployment's cluster: no aggregate in between."""
    for r in c.route_config["virtual_hosts"][0]["routes"]:
        if r.get("route", {}).get("cluster") == AGG_CLUSTER:
            r["route"]["cluster"] = DEP_CLUSTER
    del c.clusters[AGG_CLUSTER]


def no_retry(c: Config) -> None:
    """No retry policy (so no per-try timeout and no hedge on it either)."""
    for r in _model_routes(c):
        for k in ("retry_policy", "hedge_policy"):
            r["route"].pop(k, None)


def no_per_try(c: Config) -> None:
    """Retries kept; no per-try timeout and no hedging on it (a timer per attempt)."""
    for r in _model_routes(c):
        r["route"].get("retry_policy", {}).pop("per_try_timeout", None)
        r["route"].pop("hedge_policy", None)


def no_access_log(c: Config) -> None:
    c.access_log = []


def no_stats(c: Config) -> None:
    c.stats = False


def no_outlier(c: Config) -> None:
    c.clusters[DEP_CLUSTER].pop("outlier_detection", None)


def no_health_checks(c: Config) -> None:
    c.clusters[DEP_CLUSTER].pop("health_checks", None)


def h2_defaults(c: Config) -> None:
    """Envoy's default HTTP/2 windows and buffer limits (pushed: 16 MiB + 64 KiB each)."""
    c.listener_extra.pop("per_connection_buffer_limit_bytes", None)
    c.hcm_extra.pop("http2_protocol_options", None)
    c.route_config["virtual_hosts"][0].pop("request_body_buffer_limit", None)
    for cluster in c.clusters.values():
        cluster.pop("per_connection_buffer_limit_bytes", None)
        opts = cluster.get("typed_extension_protocol_options", {}).get(PROTOCOL_OPTIONS)
        if opts is not None:
            opts["explicit_http_config"] = {"http2_protocol_options": {}}


def no_local_replies(c: Config) -> None:
    c.hcm_extra.pop("local_reply_config", None)


def no_route_headers(c: Config) -> None:
    """The model routes without request_headers_to_remove (grpc-timeout) and
    max_stream_duration (grpc_timeout_header_max)."""
    for r in _model_routes(c):
        r.pop("request_headers_to_remove", None)
        r["route"].pop("max_stream_duration", None)


def no_slow_route(c: Config) -> None:
    """Without the slow-path route ahead of the model's (matched on every call first)."""
    routes = c.route_config["virtual_hosts"][0]["routes"]
    routes[:] = [r for r in routes if r.get("route", {}).get("cluster") != "slow-path"]


def no_module(c: Config) -> None:
    """No listener filter: the model routes match by path alone (the call names the
    variant), nothing sets headers, clears the route or reads metadata."""
    c.filters = []
    for r in c.route_config["virtual_hosts"][0]["routes"]:
        headers = r["match"].get("headers", [])
        if any(h["name"] == lua.MODEL_HEADER for h in headers):
            r["match"]["headers"] = [h for h in headers if h["name"] != lua.MODEL_HEADER]


REMOVALS: tuple[tuple[str, str, Edit], ...] = (
    ("direct", "deployment cluster, no aggregate", direct),
    ("no-retry", "− retry policy and hedging", no_retry),
    ("no-pertry", "− per-try timeout and hedging (retries kept)", no_per_try),
    ("no-als", "− the gRPC access log", no_access_log),
    ("no-stats", "− stats (all rejected)", no_stats),
    ("no-outlier", "− outlier detection", no_outlier),
    ("no-hc", "− active health checks", no_health_checks),
    ("h2-dflt", "Envoy's default HTTP/2 windows and buffer limits", h2_defaults),
    ("no-locreply", "− local_reply_config mappers", no_local_replies),
    ("no-routehdr", "− the route's grpc-timeout removal and max_stream_duration",
     no_route_headers),
    ("no-slowroute", "− the slow-path route ahead of the model's", no_slow_route),
)


def _bare(c: Config) -> None:
    for _, _, edit in REMOVALS:
        edit(c)


BISECT = (
    Variant("dm", "the pushed module config, static (no upstream chain)", MODEL,
            (sy_dm_no_upstream,)),
    *(Variant(f"dm-{name}", f"dm {what}", MODEL, (sy_dm_no_upstream, edit))
      for name, what, edit in REMOVALS),
    Variant("dm-bare", "dm with every removal above, the module kept", MODEL,
            (sy_dm_no_upstream, _bare)),
    Variant("dm-no-module", "dm without the module (routes by path)", VARIANT,
            (sy_dm_no_upstream, no_module)),
)
