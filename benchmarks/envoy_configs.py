"""Static Envoy bootstraps for the per-filter benchmark (``benchmarks/envoy_filters.py``).

Each variant is plain Envoy (one listener, a route to one Triton, no filters: the data-plane
benchmark's ``envoy`` target) with ONE piece of what placement pushes to a Switchyard Envoy
edge switched on, built by the same functions placement uses (``services/xds``), or the whole
Switchyard config as a static bootstrap, or an alternative for an expensive piece. Static, so
each piece can be switched on alone; the ADS-configured edge is measured beside them
(``envoy-sy``) to check that the static ``sy`` is the same config.

A variant names the model it is called with: the Triton variant (``tiny-v1``) when nothing
rewrites the request, the logical name (``tiny``) when the variant rewrite must happen for the
call to succeed. Where a variant routes on what a filter extracted, a route that matches only
the extracted name makes a filter that did nothing fail the call (counted as errors).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from google.protobuf import json_format

from benchmarks import envoy_extract as extract
from benchmarks._fleet import MODEL, REGION, VARIANT
from services.api.switchyard.v1 import placement_pb2
from services.xds import lua, resources, rewrite
from services.xds.resources import EnvoySettings, ModelRoutes

_T = "type.googleapis.com/"
SETTINGS = EnvoySettings()
BACKEND = "bench-t4"
DEPLOYMENT = f"{BACKEND}/{VARIANT}"
DEP_CLUSTER = resources.cluster_name(DEPLOYMENT)
AGG_CLUSTER = resources.model_cluster_name(MODEL)
HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = _T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def candidate(triton: str) -> placement_pb2.Candidate:
    return placement_pb2.Candidate(deployment_id=DEPLOYMENT, backend_id=BACKEND,
                                   endpoint=triton, variant=VARIANT, region=REGION)


def _lua(name: str, source: str) -> dict[str, Any]:
    return {"name": name, "typed_config": {
        "@type": _T + "envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string": source}}}


ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": _T + "envoy.extensions.filters.http.router.v3.Router"}}
CODEC = {"name": "envoy.filters.http.upstream_codec", "typed_config": {
    "@type": _T + "envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}}


_RESPONSE = "\n-- A fast-path ModelInfer answered OK"


def request_only_script() -> str:
    """The listener Lua without its response function (the cost and SLO trailers)."""
    full = lua.model_name_script(SETTINGS.deadline_margin_ms)
    return full[:full.index(_RESPONSE)] if _RESPONSE in full else full


def hints_only_script() -> str:
    """The listener Lua's request side with its body peek cut off: hints and SLO header."""
    full = request_only_script()
    cut = "  local body = handle:body()"
    assert cut in full, "the listener Lua changed: update the hints-only cut"
    return full.replace(cut, "  do return end\n" + cut, 1)


@dataclass
class Config:
    """A bootstrap being assembled: the pieces a variant switches on edit it in place."""

    triton: str
    placement: str
    port: int
    admin_port: int
    filters: list[dict[str, Any]]
    route_config: dict[str, Any]
    clusters: dict[str, dict[str, Any]]
    access_log: list[dict[str, Any]]
    stats: bool = True
    # the rest of the pushed listener (``switchyard``): HCM fields (HTTP/2 windows, local
    # replies, connection limits...) and listener fields (the per-connection buffer limit)
    hcm_extra: dict[str, Any] = field(default_factory=dict)
    listener_extra: dict[str, Any] = field(default_factory=dict)
    router: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(ROUTER))

    def route(self) -> dict[str, Any]:
        r: dict[str, Any] = self.route_config["virtual_hosts"][0]["routes"][0]
        return r

    def bootstrap(self) -> dict[str, Any]:
        hcm: dict[str, Any] = {
            "@type": HCM_TYPE, "stat_prefix": "bench", "codec_type": "HTTP2",
            "route_config": self.route_config, "http_filters": [*self.filters, self.router],
            **self.hcm_extra}
        if self.access_log:
            hcm["access_log"] = self.access_log
        host, _, port = self.placement.rpartition(":")
        placement = {
            "name": resources.PLACEMENT_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {PROTOCOL_OPTIONS: {
                "@type": _T + PROTOCOL_OPTIONS, "explicit_http_config": {
                    "http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": resources.PLACEMENT_CLUSTER, "endpoints": [{
                "lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": host, "port_value": int(port)}}}}]}]}}
        out: dict[str, Any] = {
            "node": {"id": f"bench-{self.port}", "cluster": REGION},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": self.admin_port}}},
            "static_resources": {
                "listeners": [{"name": "bench", "address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": self.port}},
                    "filter_chains": [{"filters": [{"name": HCM, "typed_config": hcm}]}],
                    **self.listener_extra}],
                "clusters": [*self.clusters.values(), placement]}}
        if not self.stats:
            out["stats_config"] = {"stats_matcher": {"reject_all": True}}
        return out


def plain(triton: str, placement: str, port: int, admin_port: int) -> Config:
    """The data-plane benchmark's plain Envoy: prefix route, bare HTTP/2 cluster, no filters
    (the bare cluster's endpoint carries Switchyard's metadata, which costs nothing unread)."""
    host, _, tport = triton.rpartition(":")
    bare = {
        "name": DEP_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
        "typed_extension_protocol_options": {PROTOCOL_OPTIONS: {
            "@type": _T + PROTOCOL_OPTIONS,
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": DEP_CLUSTER, "endpoints": [{"lb_endpoints": [{
            "endpoint": {"address": {"socket_address": {"address": host,
                                                        "port_value": int(tport)}}},
            "metadata": {"filter_metadata": {lua.METADATA_NAMESPACE: {
                "deployment": DEPLOYMENT, "variant": VARIANT, "backend": BACKEND,
                "region": REGION}}}}]}]}}
    routes = {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{
        "match": {"prefix": "/"}, "route": {"cluster": DEP_CLUSTER, "timeout": "0s"}}]}]}
    return Config(triton, placement, port, admin_port, [], routes, {DEP_CLUSTER: bare}, [])


# --- one piece each ------------------------------------------------------------------------

def deployment_cluster(c: Config) -> None:
    """The cluster placement pushes per deployment (outlier detection, windows, limits)."""
    c.clusters[DEP_CLUSTER] = _dict(resources.deployment_cluster(candidate(c.triton), SETTINGS))


def lua_hints(c: Config) -> None:
    c.filters.append(_lua("switchyard.model_name", hints_only_script()))


def lua_noop(c: Config) -> None:
    """A Lua filter that does nothing: the fixed price of one Lua coroutine per call."""
    c.filters.append(_lua("noop", "function envoy_on_request(h) end"))


def lua_noop_both(c: Config) -> None:
    """The same with a response function too: a second coroutine per call."""
    c.filters.append(_lua("noop", "function envoy_on_request(h) end\n"
                                  "function envoy_on_response(h) end"))


def lua_peek(c: Config) -> None:
    """The listener Lua's request side (hints, SLO, body peek); the route needs the name."""
    c.filters.append(_lua("switchyard.model_name", request_only_script()))
    _match_header(c)


def _match_header(c: Config) -> None:
    c.route()["match"]["headers"] = [{"name": lua.MODEL_HEADER,
                                      "string_match": {"exact": VARIANT}}]


def aggregate(c: Config) -> None:
    """Route to an aggregate cluster (no upstream filters) whose one child is the deployment."""
    agg = _dict(resources.model_cluster(AGG_CLUSTER, [DEPLOYMENT], SETTINGS))
    agg["typed_extension_protocol_options"][PROTOCOL_OPTIONS].pop("http_filters")
    c.clusters[AGG_CLUSTER] = agg
    c.route()["route"]["cluster"] = AGG_CLUSTER


def retry_policy(c: Config) -> None:
    action = resources._route_action(MODEL, DEP_CLUSTER, [DEPLOYMENT], SETTINGS)["route"]
    c.route()["route"].update(retry_policy=action["retry_policy"],
                              max_stream_duration=action["max_stream_duration"])


# another variant in the order: the aggregate placement pushes then has the upstream rewrite
OTHER_VARIANT_DEPLOYMENT = f"{BACKEND}-b/{VARIANT}-other"


def multi_variant_upstream_filters() -> list[dict[str, Any]]:
    """The upstream filters of an aggregate whose children serve two variants (the upstream
    Lua rewrite included; a one-variant aggregate has none)."""
    agg = _dict(resources.model_cluster(AGG_CLUSTER, [DEPLOYMENT, OTHER_VARIANT_DEPLOYMENT],
                                        SETTINGS))
    shipped: list[dict[str, Any]] = (
        agg["typed_extension_protocol_options"][PROTOCOL_OPTIONS]["http_filters"])
    return shipped


def _upstream_filters(c: Config, names: tuple[str, ...]) -> None:
    shipped = multi_variant_upstream_filters()
    chosen = [f for f in shipped if f["name"] in names] + [CODEC]
    opts = c.clusters[DEP_CLUSTER]["typed_extension_protocol_options"][PROTOCOL_OPTIONS]
    opts["http_filters"] = copy.deepcopy(chosen)


def header_mutation(c: Config) -> None:
    """The upstream header_mutation (variant header, trailers from endpoint metadata)."""
    _upstream_filters(c, ("switchyard.variant_header",))


def upstream_lua(c: Config) -> None:
    """The upstream Lua rewrite alone; the route sets the two headers it reads."""
    _upstream_filters(c, ("switchyard.variant_rewrite",))
    c.route()["request_headers_to_add"] = [
        {"header": {"key": lua.MODEL_HEADER, "value": MODEL}},
        {"header": {"key": lua.VARIANT_HEADER, "value": VARIANT}}]


def access_log(c: Config) -> None:
    """Every call logged to placement's gRPC access-log service, as the edge's listener does."""
    hcm = _sy_hcm(c)
    c.access_log = hcm["access_log"]


def no_stats(c: Config) -> None:
    c.stats = False


# --- alternatives ----------------------------------------------------------------------------

def field_extraction(c: Config) -> None:
    """grpc_field_extraction reads the model name; a one-line Lua clears the route cache so
    the route (matching the extracted name as dynamic metadata) is chosen again."""
    c.filters += [extract.extraction_filter(), _lua(
        "clear_route_cache", "function envoy_on_request(h) h:clearRouteCache() end")]
    c.route()["match"]["dynamic_metadata"] = [extract.model_matcher(VARIANT)]


def lua_hints_and_extraction(c: Config) -> None:
    """grpc_field_extraction, then the listener Lua without its body walk (hints, SLO, the
    extracted name copied into the route's header)."""
    c.filters += extract.model_name_filters(SETTINGS.deadline_margin_ms)
    _match_header(c)


# --- the whole Switchyard config -------------------------------------------------------------

def _sy_listener(c: Config) -> dict[str, Any]:
    return _dict(resources.listener("127.0.0.1", c.port, REGION, SETTINGS))


def _sy_hcm(c: Config) -> dict[str, Any]:
    hcm: dict[str, Any] = _sy_listener(c)["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


# HCM fields the bootstrap sets itself (the routes come inline, not over RDS)
_OWN_HCM_FIELDS = ("@type", "stat_prefix", "codec_type", "rds", "http_filters", "access_log")


def switchyard(c: Config) -> None:
    """Everything placement pushes (one model, one deployment), as a static bootstrap: the
    listener's HCM as pushed (its routes inline instead of over RDS), its clusters."""
    listener = _sy_listener(c)
    hcm: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    c.filters = [f for f in hcm["http_filters"] if f["name"] != ROUTER["name"]]
    c.router = next(f for f in hcm["http_filters"] if f["name"] == ROUTER["name"])
    c.access_log = hcm["access_log"]
    c.hcm_extra = {k: v for k, v in hcm.items() if k not in _OWN_HCM_FIELDS}
    c.listener_extra = {k: v for k, v in listener.items()
                        if k not in ("name", "address", "filter_chains")}
    deployment_cluster(c)
    c.clusters[AGG_CLUSTER] = _dict(resources.model_cluster(AGG_CLUSTER, [DEPLOYMENT],
                                                            SETTINGS))
    c.clusters[resources.SLOW_PATH_CLUSTER] = _dict(resources.slow_path_cluster(
        c.admin_port, SETTINGS))  # never called here: the load sends no slow-path hint
    models = {MODEL: ModelRoutes((DEPLOYMENT,), (), frozenset({DEPLOYMENT}), 1000.0,
                                 {DEPLOYMENT: 2.5e-7})}
    c.route_config = _dict(resources.route_configuration(REGION, models, SETTINGS))
    c.route_config.pop("name", None)


def sy_first_variant(c: Config) -> None:
    """Switchyard with the variant appended once by the listener Lua (the first deployment's,
    from route metadata), and the upstream filters of an order over two variants: the
    upstream Lua runs on every attempt and touches the body only for another variant."""
    switchyard(c)
    for f in c.filters:
        src = f["typed_config"]["default_source_code"]
        if rewrite.FIRST_VARIANT_KEY not in src["inline_string"]:  # the listener has it now
            src["inline_string"] = rewrite.listener_script(src["inline_string"])
    for r in c.route_config["virtual_hosts"][0]["routes"]:
        if r.get("route", {}).get("cluster") == AGG_CLUSTER:
            r.setdefault("metadata", {}).setdefault("filter_metadata", {}).setdefault(
                lua.LISTENER_FILTER, {})[rewrite.FIRST_VARIANT_KEY] = VARIANT
    opts = c.clusters[AGG_CLUSTER]["typed_extension_protocol_options"][PROTOCOL_OPTIONS]
    opts["http_filters"] = multi_variant_upstream_filters()


def set_first_variant(c: Config, first_variant: str | None) -> None:
    """Point the model routes' first-variant metadata at ``first_variant`` (None: remove the
    key, as when placement sends none); routes without the key are left alone."""
    for r in c.route_config["virtual_hosts"][0]["routes"]:
        meta = r.get("metadata", {}).get("filter_metadata", {}).get(lua.LISTENER_FILTER)
        if meta is not None and rewrite.FIRST_VARIANT_KEY in meta:
            if first_variant is None:
                del meta[rewrite.FIRST_VARIANT_KEY]
            else:
                meta[rewrite.FIRST_VARIANT_KEY] = first_variant


def sy_without_lua(c: Config) -> None:
    """Switchyard with no Lua at all (no hints, no peek, no rewrite, no cost trailers): the
    model routes match by path alone and the call names the variant. Not a working edge: the
    floor of the rest (aggregate, retries, header_mutation, access log), i.e. what a native
    filter doing the Lua's work for free would still cost."""
    switchyard(c)
    c.filters = []
    for r in c.route_config["virtual_hosts"][0]["routes"]:
        headers = r["match"].get("headers", [])
        if any(h["name"] == lua.MODEL_HEADER for h in headers):
            r["match"]["headers"] = [h for h in headers if h["name"] != lua.MODEL_HEADER]
    opts = c.clusters[AGG_CLUSTER]["typed_extension_protocol_options"][PROTOCOL_OPTIONS]
    opts["http_filters"] = [f for f in opts["http_filters"]
                            if f["name"] != "switchyard.variant_rewrite"]


def sy_extraction(c: Config) -> None:
    """Switchyard with the model name from grpc_field_extraction, hints by the header Lua."""
    switchyard(c)
    c.filters = extract.model_name_filters(SETTINGS.deadline_margin_ms)


# --- active health checks (d554ad0) ----------------------------------------------------------

def sy_without_health_checks(c: Config) -> None:
    """Switchyard with its deployment cluster as placement compiled it before the active gRPC
    health checks (``health_interval_s=None``: the cluster has no ``health_checks``)."""
    switchyard(c)
    c.clusters[DEP_CLUSTER] = _dict(resources.deployment_cluster(
        candidate(c.triton), replace(SETTINGS, health_interval_s=None)))


def standby_clusters(n: int) -> Callable[[Config], None]:
    """Switchyard plus ``n`` deployment clusters no route names, as placement pushes the
    standbys and drained deployments it keeps warm: each health-checked (at
    ``health_idle_s``: they carry no calls), all pointing at the one Triton."""
    def edit(c: Config) -> None:
        switchyard(c)
        for i in range(n):
            d = f"{BACKEND}-sb{i}/{VARIANT}"
            c.clusters[resources.cluster_name(d)] = _dict(resources.deployment_cluster(
                placement_pb2.Candidate(deployment_id=d, backend_id=f"{BACKEND}-sb{i}",
                                        endpoint=c.triton, variant=VARIANT, region=REGION),
                SETTINGS))
    edit.__name__ = f"standby_clusters_{n}"
    return edit


Edit = Callable[[Config], None]


@dataclass(frozen=True)
class Variant:
    name: str
    what: str
    model: str  # the name the load calls
    edits: tuple[Edit, ...] = ()

    def bootstrap(self, triton: str, placement: str, port: int,
                  admin_port: int) -> dict[str, Any]:
        c = plain(triton, placement, port, admin_port)
        for edit in self.edits:
            edit(c)
        return c.bootstrap()


PIECES = (
    Variant("plain", "no filters (baseline)", VARIANT),
    Variant("dep-cluster", "placement's per-deployment cluster", VARIANT, (deployment_cluster,)),
    Variant("lua-hints", "listener Lua: hints + SLO header only", VARIANT, (lua_hints,)),
    Variant("lua-noop", "a Lua filter that does nothing", VARIANT, (lua_noop,)),
    Variant("lua-noop2", "the same, request and response", VARIANT, (lua_noop_both,)),
    Variant("lua-peek", "listener Lua: hints + SLO + body peek", VARIANT, (lua_peek,)),
    Variant("aggregate", "aggregate cluster in front", VARIANT, (aggregate,)),
    Variant("retry", "route retry policy (previous_priorities)", VARIANT, (retry_policy,)),
    Variant("hdr-mutation", "upstream header_mutation + trailers", VARIANT, (header_mutation,)),
    Variant("up-lua", "upstream Lua variant rewrite", MODEL, (upstream_lua,)),
    Variant("als", "gRPC access log to placement", VARIANT, (access_log,)),
    Variant("no-stats", "plain, stats rejected (diagnostic)", VARIANT, (no_stats,)),
    Variant("sy", "all of Switchyard, static", MODEL, (switchyard,)),
)
ALTERNATIVES = (
    Variant("gfe", "grpc_field_extraction, route on metadata", VARIANT, (field_extraction,)),
    Variant("hints+gfe", "Lua hints + grpc_field_extraction", VARIANT,
            (lua_hints_and_extraction,)),
    Variant("sy-gfe", "Switchyard, name by grpc_field_extraction", MODEL, (sy_extraction,)),
    Variant("sy-first", "Switchyard, variant appended once by the listener", MODEL,
            (sy_first_variant,)),
    Variant("sy-2var", "Switchyard, an order over two variants (upstream Lua kept)", MODEL,
            (sy_first_variant,)),
    Variant("sy-no-lua", "Switchyard minus every Lua filter (floor)", VARIANT,
            (sy_without_lua,)),
)
HEALTH = (
    Variant("sy-no-hc", "Switchyard, no active health checks (as before d554ad0)", MODEL,
            (sy_without_health_checks,)),
    Variant("sy-sb50", "Switchyard + 50 idle standby clusters, health-checked", MODEL,
            (standby_clusters(50),)),
    Variant("sy-sb200", "Switchyard + 200 idle standby clusters, health-checked", MODEL,
            (standby_clusters(200),)),
)
VARIANTS = {v.name: v for v in (*PIECES, *ALTERNATIVES, *HEALTH)}
