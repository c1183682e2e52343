"""The one ``Discovery`` interface: where backends, prices, tenant policies and placement are.

Two implementations sit beside it and are chosen by ``MeshConfig.discovery``:
``StaticDiscovery`` (the mesh TOML file, the embedded default, also the in-memory fake) and
``ConsulDiscovery`` (Consul catalog, health and KV). Placement consumes :meth:`watch`, agents
call :meth:`register` / :meth:`deregister`, edges call :meth:`placement_endpoints`.

Everything on the wire is ``switchyard.v1`` protobuf (``fleet_pb2.Backend``,
``fleet_pb2.Price``); nothing is copied into look-alike dataclasses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from placement.errors import SwitchyardError
from services.api.switchyard.v1 import fleet_pb2


class DiscoveryUnavailable(SwitchyardError):
    """The catalog could not be reached and no last-known answer exists.

    Foreign errors (aiohttp, py-consul) are wrapped in this at the boundary.
    """

    grpc_code = "UNAVAILABLE"


@dataclass(frozen=True)
class HealthCheck:
    """How the catalog checks a backend: Triton's gRPC health service, an HTTP URL or TCP.

    ``target`` is ``host:port`` for ``grpc``/``tcp`` and a full URL for ``http``.
    """

    kind: Literal["grpc", "http", "tcp"]
    target: str
    interval_s: float = 2.0
    timeout_s: float = 1.0
    deregister_critical_after_s: float | None = None


@dataclass(frozen=True)
class BackendEntry:
    """A backend as discovery sees it; ``healthy`` is the catalog's own verdict."""

    backend: fleet_pb2.Backend
    healthy: bool = True


@dataclass(frozen=True)
class DiscoveryState:
    """One consistent view of the fleet, emitted whole on every change.

    ``stale`` is true while the source cannot be reached: the view is the last one known,
    kept on purpose so that routing never loses backends because the catalog is away.
    ``policies`` maps tenant name to its policy document as written by the operator.
    """

    backends: tuple[BackendEntry, ...] = ()
    prices: tuple[fleet_pb2.Price, ...] = ()
    policies: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    version: int = 0
    stale: bool = False
    source: str = "static"

    def healthy_backends(self) -> list[fleet_pb2.Backend]:
        return [e.backend for e in self.backends if e.healthy]

    def backend_ids(self) -> set[str]:
        return {e.backend.id for e in self.backends}

    def same_content(self, other: DiscoveryState) -> bool:
        """True when backends, prices and policies are equal (version and stale ignored)."""
        return (self.backends == other.backends and self.prices == other.prices
                and dict(self.policies) == dict(other.policies))


@runtime_checkable
class Discovery(Protocol):
    """Where the mesh's parts are. Implementations are async and safe to share in one loop."""

    async def snapshot(self) -> DiscoveryState:
        """The current view (the last known one, marked stale, when the source is away)."""
        ...

    def watch(self) -> AsyncIterator[DiscoveryState]:
        """Yield the current view at once, then again each time its content or staleness changes."""
        ...

    async def register(self, backend: fleet_pb2.Backend, check: HealthCheck) -> None:
        """Announce a backend (agents call this once their Triton server is ready)."""
        ...

    async def deregister(self, backend_id: str) -> None:
        """Withdraw a backend (agents call this on shutdown)."""
        ...

    async def placement_endpoints(self) -> list[str]:
        """``host:port`` of every placement replica an edge may connect to."""
        ...

    async def placement_shards(self) -> dict[str, list[str]]:
        """Placement replicas by shard key (``shards[i]``, ``services/edge/shards.py``;
        ``""`` for replicas of an unsharded placement): what an edge of a sharded mesh
        watches, one shard each."""
        ...

    async def close(self) -> None:
        """Stop background watches and release connections."""
        ...
