"""Panic on the real Envoy: when every deployment of a route is ejected, calls are still tried
there (never anywhere else) instead of answered "no healthy upstream".

The Envoy runs the clusters and route configuration placement compiles
(``services.xds.resources.compile_region``), loaded statically; the listener is a bare
router (the test sends the model header the listener's Lua would set). The backends are
EMULATED: small gRPC servers that answer UNAVAILABLE while told to, so ejection is the
backend's own 5xx answers, the one thing that still ejects.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format

from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.edge.envoy.binary import envoy_binary
from services.ports import free_port
from services.xds import lua
from services.xds.resources import EnvoySettings, compile_region, route_config_name
from tests.mesh_harness import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

INFER = lua.SERVICE_PATH + "ModelInfer"


@dataclass
class FakeBackend:
    """EMULATED backend: answers UNAVAILABLE while ``down``, else its name; counts calls;
    SERVING to Envoy's gRPC health checks, uncounted."""

    name: str
    down: bool = False
    calls: int = 0
    server: grpc.aio.Server = field(init=False)
    port: int = 0

    async def start(self) -> None:
        async def handler(_req: bytes, ctx: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            self.calls += 1
            if self.down:
                await ctx.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} is down")
            return self.name.encode()

        async def health(_req: bytes, _ctx: Any) -> bytes:
            return b"\x08\x01"  # grpc.health.v1 HealthCheckResponse: SERVING (Envoy's checks)

        class Handler(grpc.GenericRpcHandler):
            def service(self, details: Any) -> grpc.RpcMethodHandler[bytes, bytes]:
                return grpc.unary_unary_rpc_method_handler(
                    health if details.method == "/grpc.health.v1.Health/Check" else handler)

        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers([Handler()])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()


def _cand(dep: str, cost: float, port: int, dropped: str = "") -> placement_pb2.Candidate:
    backend, variant = dep.split("/")
    return placement_pb2.Candidate(
        deployment_id=dep, backend_id=backend, endpoint=f"127.0.0.1:{port}", variant=variant,
        region="r-east", cloud="aws", quality=0.9, latency_p95_ms=20, cost_usd=cost,
        spare_capacity=100, concurrency=4, dropped_reason=dropped)


def bootstrap(cands: list[placement_pb2.Candidate], port: int, admin_port: int) -> dict[str, Any]:
    rc = compile_region("r-east", [placement_pb2.RouteTable(
        model="summarize", edge_region="r-east", version=1, default_slo_ms=300,
        candidates=cands)], build_profile("cheapest"), EnvoySettings(eject_base_s=60))
    as_dict = json_format.MessageToDict
    routes = as_dict(rc.routes[route_config_name("r-east")].message)
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network."
                    "http_connection_manager.v3.HttpConnectionManager",
           "stat_prefix": "panic", "codec_type": "HTTP2", "route_config": routes,
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "static_resources": {
            "clusters": [as_dict(r.message) for r in rc.clusters.values()],
            "listeners": [{"name": "edge", "address": {"socket_address": {
                "address": "127.0.0.1", "port_value": port}}, "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm}]}]}]}}


@dataclass
class PanicEdge:
    backends: dict[str, FakeBackend]
    address: str
    admin_port: int

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            return str(r.read().decode())

    def out(self, backend: str) -> bool:
        return any(line.startswith(f"dep:{backend}/") and "failed_outlier_check" in line
                   for line in self.admin("/clusters").splitlines())


def launch(config: dict[str, Any], run: pathlib.Path) -> subprocess.Popen[bytes]:
    (run / "bootstrap.json").write_text(json.dumps(config))
    with open(run / "envoy.log", "w") as log:
        return subprocess.Popen([str(envoy_binary()), "-c", str(run / "bootstrap.json"),
                                 "--disable-hot-restart", "--concurrency", "1", "-l", "warning"],
                                stdout=subprocess.DEVNULL, stderr=log)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def edge(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PanicEdge]:
    backends = {n: FakeBackend(n) for n in ("b1", "b2", "b3")}
    for b in backends.values():
        await b.start()
    # b3 is drained: in the table (so its cluster exists) but in no order.
    cands = [_cand("b1/s", 1e-6, backends["b1"].port), _cand("b2/s", 2e-6, backends["b2"].port),
             _cand("b3/s", 1e-7, backends["b3"].port, dropped="drained")]
    port, admin_port = free_port(), free_port()
    run = tmp_path_factory.mktemp("envoy-panic")
    proc = launch(bootstrap(cands, port, admin_port), run)
    e = PanicEdge(backends, f"127.0.0.1:{port}", admin_port)

    def ready() -> bool:
        try:
            return "LIVE" in e.admin("/ready")
        except OSError:
            return False

    try:
        await eventually(ready, 30, f"Envoy ready (log: {run / 'envoy.log'})")
        await eventually(lambda: "healthy" in e.admin("/clusters"), 10, "first health checks")
        yield e
    finally:
        proc.terminate()
        proc.wait(10)
        for b in backends.values():
            await b.server.stop(0)


async def infer(e: PanicEdge) -> tuple[str, str]:
    """(status, answer or details) of one call to the summarize route."""
    async with grpc.aio.insecure_channel(e.address) as ch:
        call = ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)
        try:
            got = await call(b"", timeout=5, metadata=((lua.MODEL_HEADER, "summarize"),))
        except grpc.aio.AioRpcError as err:
            return err.code().name, err.details() or ""
        return "OK", bytes(got).decode()


async def test_every_deployment_ejected_is_still_tried_and_nothing_else_is(
        edge: PanicEdge) -> None:
    b1, b2, b3 = edge.backends["b1"], edge.backends["b2"], edge.backends["b3"]
    assert await infer(edge) == ("OK", "b1")  # the cheapest feasible deployment
    b1.down = b2.down = True
    for _ in range(10):  # each call tries b1 then b2 (3 answers in a row eject each)
        if edge.out("b1") and edge.out("b2"):
            break
        status, _ = await infer(edge)
        assert status == "UNAVAILABLE"
    assert edge.out("b1") and edge.out("b2"), edge.admin("/clusters")
    b1.down = b2.down = False
    # Both still ejected (60 s): the call is tried there anyway, not refused.
    status, got = await infer(edge)
    assert (status, got) in {("OK", "b1"), ("OK", "b2")}, (status, got)
    assert edge.out("b1") and edge.out("b2")  # it really was panic
    assert b3.calls == 0  # the drained deployment, cheapest of all, was never a panic target
