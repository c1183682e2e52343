"""A real Envoy on delta ADS holds only the deployment clusters its routes can reach (issues
12 + 15), and a deployment entering an order mid-traffic loses no call.

Placement's real ADS server (``services.xds.server.AdsServer`` on grpc.aio, 127.0.0.1 port 0)
serves a real Envoy (the pinned binary, bootstrapped as an edge: ``write_bootstrap``). The
route tables it compiles are EMULATED (a fake hub holding hand-written rows, orders cut at one
deployment so most rows are past every cut), and so are the backends (small gRPC servers that
answer with their name, ``test_envoy_panic.FakeBackend``): what is checked is what Envoy does
with the pushes, on the real binary.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio

from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.edge.envoy.bootstrap import EnvoyNode, write_bootstrap
from services.edge.envoy.launcher import EnvoyEdge
from services.ports import free_port
from services.xds import lua
from services.xds.resources import EnvoySettings
from services.xds.server import AdsServer, add_ads
from tests.integration.test_envoy_health_checks import FakePausableBackend
from tests.integration.test_envoy_panic import FakeBackend
from tests.mesh_harness import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

REGION = "r-east"
MODEL = "m"


def _row(backend: FakeBackend, cost: float, dropped: str = "") -> placement_pb2.Candidate:
    return placement_pb2.Candidate(
        deployment_id=f"{backend.name}/{MODEL}-v1", backend_id=backend.name,
        endpoint=f"127.0.0.1:{backend.port}", variant=f"{MODEL}-v1", region=REGION,
        cloud="aws", quality=0.9, latency_p95_ms=20.0, cost_usd=cost, compute_ms=5.0,
        spare_capacity=100.0, concurrency=4, dropped_reason=dropped)


class _Watcher:
    def __init__(self) -> None:
        self.wake = asyncio.Event()

    def take(self) -> list[object]:
        self.wake.clear()
        return []


class FakeHub:
    """EMULATED placement tables: what the ADS server reads of a ``RouteHub``."""

    def __init__(self) -> None:
        self.version = 1
        self.rows: list[placement_pb2.Candidate] = []
        self.watchers: list[_Watcher] = []

    def snapshot(self, region: str) -> list[placement_pb2.RouteTable]:
        return [placement_pb2.RouteTable(model=MODEL, edge_region=region, default_slo_ms=300,
                                         candidates=self.rows)]

    def subscribe(self, edge_id: str, region: str) -> _Watcher:
        self.watchers.append(_Watcher())
        return self.watchers[-1]

    def unsubscribe(self, w: _Watcher) -> None:
        self.watchers.remove(w)

    def publish(self, rows: list[placement_pb2.Candidate]) -> None:
        self.rows, self.version = rows, self.version + 1
        for w in self.watchers:
            w.wake.set()


@dataclass
class Edge:
    hub: FakeHub
    ads: AdsServer
    envoy: EnvoyEdge
    backends: dict[str, FakeBackend]

    async def clusters(self) -> set[str]:
        text = await asyncio.to_thread(self.envoy.admin, "/clusters")
        return {line.split("::", 1)[0] for line in text.splitlines()
                if line.startswith("dep:")}

    async def holds(self, want: set[str]) -> bool:
        return await self.clusters() == want

    async def stat(self, name: str) -> int:
        text = await asyncio.to_thread(self.envoy.admin, f"/stats?filter=^{name}$")
        return sum(int(line.rsplit(":", 1)[1]) for line in text.splitlines() if ":" in line)

    def compiled(self) -> set[str]:
        """The deployment clusters placement compiled for the region (what the edge needs)."""
        return {n for n in self.ads.region_config(REGION).clusters if n.startswith("dep:")}

    def nacks(self) -> list[str]:
        return [n.message for s in self.ads.sessions for n in s.replies.nacks]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def edge(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Edge]:
    backends = {n: FakeBackend(n) for n in ("b1", "b2", "b3", "b4")}
    for b in backends.values():
        await b.start()
    hub = FakeHub()
    hub.rows = [_row(backends["b1"], 1e-6), _row(backends["b2"], 2e-6),
                _row(backends["b3"], 3e-6), _row(backends["b4"], 1e-7, dropped="drained")]
    server = grpc.aio.server()
    ads = add_ads(server, hub, build_profile("cheapest"),  # type: ignore[arg-type]
                  EnvoySettings(order_cap=1))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    run = tmp_path_factory.mktemp("envoy-edge-clusters")
    node = EnvoyNode("e1", REGION, "127.0.0.1", free_port(), free_port())
    envoy = EnvoyEdge(node, write_bootstrap(pathlib.Path(run) / "e1.json", node,
                                            [f"127.0.0.1:{port}"]), concurrency=1)
    envoy.start()
    try:
        await eventually(lambda: asyncio.to_thread(envoy.ready), 30,
                         f"Envoy listening (log: {envoy.log_path})")
        yield Edge(hub, ads, envoy, backends)
    finally:
        envoy.stop()
        await server.stop(0)
        for b in backends.values():
            await b.server.stop(0)


async def infer(e: Edge) -> tuple[str, str]:
    """(status, answering backend or details) of one ModelInfer for the model."""
    body = b"\n" + bytes([len(MODEL)]) + MODEL.encode()  # ModelInferRequest.model_name
    async with grpc.aio.insecure_channel(e.envoy.address) as ch:
        call = ch.unary_unary(lua.INFER_PATH, request_serializer=None,
                              response_deserializer=None)
        try:
            got = await call(body, timeout=5)
        except grpc.aio.AioRpcError as err:
            return err.code().name, err.details() or ""
        return "OK", bytes(got).decode()


async def test_the_edge_holds_what_its_orders_reach_and_the_drained_row_only(
        edge: Edge) -> None:
    assert await infer(edge) == ("OK", "b1")
    held = await edge.clusters()
    # b3, dearest, is past every one-deployment cut: no cluster; drained b4 keeps its own
    assert held == edge.compiled() and "dep:b3/m-v1" not in held
    assert {"dep:b1/m-v1", "dep:b4/m-v1"} <= held
    assert edge.backends["b4"].calls == 0 and not edge.nacks()


async def test_a_deployment_entering_the_orders_mid_traffic_loses_no_call(edge: Edge) -> None:
    """b1's backend goes and b3 becomes the cheapest: b3's cluster arrives in the response
    whose aggregate first names it (the only deployment of the default order), b1's is
    removed after the routes; calls sent back to back all the while."""
    b = edge.backends
    results: list[tuple[str, str]] = []
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            results.append(await infer(edge))

    task = asyncio.create_task(load())
    await eventually(lambda: len(results) >= 5, 30, "calls before the change")
    edge.hub.publish([_row(b["b2"], 2e-6), _row(b["b3"], 1e-8),
                      _row(b["b4"], 1e-7, dropped="drained")])
    await eventually(lambda: results[-1] == ("OK", "b3"), 30, "calls answered by b3")
    want = edge.compiled()
    assert "dep:b3/m-v1" in want and "dep:b1/m-v1" not in want
    await eventually(lambda: edge.holds(want), 30, f"the edge holds {sorted(want)}")
    n = len(results)
    await eventually(lambda: len(results) >= n + 5, 30, "calls after the removal")
    stop.set()
    await task
    failed = [r for r in results if r[0] != "OK"]
    assert not failed, failed[:5]
    assert {r[1] for r in results} <= {"b1", "b3"}
    assert not edge.nacks()
    assert await edge.stat("cluster_manager.cds.update_rejected") == 0



async def test_a_new_deployment_is_named_only_once_envoy_has_warmed_it(edge: Edge) -> None:
    """The new deployment's first health check hangs (an EMULATED backend,
    ``FakePausableBackend``) until the check's 1 s timeout: Envoy answers the response that
    brought its cluster only then (it keeps CDS paused while a cluster warms), and placement
    held the rest of the change until that answer (``services/xds/pushes.py``)."""
    hung = FakePausableBackend()
    hung.running.clear()
    before = list(edge.hub.rows)
    waits = len(edge.ads.warm_waits)
    try:
        edge.hub.publish([*before, placement_pb2.Candidate(
            deployment_id=f"hc/{MODEL}-v1", backend_id="hc", endpoint=hung.address,
            variant=f"{MODEL}-v1", region=REGION, cloud="aws", quality=0.9,
            latency_p95_ms=20.0, cost_usd=1e-9, compute_ms=5.0, spare_capacity=100.0,
            concurrency=4, dropped_reason="drained")])  # a cluster of its own, kept warm
        await eventually(lambda: len(edge.ads.warm_waits) > waits, 30,
                         "Envoy answers the response that brought the new cluster")
        assert edge.ads.warm_waits[-1] >= 0.9, list(edge.ads.warm_waits)  # the check's timeout
        assert hung.checks >= 1
        want = edge.compiled()
        assert f"dep:hc/{MODEL}-v1" in want
        await eventually(lambda: edge.holds(want), 30, f"the edge holds {sorted(want)}")
    finally:
        edge.hub.publish(before)
        hung.close()
    want = edge.compiled()
    await eventually(lambda: edge.holds(want), 30, f"the edge holds {sorted(want)} again")
    assert not edge.nacks()
