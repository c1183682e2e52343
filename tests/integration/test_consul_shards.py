"""Consul discovery with ``[[placement.shards]]`` (issue 15, scale-out), against the
documented-API fake (tests/consul_fake.py): each placement replica registers with its shard,
follows only its own regions' backends from the catalog, and an edge finds every shard's
replicas in the catalog, even where the configured addresses are wrong (a Kubernetes Service
name this host cannot resolve, as the Helm chart writes them)."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from services.config import MeshConfig
from services.convert import backends_from_config
from services.discovery import ConsulSettings, HealthCheck
from services.discovery.consul import ConsulDiscovery
from services.discovery.static import StaticDiscovery
from services.edge.main import start_edge
from services.edge.shards import ShardedLink
from services.placement.main import start_placement
from tests.consul_fake import FakeConsul, client_settings, running_fake
from tests.mesh_harness import eventually, mesh_config

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

SERVICES = ["placement-east.invalid:50050", "placement-rest.invalid:50050"]


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeConsul]:
    async with running_fake() as server:
        yield server


def _cfg(tmp: pathlib.Path, fake: FakeConsul) -> MeshConfig:
    raw = mesh_config(tmp).model_dump()
    raw["placement"]["shards"] = [{"replicas": [SERVICES[0]], "regions": ["r-east"]},
                                  {"replicas": [SERVICES[1]],
                                   "regions": ["r-central", "r-west"]}]
    return MeshConfig.model_validate({**raw, "discovery": "consul",
                                      "consul": client_settings(fake)})


async def test_replicas_register_with_their_shard_and_are_listed_by_it(
        fake: FakeConsul) -> None:
    disco = ConsulDiscovery(ConsulSettings.model_validate(client_settings(fake)))
    try:
        for rid, address, shard in (("p-a", "10.0.0.1:50050", "shards[0]"),
                                    ("p-b", "10.0.0.2:50050", "shards[0]"),
                                    ("p-c", "10.0.0.3:50050", "shards[1]"),
                                    ("p-old", "10.0.0.9:50050", "")):
            await disco.register_placement(rid, address, HealthCheck("grpc", address),
                                           shard=shard)
        assert "shard=shards[1]" in fake.services["p-c"].tags
        assert await disco.placement_shards() == {
            "shards[0]": ["10.0.0.1:50050", "10.0.0.2:50050"],
            "shards[1]": ["10.0.0.3:50050"], "": ["10.0.0.9:50050"]}
        assert sorted(await disco.placement_endpoints()) == [
            "10.0.0.1:50050", "10.0.0.2:50050", "10.0.0.3:50050", "10.0.0.9:50050"]
        fake.set_unavailable(True)  # Consul away: the last answer, by shard
        assert (await disco.placement_shards())["shards[1]"] == ["10.0.0.3:50050"]
    finally:
        fake.set_unavailable(False)
        await disco.close()


async def test_static_discovery_lists_the_configured_shards(tmp_path: pathlib.Path,
                                                            fake: FakeConsul) -> None:
    cfg = _cfg(tmp_path, fake)
    assert await StaticDiscovery.from_config(cfg).placement_shards() == {
        "shards[0]": [SERVICES[0]], "shards[1]": [SERVICES[1]]}
    assert await StaticDiscovery.from_config(mesh_config(tmp_path)).placement_shards() == {
        "": [f"127.0.0.1:{mesh_config(tmp_path).placement.port}"]}


async def test_each_shard_follows_its_regions_and_an_edge_finds_every_shard_in_consul(
        tmp_path: pathlib.Path, fake: FakeConsul) -> None:
    cfg = _cfg(tmp_path, fake)
    # Each replica listens on a free port but is listed as its shard's Service name.
    east = await start_placement(cfg, port=0, metrics_port=0, shard_address=SERVICES[0])
    rest = await start_placement(cfg, port=0, metrics_port=0, shard_address=SERVICES[1])
    agent_side = ConsulDiscovery(ConsulSettings.model_validate(client_settings(fake)))
    edge = None
    try:
        metas = {s.id: s.meta for s in fake.services.values()}
        assert metas[east.service.placement_id] == {"shard": "shards[0]"}
        assert metas[rest.service.placement_id] == {"shard": "shards[1]"}
        for b in backends_from_config(cfg):
            if b.id in ("east-fast", "central-cheap"):
                await agent_side.register(b, HealthCheck("tcp", b.endpoint))
                fake.set_check_status(b.id, "passing")
        await eventually(lambda: "central-cheap" in rest.service.fleet.backends
                         and "east-fast" in east.service.fleet.backends, 5,
                         "each shard follows the catalog")
        assert set(east.service.fleet.backends) == {"east-fast"}  # not another shard's
        assert set(rest.service.fleet.backends) == {"central-cheap"}

        edge = await start_edge(cfg, cfg.edges[0], port=0, metrics_port=0)
        link = edge.link
        assert isinstance(link, ShardedLink)
        assert link.links["shards[1]"].replicas == [f"127.0.0.1:{rest.port}", SERVICES[1]]
        await eventually(lambda: {c.backend_id for c in
                                  edge.router.store.candidates.get("summarize", ())}
                         == {"east-fast", "central-cheap"}, 10,
                         "the edge watches both shards it found in the catalog")
        assert link.links["shards[0]"].connected_to == f"127.0.0.1:{east.port}"
    finally:
        if edge is not None:
            await edge.stop(0)
        await agent_side.close()
        await east.stop(0.2)
        await rest.stop(0.2)
