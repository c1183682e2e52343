"""What every piece of the compiled Envoy config shares: the settings it is compiled with,
resource names, the versioned ``Resource`` and small builders.

``clusters.py``, ``routes.py``, ``listener.py`` and ``tls.py`` build the resources;
``resources.py`` compiles a region's route tables with them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from placement.attempts import AttemptSettings

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
LISTENER_NAME = "ingress"
PLACEMENT_CLUSTER = "placement"  # the one static cluster of an Envoy edge's bootstrap
SLOW_PATH_CLUSTER = "slow-path"  # the node's co-located Python edge
SLOW_PATH_MAX_REQUESTS = 1 << 20

T = "type.googleapis.com/"
_HEADROOM = 64 * 1024  # gRPC framing, headers, the appended model name
_ATTEMPTS = AttemptSettings()  # the attempt policy's defaults (placement.attempts)


@dataclass(frozen=True, slots=True)
class EnvoySettings:
    """The knobs of the compiled config, from the mesh config (``[edge]``, ``[routing]``,
    ``[security]``)."""

    max_message_bytes: int = 16 * 1024 * 1024
    max_attempts: int = 3
    eject_consecutive_failures: int = 3
    eject_base_s: float = 5.0
    slo_margin_ms: float = 2.0
    deadline_margin_ms: float = 5.0  # no x-slo-ms: SLO = the call's deadline minus this
    connect_timeout_s: float = 1.0
    min_attempt_timeout_s: float = _ATTEMPTS.min_attempt_timeout_s  # an attempt's floor
    retry_budget_percent: float = 20.0   # [edge] retry_budget_ratio's default, as a percent
    retry_min_concurrency: int = 10      # retries always allowed in flight per model route
    # [security] (tls.py): TLS on the listener and to the slow path, from the node's own
    # files (the bootstrap's static secrets); client certificates required on the listener.
    tls: bool = False
    client_certs: bool = True
    # [security.tenants]: a ModelInfer carrying a tenant credential (authorization,
    # x-tenant) goes to the slow path, which admits tenants; with require_tenant every
    # ModelInfer does (one without a credential is refused there, as on a Python edge).
    tenants: bool = False
    require_tenant: bool = False
    # the client_san of tenants identified by a client certificate (with client certificates
    # on): Envoy forwards the caller's certificate to the slow path (x-forwarded-client-cert)
    # and a ModelInfer whose certificate may name one goes there (services/security/xfcc.py)
    tenant_sans: tuple[str, ...] = ()
    # [security.limits] on the listener's connections, as the Python edge's gRPC server
    # applies them (None / 0: Envoy's own defaults).
    max_concurrent_streams: int | None = None  # per HTTP/2 connection
    idle_connection_timeout_s: float | None = None
    max_connection_age_s: float = 0.0
    # [security.limits] on a call's metadata, as the Python edge applies them (the listener's
    # Lua, lua.py: the header list's bytes, RESOURCE_EXHAUSTED; custom entries on a call or
    # stream, INVALID_ARGUMENT). None: not checked.
    max_metadata_bytes: int | None = None
    max_metadata_count: int | None = None
    # Deployments per compiled order (aggregate children, a rotation's, a route's prices):
    # a call tries at most ``max_attempts`` of them (the route's num_retries + 1), so the
    # rest of a 10,000-deployment order was bytes no call reached (issues 12 + 15). None:
    # ``order_cap_default``.
    order_cap: int | None = None
    # Active gRPC health checks of each deployment cluster (``grpc.health.v1``, which
    # Triton serves): ``None`` interval turns them off. Every ``health_interval_s`` once the
    # cluster has carried calls (outlier detection sees a hung backend there from the calls'
    # own timeouts too), every ``health_idle_s`` before (a standby in an order, a drained
    # deployment: the checks are the only eyes there, and most clusters are standbys). A
    # check cost 340-380 us of Envoy CPU and 450-490 us of Triton's on this 2-core host at
    # load ~7 (``python -m benchmarks.envoy_health_cpu``, two runs): 200 standby clusters,
    # 40 checks/s, are ~1.5 % of a core per Envoy; a backend with 3 variants held by 100
    # Envoys, 60 checks/s, ~3 % of one.
    health_interval_s: float | None = 2.0
    health_timeout_s: float = 1.0
    health_idle_s: float = 5.0
    health_unhealthy: int = 2  # failed checks in a row before a host is unhealthy
    health_healthy: int = 2  # passed checks in a row before it is healthy again
    # Slow start ([edge] slow_start_s, the Python edge's ramp): a deployment placement sees
    # come back takes a share of its compiled split rising from 10 % to 100 % over this many
    # seconds, recompiled in steps (``returns.py``); 0: off, full share at once.
    slow_start_s: float = 0.0

    @property
    def buffer_bytes(self) -> int:
        return self.max_message_bytes + _HEADROOM

    @property
    def cap(self) -> int:
        """The deployments an order keeps: ``order_cap``, else ``order_cap_default``."""
        return self.order_cap if self.order_cap is not None else order_cap_default(
            self.max_attempts)


def order_cap_default(max_attempts: int) -> int:
    """Twice the attempts a call makes, at least 8: the margin is for children ejected by
    outlier detection, which the aggregate skips (every child ejected: panic, its first)."""
    return max(8, 2 * max_attempts)


@dataclass(frozen=True, slots=True)
class Resource:
    name: str
    version: str  # content hash: equal content, equal version, nothing to push
    message: Message


DEPLOYMENT_PREFIX = "dep:"


def cluster_name(deployment_id: str) -> str:
    return f"{DEPLOYMENT_PREFIX}{deployment_id}"


def is_deployment_cluster(name: str) -> bool:
    return name.startswith(DEPLOYMENT_PREFIX)


MODEL_PREFIX = "model:"


def model_cluster_name(model: str, slo_class: int | None = None) -> str:
    """The aggregate of the model's default order, or of its ``slo_class``-th SLO class."""
    name = f"{MODEL_PREFIX}{model}"
    return name if slo_class is None else f"{name}:slo{slo_class}"


def route_config_name(region: str) -> str:
    return f"routes:{region}"


def resource(name: str, message: Message) -> Resource:
    digest = hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()[:16]
    return Resource(name, digest, message)


def http2(s: EnvoySettings) -> dict[str, Any]:
    return {"initial_stream_window_size": s.buffer_bytes,
            "initial_connection_window_size": 2 * s.buffer_bytes}


def address(endpoint: str) -> dict[str, Any]:
    host, _, port = endpoint.rpartition(":")
    return {"socket_address": {"address": host, "port_value": int(port)}}
