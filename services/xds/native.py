"""The C dynamic module (``native/switchyard_edge.c``) as Envoy filter config: the twin of the
listener Lua (``lua.py`` + ``rewrite.listener_script``) and of the upstream Lua rewrite
(``rewrite.VARIANT_REWRITE``), measured against them by ``benchmarks/envoy_filters.py``.

Envoy 1.40 loads a module by name from ``ENVOY_DYNAMIC_MODULES_SEARCH_PATH`` (``lib<name>.so``);
``native/build.sh`` (run by ``scripts/bootstrap.sh``) builds it with gcc. The module reads the
route metadata placement already pushes under ``switchyard.model_name`` (``first_variant``,
``path``, ``slo_ms``) and, because the C ABI reads one key of one namespace at a time, each
deployment's cost and feasibility flattened into two more namespaces (``route_metadata``).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from typing import Any

from services.xds import lua

MODULE_NAME = "switchyard_edge"
SEARCH_PATH_ENV = "ENVOY_DYNAMIC_MODULES_SEARCH_PATH"
BUILD_DIR = pathlib.Path(__file__).resolve().parents[2] / "native" / "build"
COST_NAMESPACE = "switchyard.cost"
FEASIBLE_NAMESPACE = "switchyard.feasible"
_T = "type.googleapis.com/"
_FILTER = _T + "envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"


def module_path(build_dir: pathlib.Path = BUILD_DIR) -> pathlib.Path:
    return build_dir / f"lib{MODULE_NAME}.so"


def available(build_dir: pathlib.Path = BUILD_DIR) -> bool:
    """The module was built (``native/build.sh``; skipped without gcc)."""
    return module_path(build_dir).is_file()


def envoy_env(build_dir: pathlib.Path = BUILD_DIR) -> dict[str, str]:
    """The environment an Envoy that loads the module needs."""
    return {**os.environ, SEARCH_PATH_ENV: str(build_dir)}


def _filter(name: str, filter_name: str, config: str) -> dict[str, Any]:
    return {"name": name, "typed_config": {
        "@type": _FILTER,
        "dynamic_module_config": {"name": MODULE_NAME},
        "filter_name": filter_name,
        "filter_config": {"@type": _T + "google.protobuf.StringValue", "value": config}}}


def listener_filter(deadline_margin_ms: float, slow_path: bool = False,
                    tenants: str = "off", max_message_bytes: int | None = None,
                    max_metadata_bytes: int | None = None,
                    max_metadata_count: int | None = None,
                    tenant_sans: Sequence[str] = ()) -> dict[str, Any]:
    """In place of the listener Lua (same name, so the routes' metadata stays where it is);
    ``tenants`` as ``lua.model_name_script``'s: which ModelInfer calls go to the slow path's
    tenant gate (``off``, ``credential``: those carrying ``authorization`` or ``x-tenant``,
    ``all``); the three limits as its too (None: not checked): a named RPC's message over
    ``max_message_bytes`` is RESOURCE_EXHAUSTED, ``[security.limits]`` on the metadata;
    ``tenant_sans``: with ``credential``, a call whose client certificate (as Envoy forwards
    it) may name one of them is a tenant's too (``lua.model_name_script``'s; hex in the
    config, so any byte passes ``;``)."""
    if tenants not in ("off", "credential", "all"):
        raise ValueError(f"tenants={tenants!r}: one of off, credential, all")
    limits = {"max_message_bytes": max_message_bytes, "max_metadata_bytes": max_metadata_bytes,
              "max_metadata_count": max_metadata_count}
    for key, n in limits.items():
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise ValueError(f"{key}={n!r}: a whole number of at least 0, or None")
    return _filter(lua.LISTENER_FILTER, "listener",
                   f"margin={float(deadline_margin_ms)!r};slow={int(slow_path)};"
                   f"tenants={tenants}"
                   + "".join(f";{k}={n}" for k, n in limits.items() if n is not None)
                   + "".join(f";tenant_san={san.encode().hex()}" for san in tenant_sans if san))


def rewrite_filter() -> dict[str, Any]:
    """In place of the upstream Lua ``switchyard.variant_rewrite``."""
    return _filter("switchyard.variant_rewrite", "rewrite", "")


def route_metadata(filter_metadata: dict[str, Any]) -> dict[str, Any]:
    """A route's ``filter_metadata`` with ``cost`` and ``feasible`` of the listener's namespace
    also flattened into namespaces of their own (deployment -> cost string / true)."""
    ours = filter_metadata.get(lua.LISTENER_FILTER, {})
    out = dict(filter_metadata)
    if "cost" in ours:
        out[COST_NAMESPACE] = dict(ours["cost"])
    if "feasible" in ours:
        out[FEASIBLE_NAMESPACE] = dict.fromkeys(ours["feasible"], True)
    return out
