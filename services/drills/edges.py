"""What a drill needs to know of an edge, whichever engine runs it.

:class:`EdgeView` is the one shape the drills read: is the edge connected to placement, does
it hold routes (and from where), which deployments it will not use right now, which backends
its routes would send calls to. A Python edge answers with ``EdgeAdmin.Status``; an Envoy
edge (``[edge] engine = "envoy"``) has no ``EdgeAdmin`` on its port, so its view is read from
Envoy's own admin API (127.0.0.1, the port its supervisor wrote into the bootstrap under
``<run_dir>/envoy/``): ``control_plane.connected_state``, ``/clusters`` health flags (outlier
ejection) and ``/config_dump`` (the clusters and each aggregate cluster's failover order).
"""

from __future__ import annotations

import json
import pathlib
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, cast

import grpc

from services.api.switchyard.v1 import edge_pb2, edge_pb2_grpc
from services.config import EdgeConfig, MeshConfig
from services.xds.envoy_types import DEPLOYMENT_PREFIX, MODEL_PREFIX


class EdgeUnreachable(Exception):
    """The edge (or, for Envoy, its admin interface) did not answer; ``status`` says how."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True, slots=True)
class EdgeView:
    placement_connected: bool
    routes_source: str          # "placement", or "disk" (a table / Envoy snapshot from disk)
    has_routes: bool
    blocked: tuple[str, ...]    # deployment ids the edge will not use (ejected, failed checks)
    known: frozenset[str]       # backend ids in the edge's routes
    routable: frozenset[str]    # backend ids the edge's routes would send a call to


def edge_view(cfg: MeshConfig, edge: EdgeConfig, timeout_s: float = 1.0) -> EdgeView:
    """The edge's view, from ``EdgeAdmin.Status`` or Envoy's admin API by ``cfg.edge.engine``."""
    if cfg.edge.engine == "envoy":
        return envoy_view(envoy_admin_ports(cfg, edge), timeout_s)
    try:
        with grpc.insecure_channel(f"{edge.host}:{edge.port}") as ch:
            st: edge_pb2.EdgeStatusResponse = edge_pb2_grpc.EdgeAdminStub(ch).Status(
                edge_pb2.EdgeStatusRequest(), timeout=timeout_s)
    except grpc.RpcError as exc:
        raise EdgeUnreachable(cast("grpc.Call", exc).code().name) from exc
    rows = [c for t in st.tables for c in t.candidates]
    return EdgeView(
        placement_connected=st.placement_connected, routes_source=st.routes_source,
        has_routes=bool(st.tables),
        blocked=tuple(d.deployment_id for d in st.deployments if d.ejected),
        known=frozenset(c.backend_id for c in rows),
        routable=frozenset(c.backend_id for c in rows if not c.dropped_reason))


# -- Envoy ---------------------------------------------------------------------------------

def envoy_admin_ports(cfg: MeshConfig, edge: EdgeConfig) -> list[int]:
    """Admin ports of the edge's Envoy bootstraps, newest file first (during a hand-over
    from the snapshot Envoy to the ADS one both run; the newer is the one taking over)."""
    directory = cfg.path(cfg.run_dir) / "envoy"
    files = sorted(directory.glob(f"{edge.id}.*.json"), key=_mtime, reverse=True)
    ports: list[int] = []
    for f in files:
        try:
            port = int(json.loads(f.read_text())["admin"]["address"]["socket_address"]
                       ["port_value"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if port not in ports:
            ports.append(port)
    return ports


def _mtime(p: pathlib.Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def _admin(port: int, path: str, timeout_s: float) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}",
                                timeout=timeout_s) as resp:
        return str(resp.read().decode())


CONNECTED_SAMPLES = 3
SAMPLE_GAP_S = 0.1


def _connected_samples(port: int, timeout_s: float) -> str:
    """``control_plane.connected_state`` read a few times, stopping at the first 0. Envoy sets
    it to 1 when it *opens* a new ADS stream, before the connection is known to fail, so while
    placement is down it blinks to 1 on every reconnect attempt: one read can lie."""
    lines: list[str] = []
    for i in range(CONNECTED_SAMPLES):
        if i:
            time.sleep(SAMPLE_GAP_S)
        lines.append(_admin(port, "/stats?filter=^control_plane.connected_state$",
                            timeout_s).strip())
        if lines[-1].endswith(": 0"):
            break
    return "\n".join(lines)


def envoy_view(ports: list[int], timeout_s: float = 1.0) -> EdgeView:
    """The view from the first of ``ports`` whose Envoy admin answers."""
    for port in ports:
        try:
            stats = _connected_samples(port, timeout_s)
            clusters = _admin(port, "/clusters", timeout_s)
            dump = json.loads(_admin(port, "/config_dump?resource=dynamic_active_clusters",
                                     timeout_s) or "{}")
            static = json.loads(_admin(port, "/config_dump?resource=static_clusters",
                                       timeout_s) or "{}")
            routes = [json.loads(_admin(port, f"/config_dump?resource={r}", timeout_s) or "{}")
                      for r in ("dynamic_route_configs", "static_listeners")]
        except (OSError, urllib.error.URLError, ValueError):
            continue
        return parse_envoy(stats, clusters, dump, static, routes)
    raise EdgeUnreachable("Envoy admin not answering" if ports else "no Envoy bootstrap found")


def _configs(dump: dict[str, Any]) -> list[dict[str, Any]]:
    return [c.get("cluster", {}) for c in dump.get("configs", [])]


def routed_clusters(config: object) -> set[str]:
    """The clusters the route configurations in an admin config dump send calls to (a
    route's ``cluster`` and its ``weighted_clusters``; RDS's or a static listener's own)."""
    found: set[str] = set()
    stack = [config]
    while stack:
        x = stack.pop()
        if isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, dict):
            route = x.get("route")
            if isinstance(route, dict):
                if isinstance(route.get("cluster"), str):
                    found.add(route["cluster"])
                weighted = route.get("weighted_clusters", {})
                if isinstance(weighted, dict):
                    found.update(w["name"] for w in weighted.get("clusters", [])
                                 if isinstance(w, dict) and isinstance(w.get("name"), str))
            stack.extend(x.values())
    return found


def parse_envoy(stats: str, clusters: str, dynamic: dict[str, Any],
                static: dict[str, Any], routes: object = None) -> EdgeView:
    """An :class:`EdgeView` from Envoy's admin answers (pure: tested on recorded text).
    ``routes``: the route configurations' dumps; when they name any aggregate, only those
    count as the orders calls are routed by (placement keeps an aggregate no route names a
    few compiles for calls already routed: ``services.xds.resources.RETIRE_COMPILES``)."""
    states = [line.strip() for line in stats.splitlines()
              if line.startswith("control_plane.connected_state:")]
    connected = bool(states) and all(st.endswith(": 1") for st in states)
    dyn, sta = _configs(dynamic), _configs(static)
    configs = dyn + sta
    deployments = {c["name"][len(DEPLOYMENT_PREFIX):] for c in configs
                   if c.get("name", "").startswith(DEPLOYMENT_PREFIX)}
    named = {n for n in routed_clusters(routes) if n.startswith(MODEL_PREFIX)}
    ordered: set[str] = set()
    for c in configs:
        if c.get("name", "").startswith(MODEL_PREFIX) and (not named or c["name"] in named):
            children = (c.get("cluster_type", {}).get("typed_config", {}).get("clusters", []))
            ordered.update(n[len(DEPLOYMENT_PREFIX):] for n in children
                           if n.startswith(DEPLOYMENT_PREFIX))
    blocked: set[str] = set()
    for line in clusters.splitlines():
        name, _, rest = line.partition("::")
        if not name.startswith(DEPLOYMENT_PREFIX) or "::health_flags::" not in rest:
            continue
        flags = rest.rsplit("::health_flags::", 1)[1].strip()
        if flags != "healthy":
            blocked.add(name[len(DEPLOYMENT_PREFIX):])
    return EdgeView(
        placement_connected=connected,
        # Clusters from ADS are dynamic; an Envoy started from its saved snapshot has them
        # all static (the bootstrap's only static cluster otherwise is the ADS one).
        routes_source="placement" if any(c.get("name", "").startswith(MODEL_PREFIX)
                                          for c in dyn) else "disk",
        has_routes=bool(ordered),
        blocked=tuple(sorted(blocked)),
        known=frozenset(d.split("/", 1)[0] for d in deployments),
        routable=frozenset(d.split("/", 1)[0] for d in ordered))
