"""Discovery: where backends, prices, tenant policies and placement replicas are.

One interface (:class:`~services.discovery.base.Discovery`), two implementations chosen by
``MeshConfig.discovery``: ``static`` (the mesh file) and ``consul``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.discovery.base import (
    BackendEntry,
    Discovery,
    DiscoveryState,
    DiscoveryUnavailable,
    HealthCheck,
)
from services.discovery.settings import ConsulSettings, ConsulTlsSettings

if TYPE_CHECKING:  # services.config may import .settings: keep this package free of cycles
    from services.config import MeshConfig
    from services.discovery.static import StaticDiscovery

__all__ = [
    "BackendEntry",
    "ConsulSettings",
    "ConsulTlsSettings",
    "Discovery",
    "DiscoveryState",
    "DiscoveryUnavailable",
    "HealthCheck",
    "StaticDiscovery",
    "open_discovery",
]


def open_discovery(config: MeshConfig, consul: ConsulSettings | None = None) -> Discovery:
    """The implementation ``config.discovery`` names (Consul settings default when absent)."""
    if config.discovery == "consul":
        from services.discovery.consul import ConsulDiscovery  # keeps aiohttp off static runs

        return ConsulDiscovery.from_config(config, consul or ConsulSettings())
    from services.discovery.static import StaticDiscovery

    return StaticDiscovery.from_config(config)


def __getattr__(name: str) -> Any:
    if name == "StaticDiscovery":
        from services.discovery.static import StaticDiscovery

        return StaticDiscovery
    raise AttributeError(name)
