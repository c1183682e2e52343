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
from tests.mesh_harness import eventually, mesh_config

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


async def test_an_agent_started_while_consul_answers_errors_runs_and_registers_once_it_is_back(
        fake: FakeConsul, tmp_path: pathlib.Path) -> None:
    """Before, ``start`` raised DiscoveryUnavailable and the agent exited 2 (reported as a
    configuration error): a crash loop for as long as Consul was away."""
    cfg = consul_cfg(fake, tmp_path, **CHECKS)
    static = MeshConfig.model_validate({**cfg.model_dump(), "discovery": "static"})
    running = await start_placement(static, port=0, metrics_port=0)  # Consul not needed
    fake.set_unavailable(True)  # 500 "No cluster leader" (servers lost quorum, or restarting)
    agent = NodeAgent(cfg, ["west-cheap"], placement=[f"127.0.0.1:{running.port}"],
                      interval_s=0.1, discovery=ConsulDiscovery(cfg.consul))
    try:
        await agent.start()
        assert "west-cheap" not in fake.services
        # meanwhile it registers with placement and streams telemetry, and keeps retrying
        await eventually(lambda: agent.reports_sent > 0, 15, "telemetry reaching placement")
        await eventually(lambda: agent.catalog is not None and agent.catalog.attempts >= 2, 15,
                         "the catalog registration retried")
        assert "west-cheap" not in fake.services
        fake.set_unavailable(False)
        await eventually(lambda: "west-cheap" in fake.services, 15,
                         "west-cheap registered once Consul answered again")
        assert registered_check(fake, "west-cheap") == WANT
        assert agent.catalog is not None and not agent.catalog.pending
    finally:
        await agent.stop()
        await running.stop(0.2)
