"""Placement fed by Consul (the documented-API fake in tests/consul_fake.py), end to end to
the route tables an edge watches: registration, failing checks, KV prices, Consul away."""

from __future__ import annotations

import json
import pathlib
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
import pytest_asyncio

from services.agent.agent import NodeAgent
from services.api.switchyard.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc
from services.config import MeshConfig
from services.discovery import ConsulSettings, HealthCheck
from services.discovery.consul import ConsulDiscovery
from services.edge.main import start_edge
from services.placement.main import RunningPlacement, start_placement
from tests.consul_fake import FakeConsul, client_settings, running_fake
from tests.mesh_harness import eventually, mesh_config

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeConsul]:
    async with running_fake() as server:
        yield server


@pytest_asyncio.fixture
async def placement(fake: FakeConsul, tmp_path: pathlib.Path
                    ) -> AsyncIterator[tuple[MeshConfig, RunningPlacement]]:
    base = mesh_config(tmp_path)
    cfg = MeshConfig.model_validate({**base.model_dump(), "discovery": "consul",
                                     "consul": client_settings(fake)})
    running = await start_placement(cfg, port=0, metrics_port=0)
    yield cfg, running
    await running.stop(0.2)


async def table(running: RunningPlacement) -> placement_pb2.RouteTable:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        resp = await placement_pb2_grpc.PlacementStub(ch).GetRouteTables(
            placement_pb2.GetRouteTablesRequest(edge_region="r-east"))
    return next(t for t in resp.tables if t.model == "summarize")


async def until(running: RunningPlacement, pred: Callable[[placement_pb2.RouteTable], bool],
                within_s: float = 5.0) -> placement_pb2.RouteTable:
    """The route table once ``pred`` holds for it (placement acts on Consul's changes)."""
    seen: list[placement_pb2.RouteTable] = []

    async def matches() -> bool:
        seen[:] = [await table(running)]
        return pred(seen[-1])

    try:
        await eventually(matches, within_s, "route table matched")
    except AssertionError as err:
        raise AssertionError(f"{err}; last seen: {seen[-1]}") from None
    return seen[-1]


def cheap_backend() -> fleet_pb2.Backend:
    return fleet_pb2.Backend(
        id="consul-l4", endpoint="127.0.0.1:39999", cloud="gcp", region="r-central",
        accelerator="gpu-cheap", accelerator_count=1, price_class="spot", max_concurrency=4,
        variants=[fleet_pb2.VariantRef(logical_model="summarize", variant="summarize-small",
                                       quality=0.7)])


async def test_catalog_drives_route_tables(fake: FakeConsul,
                                           placement: tuple[MeshConfig, RunningPlacement]
                                           ) -> None:
    _cfg, running = placement
    assert not (await table(running)).candidates  # nothing preregistered in Consul mode
    agent_side = ConsulDiscovery(ConsulSettings.model_validate(client_settings(fake)))
    try:
        await agent_side.register(cheap_backend(), HealthCheck("tcp", "127.0.0.1:39999"))
        fake.set_check_status("consul-l4", "passing")
        t = await until(running, lambda t: any(c.backend_id == "consul-l4"
                                               for c in t.candidates))
        before = next(c for c in t.candidates if c.backend_id == "consul-l4").cost_usd

        fake.put_kv("switchyard/prices/gcp-spot", json.dumps({"prices": [{
            "accelerator": "gpu-cheap", "cloud": "gcp", "region": "*",
            "price_class": "spot", "usd_per_gpu_hour": 3.0, "source": "kv", "as_of":
            "2026-11-22"}]}))
        await until(running, lambda t: any(c.cost_usd > before * 5 for c in t.candidates))

        fake.set_unavailable(True)  # Consul away: nothing is dropped from routing
        n = len(fake.requests)
        await eventually(lambda: sum("/v1/health/service/" in path
                                     for _, path, _ in fake.requests[n:]) >= 3,
                         5, "placement reads the catalog while Consul is away (and retries)")
        assert any(c.backend_id == "consul-l4" for c in (await table(running)).candidates)
        fake.set_unavailable(False)

        fake.set_check_status("consul-l4", "critical")
        await until(running, lambda t: not any(c.backend_id == "consul-l4"
                                               for c in t.candidates))
    finally:
        await agent_side.close()


async def test_agent_registers_in_the_catalog_and_edges_find_placement_there(
        fake: FakeConsul, placement: tuple[MeshConfig, RunningPlacement]) -> None:
    cfg, running = placement
    agent = NodeAgent(cfg, ["west-cheap"], placement=[f"127.0.0.1:{running.port}"],
                      interval_s=0.2,
                      discovery=ConsulDiscovery(ConsulSettings.model_validate(
                          client_settings(fake))))
    await agent.start()
    edge = None
    try:
        assert "west-cheap" in fake.services  # registered with its gRPC check
        fake.set_check_status("west-cheap", "passing")
        await until(running, lambda t: any(c.backend_id == "west-cheap"
                                           for c in t.candidates))
        # The edge is given no placement address: it finds the replica in the catalog.
        edge_cfg = cfg.model_copy(update={"placement": cfg.placement.model_copy(
            update={"port": 1})})  # the configured address is wrong on purpose
        edge = await start_edge(edge_cfg, cfg.edges[0], port=0, metrics_port=0)
        await eventually(lambda: edge.router.store.candidates.get("summarize"), 5,
                         "edge got its table from the replica it found in the catalog")
        assert any(c.backend_id == "west-cheap"
                   for c in edge.router.store.candidates["summarize"])
        assert edge.link.connected_to == f"127.0.0.1:{running.port}"
    finally:
        if edge is not None:
            await edge.stop(0.2)
        await agent.stop()
    assert "west-cheap" not in fake.services  # deregistered at shutdown
