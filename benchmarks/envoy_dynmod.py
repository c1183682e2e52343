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


DM_VARIANTS = (
    Variant("dm-peek", "C dynamic module: hints + SLO + body peek", VARIANT, (dm_peek,)),
    Variant("sy-dm", "Switchyard, Lua replaced by the C dynamic module", MODEL,
            (sy_dynamic_module,)),
)
