"""The C dynamic module's variants for ``benchmarks/envoy_filters.py`` (issue 12): the same
bootstraps as ``envoy_configs`` with the Lua filters swapped for ``native/switchyard_edge.c``.

- ``dm-peek``: plain Envoy plus the module's listener filter (hints, SLO header, body peek;
  its response side runs too but finds no route metadata), against ``lua-peek``;
- ``sy-dm``: all of Switchyard as ``sy`` with the listener Lua and the upstream Lua rewrite
  replaced by the module's two filters, against ``sy``.

Both route on the name the module extracted, so a module that did nothing fails the calls.
"""

from __future__ import annotations

from typing import Any

from benchmarks._fleet import MODEL, VARIANT
from benchmarks.envoy_configs import (
    AGG_CLUSTER,
    PROTOCOL_OPTIONS,
    SETTINGS,
    Config,
    Variant,
    _match_header,
    multi_variant_upstream_filters,
    switchyard,
)
from services.xds import lua, native


def dm_peek(c: Config) -> None:
    c.filters.append(native.listener_filter(SETTINGS.deadline_margin_ms))
    _match_header(c)


def sy_dynamic_module(c: Config) -> None:
    switchyard(c)
    c.filters = [native.listener_filter(SETTINGS.deadline_margin_ms)
                 if f["name"] == lua.LISTENER_FILTER else f for f in c.filters]
    for r in c.route_config["virtual_hosts"][0]["routes"]:
        md: dict[str, Any] | None = r.get("metadata", {}).get("filter_metadata")
        if md is not None:
            r["metadata"]["filter_metadata"] = native.route_metadata(md)
    # The module rewrites the variant per attempt upstream: its listener side appends none
    # (the Lua listener does, which is why a one-variant order carries no upstream Lua since
    # 79b0811), so the aggregate's upstream filters are those of an order over two variants,
    # the Lua rewrite swapped for the module's.
    opts = c.clusters[AGG_CLUSTER]["typed_extension_protocol_options"][PROTOCOL_OPTIONS]
    opts["http_filters"] = [native.rewrite_filter()
                            if f["name"] == "switchyard.variant_rewrite" else f
                            for f in multi_variant_upstream_filters()]


def sy_dm_one_variant(c: Config) -> None:
    """``sy-dm`` as placement pushes an order over one variant (``clusters.model_cluster``):
    the module's listener appends the variant, the aggregate's upstream filters are the
    header_mutation (the Python edge's trailers) and the codec, no rewrite."""
    sy_dynamic_module(c)
    opts = c.clusters[AGG_CLUSTER]["typed_extension_protocol_options"][PROTOCOL_OPTIONS]
    opts["http_filters"] = [f for f in opts["http_filters"] if f["name"] != native.REWRITE_FILTER]


def sy_dm_no_upstream(c: Config) -> None:
    """``sy-dm1`` without an upstream filter chain (no header_mutation, so no x-served-by,
    x-served-region, x-attempts, x-request-id or path trailers, and with no x-served-by the
    module adds no x-cost-usd/x-slo-met): what the chain costs, an upper bound on what
    moving those trailers into the module's response side could save."""
    sy_dynamic_module(c)
    opts = c.clusters[AGG_CLUSTER]["typed_extension_protocol_options"][PROTOCOL_OPTIONS]
    del opts["http_filters"]


DM_VARIANTS = (
    Variant("dm-peek", "C dynamic module: hints + SLO + body peek", VARIANT, (dm_peek,)),
    Variant("sy-dm", "Switchyard, Lua replaced by the C dynamic module", MODEL,
            (sy_dynamic_module,)),
    Variant("sy-dm1", "sy-dm, an order over one variant (as envoy-sy's)", MODEL,
            (sy_dm_one_variant,)),
    Variant("sy-dm1-no-up", "sy-dm1 without the upstream filter chain (no trailers)", MODEL,
            (sy_dm_no_upstream,)),
)
