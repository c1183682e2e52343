"""Envoy edges over sharded placement (issue 15, scale-out): a real Envoy takes its one ADS
stream from the replica of the shard owning its region, which federates the other shard's
rows (``services/xds/federation.py``); real Triton backends in both shards, an unmodified
tritonclient, the access log forwarded to the shard owning each deployment, and the other
shard's placement stopped and restarted under Envoy."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import tritonclient.grpc as tc

from services.agent.agent import NodeAgent
from services.api.switchyard.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc
from services.backends.triton import TritonProcess
from services.config import MeshConfig
from services.demo import infer_with_trailers
from services.edge.envoy.launcher import EnvoyEdge, placement_addresses, prepare
from services.placement.main import RunningPlacement, start_placement
from services.ports import free_port
from tests.mesh_harness import eventually, mesh_config, summarize_input

pytestmark = pytest.mark.integration

EAST = {"east-fast"}  # shards[0]: r-east, where the edge is
REST = {"central-cheap", "west-cheap"}  # shards[1]: r-central, r-west


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    tmp = tmp_path_factory.mktemp("envoy-shards")
    raw = mesh_config(tmp).model_dump()
    raw["placement"]["shards"] = [
        {"replicas": [f"127.0.0.1:{free_port()}"], "regions": ["r-east"]},
        {"replicas": [f"127.0.0.1:{free_port()}"], "regions": ["r-central", "r-west"]}]
    return MeshConfig.model_validate(raw)


def _port(cfg: MeshConfig, shard: int) -> int:
    return int(cfg.placement.shards[shard].replicas[0].rpartition(":")[2])


@dataclass
class ShardedEnvoy:
    cfg: MeshConfig
    east: RunningPlacement  # the replica Envoy watches
    rest: RunningPlacement | None
    envoy: EnvoyEdge

    def served_by(self) -> str:
        """One unmodified tritonclient call through Envoy: the backend that answered."""
        client = tc.InferenceServerClient(self.envoy.address)
        try:
            _, trailers = infer_with_trailers(client, "summarize", [summarize_input()], (), 5.0)
        finally:
            client.close()
        return trailers["x-served-by"].split("/", 1)[0]

    def order(self) -> set[str]:
        """The backends of the summarize route Envoy was last compiled."""
        assert self.east.ads is not None
        return {d.split("/", 1)[0]
                for d in self.east.ads.region_config("r-east").orders["summarize"]}


@pytest.fixture
async def mesh(cfg: MeshConfig, tritons: dict[str, TritonProcess],
               tmp_path: pathlib.Path) -> AsyncIterator[ShardedEnvoy]:
    east = await start_placement(cfg, port=_port(cfg, 0), metrics_port=0)
    rest = await start_placement(cfg, port=_port(cfg, 1), metrics_port=0)
    agent = NodeAgent(cfg, [b.id for b in cfg.backends], interval_s=0.3)  # to each shard
    await agent.start()
    # Where `python -m services.edge.envoy` points an r-east edge: shards[0]'s replicas.
    assert placement_addresses(cfg, "r-east") == list(cfg.placement.shards[0].replicas)
    node, bootstrap = prepare(cfg, cfg.edges[0], port=free_port(), run_dir=tmp_path)
    envoy = EnvoyEdge(node, bootstrap, concurrency=1)
    envoy.start()
    m = ShardedEnvoy(cfg, east, rest, envoy)
    try:
        await eventually(envoy.ready, 20, "Envoy listens with the config placement pushed")
        yield m
    finally:
        envoy.stop()
        await agent.stop()
        for p in (m.rest, east):
            if p is not None:
                await p.stop(0.5)


async def _drain(port: int, backend: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        await placement_pb2_grpc.PlacementStub(ch).SetAvailability(
            placement_pb2.SetAvailabilityRequest(
                scope=placement_pb2.AVAILABILITY_SCOPE_BACKEND, target=backend,
                availability=fleet_pb2.AVAILABILITY_DRAINED), timeout=5)


async def test_envoy_serves_every_shard_and_keeps_a_lost_shards_rows(
        mesh: ShardedEnvoy) -> None:
    east, federation = mesh.east, mesh.east.ads.federation if mesh.east.ads else None
    assert federation is not None
    # The replica Envoy watches owns only r-east's backend; the other shard's rows reach
    # Envoy through its federation, and the cheapest of them serves the calls.
    assert set(east.service.fleet.backends) == EAST
    await eventually(lambda: mesh.order() == EAST | REST, 20,
                     "placement's compile for Envoy holds both shards' deployments")
    # Compiled is not yet applied: the other shard's deployment clusters are new to Envoy,
    # so placement sends them alone and the route naming them only after Envoy's ACK, which
    # Envoy holds until each new cluster's first health check ends (services/xds/pushes.py);
    # until then Envoy's route still has only east-fast.
    seen: list[str] = []

    async def served_by_the_other_shard() -> bool:
        seen.append(await asyncio.to_thread(mesh.served_by))
        return seen[-1] in REST

    await eventually(served_by_the_other_shard, 20,
                     "Envoy applies the route and the cheapest other-shard backend serves")
    served = seen[-1]
    for _ in range(3):
        assert await asyncio.to_thread(mesh.served_by) in REST

    # Envoy's access log reached the shard owning the deployment (forwarded), not this one.
    assert mesh.rest is not None
    rest_fleet = mesh.rest.service.fleet

    def forwarded() -> bool:
        return any(("r-east", "edge-east") in rest_fleet.use.get(d, {})
                   for d in rest_fleet.use if d.startswith(served + "/"))

    await eventually(forwarded, 20, f"shards[1] hears Envoy's calls to {served}")
    assert not any(d.startswith(served + "/") for d in east.service.fleet.use)

    # The other shard's placement goes away: Envoy keeps being served from its last config.
    await mesh.rest.stop(0)
    mesh.rest = None
    await eventually(lambda: not federation.connected("r-east"), 10,
                     "the federation lost shards[1]")
    for _ in range(5):
        assert await asyncio.to_thread(mesh.served_by) in REST
    assert mesh.order() == EAST | REST  # a recompile keeps the lost shard's last rows
    east.service.hub.publish()
    assert mesh.order() == EAST | REST

    # It comes back on its port: its changes (draining both its backends) reach Envoy, and
    # the calls move to the other shard's backend.
    mesh.rest = await start_placement(mesh.cfg, port=_port(mesh.cfg, 1), metrics_port=0)
    await eventually(lambda: federation.connected("r-east"), 20,
                     "the federation watches shards[1] again")
    for backend in sorted(REST):
        await _drain(_port(mesh.cfg, 1), backend)
    await eventually(lambda: mesh.order() == EAST, 20, "the drains reached Envoy's route")

    def moved() -> bool:
        return mesh.served_by() in EAST

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while not await asyncio.to_thread(moved):  # Envoy applies the push it was sent
        assert loop.time() - t0 < 10, "calls still served by a drained backend"
    assert all([await asyncio.to_thread(mesh.served_by) in EAST for _ in range(3)])
