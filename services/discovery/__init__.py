"""Discovery: where backends, prices, tenant policies and placement replicas are.

One interface (:class:`~services.discovery.base.Discovery`), two implementations chosen by
``MeshConfig.discovery``: ``static`` (the mesh file) and ``consul``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from placement.errors import SwitchyardError
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
    "ask_catalog",
    "open_discovery",
]

T = TypeVar("T")
log = structlog.get_logger("switchyard.discovery")


def open_discovery(config: MeshConfig, consul: ConsulSettings | None = None) -> Discovery:
    """The implementation ``config.discovery`` names (Consul settings default when absent)."""
    if config.discovery == "consul":
        from services.discovery.consul import ConsulDiscovery  # keeps aiohttp off static runs

        return ConsulDiscovery.from_config(config, consul or ConsulSettings())
    from services.discovery.static import StaticDiscovery

    return StaticDiscovery.from_config(config)


async def ask_catalog(config: MeshConfig, ask: Callable[[Discovery], Awaitable[T]],
                      unknown: T, fallback: str) -> T:
    """``ask`` the discovery ``config`` names once (then close it); ``unknown`` when it cannot
    say, logged with what the caller does instead (``fallback``)."""
    discovery = open_discovery(config, config.consul)
    try:
        return await ask(discovery)
    except SwitchyardError as exc:
        log.warning("placement_catalog_unreachable", error=exc.message, action=fallback)
        return unknown
    finally:
        await discovery.close()


def __getattr__(name: str) -> Any:
    if name == "StaticDiscovery":
        from services.discovery.static import StaticDiscovery

        return StaticDiscovery
    raise AttributeError(name)
