"""Envoy as the edge: real Triton backends, placement serving delta ADS, a real Envoy process
configured only by placement, and an unmodified tritonclient calling a logical model name."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from services.agent.agent import NodeAgent
from services.api.switchyard.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc
from services.backends.triton import TritonProcess
from services.config import MeshConfig
from services.demo import infer_with_trailers
from services.edge.envoy.launcher import EnvoyEdge, prepare
from services.placement.main import RunningPlacement, start_placement
from services.ports import free_port
from tests.mesh_harness import eventually, mesh_config, summarize_input

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    return mesh_config(tmp_path_factory.mktemp("envoy-mesh"))


@dataclass
class EnvoyMesh:
    placement: RunningPlacement
    envoy: EnvoyEdge

    def call(self, model: str = "summarize") -> tuple[tc.InferResult, dict[str, str]]:
        client = tc.InferenceServerClient(self.envoy.address)
        try:
            return infer_with_trailers(client, model, [summarize_input()], (), 5.0)
        finally:
            client.close()

    def order(self) -> list[str]:
        assert self.placement.ads is not None
        return self.placement.ads.region_config(self.envoy.node.region).orders["summarize"]


@pytest.fixture
async def mesh(cfg: MeshConfig, tritons: dict[str, TritonProcess],
               tmp_path: pathlib.Path) -> AsyncIterator[EnvoyMesh]:
    placement = await start_placement(cfg, port=0, metrics_port=0)
    address = f"127.0.0.1:{placement.port}"
    agent = NodeAgent(cfg, [b.id for b in cfg.backends], placement=[address], interval_s=0.3)
    await agent.start()
    node, bootstrap = prepare(cfg, cfg.edges[0], placement=[address], port=free_port(),
                              run_dir=tmp_path)
    envoy = EnvoyEdge(node, bootstrap, concurrency=1)
    envoy.start()
    try:
        await eventually(envoy.ready, 20, "Envoy listens with the config placement pushed")
        yield EnvoyMesh(placement, envoy)
    finally:
        envoy.stop()
        await agent.stop()
        await placement.stop(0.5)


async def test_a_logical_name_is_served_by_the_variant_of_the_deployment_envoy_chose(
        mesh: EnvoyMesh) -> None:
    result, trailers = await asyncio.to_thread(mesh.call)
    served = trailers["x-served-by"]
    backend, variant = served.split("/", 1)
    # The upstream Lua rewrote the name to the variant in the chosen endpoint's metadata:
    # Triton answered as that variant, on the backend the trailer names.
    assert result.get_response().model_name == variant
    assert served in mesh.order()
    assert trailers["x-served-region"] == (
        mesh.placement.service.fleet.backends[backend].backend.region)
    assert result.as_numpy("OUTPUT0") is not None


async def test_a_drained_backend_stops_serving_and_calls_move_to_another_deployment(
        mesh: EnvoyMesh) -> None:
    _, trailers = await asyncio.to_thread(mesh.call)
    drained = trailers["x-served-by"].split("/", 1)[0]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.placement.port}") as ch:
        await placement_pb2_grpc.PlacementStub(ch).SetAvailability(
            placement_pb2.SetAvailabilityRequest(
                scope=placement_pb2.AVAILABILITY_SCOPE_BACKEND, target=drained,
                availability=fleet_pb2.AVAILABILITY_DRAINED))
    seen: list[str] = []

    def moved() -> bool:
        _, tr = mesh.call()
        seen.append(tr["x-served-by"])
        return not tr["x-served-by"].startswith(drained + "/")

    async def poll() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while not await asyncio.to_thread(moved):
            assert loop.time() - t0 < 10, f"calls still served by drained {drained}: {seen}"
        return loop.time() - t0

    await poll()
    after = [(await asyncio.to_thread(mesh.call))[1]["x-served-by"] for _ in range(5)]
    assert not any(s.startswith(drained + "/") for s in after), after
    assert all(s.split("/", 1)[0] != drained for s in mesh.order())


async def test_an_unknown_model_is_refused_not_hung(mesh: EnvoyMesh) -> None:
    with pytest.raises(InferenceServerException) as err:
        await asyncio.to_thread(mesh.call, "no-such-model")
    assert err.value.status() == "StatusCode.UNIMPLEMENTED"
