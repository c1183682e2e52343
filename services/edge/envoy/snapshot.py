"""The persisted snapshot of an Envoy edge: what it last served, as a static bootstrap.

Envoy keeps serving its last config when placement goes away, but a *restarted* Envoy has
only its bootstrap. So the supervisor saves what Envoy reports as active (admin
``/config_dump``: dynamic clusters, listeners, route configurations) as a bootstrap with the
same resources in ``static_resources`` (each listener's RDS replaced by the route
configuration it was using) and no ADS; ``<run_dir>/envoy/<edge>.snapshot.json`` is the Envoy
twin of the Python edge's ``<edge>.routes.pb``.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
from typing import Any

from envoy.config.bootstrap.v3 import bootstrap_pb2
from google.protobuf import json_format

import services.xds.resources  # noqa: F401 (registers every "@type" the dump holds)
from services.xds.resources import SLOW_PATH_CLUSTER


def _untyped(message: dict[str, Any]) -> dict[str, Any]:
    """A resource from the dump (an ``Any`` in JSON) as the plain message static config wants."""
    out = copy.deepcopy(message)
    out.pop("@type", None)
    return out


def static_bootstrap(dump: dict[str, Any], bootstrap: dict[str, Any]) -> dict[str, Any] | None:
    """``bootstrap`` (the ADS one) serving ``dump``'s active resources statically, without
    ADS; None when the dump holds no complete config yet (no listener, or a missing route)."""
    configs = {c["@type"].rsplit(".", 1)[-1]: c for c in dump.get("configs", [])}
    clusters = [_untyped(c["cluster"]) for c in
                configs.get("ClustersConfigDump", {}).get("dynamic_active_clusters", [])]
    routes = {r["route_config"]["name"]: _untyped(r["route_config"]) for r in
              configs.get("RoutesConfigDump", {}).get("dynamic_route_configs", [])}
    listeners = []
    for entry in configs.get("ListenersConfigDump", {}).get("dynamic_listeners", []):
        if "active_state" not in entry:
            continue
        listener = _untyped(entry["active_state"]["listener"])
        for chain in listener.get("filter_chains", []):
            for f in chain.get("filters", []):
                hcm = f.get("typed_config", {})
                rds = hcm.pop("rds", None)
                if rds is not None:
                    if rds["route_config_name"] not in routes:
                        return None
                    hcm["route_config"] = routes[rds["route_config_name"]]
        listeners.append(listener)
    if not listeners or not clusters:
        return None
    static = {k: v for k, v in bootstrap.items() if k != "dynamic_resources"}
    static["static_resources"] = {
        "listeners": listeners,
        "clusters": [*bootstrap["static_resources"]["clusters"], *clusters],
        # the node's certificate files ([security] TLS): what the resources' secrets name
        **({"secrets": bootstrap["static_resources"]["secrets"]}
           if "secrets" in bootstrap["static_resources"] else {})}
    json_format.ParseDict(static, bootstrap_pb2.Bootstrap())  # what Envoy will be asked to load
    return static


def repoint_slow_path(config: dict[str, Any], port: int) -> None:
    """Point a snapshot's ``slow-path`` cluster at this process's slow path (a restarted edge
    listens on a new private port); a snapshot without one is left as it is."""
    for cluster in config.get("static_resources", {}).get("clusters", []):
        if cluster.get("name") == SLOW_PATH_CLUSTER and port:
            for group in cluster["load_assignment"]["endpoints"]:
                for lb in group["lb_endpoints"]:
                    lb["endpoint"]["address"]["socket_address"]["port_value"] = port


def write_atomically(path: pathlib.Path, config: dict[str, Any]) -> None:
    """``config`` as JSON at ``path``, whole or not at all: written beside it, flushed to the
    disk, then renamed over it (a crash leaves the old file or the new one)."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        f.write(json.dumps(config))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
