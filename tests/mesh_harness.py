"""A whole mesh for integration tests: real Triton backends, the emulated-WAN relay, placement,
a node agent and an edge, all on 127.0.0.1 with free ports.

Placement, agent, relay and edge run in the test's event loop (so tests can look inside);
the Triton servers are real child processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import pathlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from services.agent.agent import NodeAgent
from services.api.switchyard.v1 import placement_pb2_grpc
from services.backends.repository import set_control
from services.backends.triton import TritonProcess, stop_all
from services.backends.wan import WanRelay, relay_routes
from services.config import MeshConfig
from services.demo import infer_with_trailers
from services.edge.main import RunningEdge, start_edge
from services.grpc_errors import ErrorInterceptor
from services.placement.main import RunningPlacement, start_placement
from services.ports import free_port, free_ports
from services.security.authz import interceptors
from services.security.settings import SecuritySettings

PRICES = """
[[prices]]
accelerator = "gpu-fast"
cloud = "aws"
region = "*"
price_class = "on-demand"
usd_per_gpu_hour = 8.0
source = "test fixture"
as_of = "2026-11-22"

[[prices]]
accelerator = "gpu-cheap"
cloud = "gcp"
region = "*"
price_class = "spot"
usd_per_gpu_hour = 0.30
source = "test fixture"
as_of = "2026-11-22"

[[prices]]
accelerator = "gpu-cheap"
cloud = "aws"
region = "*"
price_class = "spot"
usd_per_gpu_hour = 0.90
source = "test fixture"
as_of = "2026-11-22"
"""


def _free_block(n: int) -> int:
    """A base port with ``n`` consecutive free ports after it."""
    return free_ports(n, consecutive=True)[0]


def mesh_config(tmp: pathlib.Path, **edge_overrides: Any) -> MeshConfig:
    """Three regions on two clouds; a fast expensive backend next to the edge, cheap ones away."""
    (tmp / "prices.toml").write_text(PRICES)
    raw: dict[str, Any] = {
        "base_dir": str(tmp), "run_dir": str(tmp / "run"), "prices_file": "prices.toml",
        "regions": [{"name": "r-east", "cloud": "aws"}, {"name": "r-west", "cloud": "aws"},
                    {"name": "r-central", "cloud": "gcp"}],
        "rtt": [{"a": "r-east", "b": "r-west", "ms": 40}, {"a": "r-east", "b": "r-central",
                                                           "ms": 20},
                {"a": "r-west", "b": "r-central", "ms": 30}],
        "models": [
            {"name": "summarize", "default_slo_ms": 300, "variants": [
                {"name": "summarize-small", "quality": 0.7, "matmul_n": 160, "matmul_iters": 16},
                {"name": "summarize-large", "quality": 0.9, "matmul_n": 256,
                 "matmul_iters": 32}]},
            {"name": "generate", "default_slo_ms": 2000, "decoupled": True, "variants": [
                {"name": "generate-small", "quality": 0.7, "matmul_n": 32, "matmul_iters": 1,
                 "tokens": 4}]},
        ],
        "backends": [
            {"id": "east-fast", "region": "r-east", "accelerator": "gpu-fast",
             "grpc_port": free_port(), "speed": 4.0,
             "variants": ["summarize-small", "summarize-large", "generate-small"]},
            {"id": "central-cheap", "region": "r-central", "accelerator": "gpu-cheap",
             "price_class": "spot", "grpc_port": free_port(), "speed": 1.0,
             "variants": ["summarize-small", "summarize-large"]},
            {"id": "west-cheap", "region": "r-west", "accelerator": "gpu-cheap",
             "price_class": "spot", "grpc_port": free_port(), "speed": 1.0,
             "variants": ["summarize-small", "generate-small"]},
        ],
        "edges": [{"id": "edge-east", "region": "r-east", "port": 0}],
        "placement": {"port": 0, "coalesce_ms": 20},
        "routing": {"observed_min_samples": 10},
        "edge": {"report_interval_s": 0.5, **edge_overrides},
        "wan": {"emulate": True, "relay_base_port": _free_block(8)},
    }
    return MeshConfig.model_validate(raw)


@dataclass
class Mesh:
    cfg: MeshConfig
    tritons: dict[str, TritonProcess]
    relay: WanRelay
    placement: RunningPlacement
    agent: NodeAgent
    edge: RunningEdge

    @property
    def edge_address(self) -> str:
        return f"127.0.0.1:{self.edge.port}"

    def client(self) -> tc.InferenceServerClient:
        return tc.InferenceServerClient(self.edge_address)


# At teardown the mesh in front of the servers is gone: they are idle. An idle Triton exits
# ~3 s after SIGTERM (its Python-backend models unload, then Triton's once-a-second check);
# past this grace it is SIGKILLed with its stubs, its shared memory removed by prefix
# (``TritonProcess.finish_stop``): nothing of a test's is lost, ~2 s per module saved.
STOP_GRACE_S = 1.0


def start_tritons(cfg: MeshConfig, root: pathlib.Path) -> dict[str, TritonProcess]:
    """Start every backend of ``cfg`` together, then wait for each; none left running if one
    does not come up."""
    procs = {b.id: TritonProcess.for_backend(cfg, b, root / b.id) for b in cfg.backends}
    try:
        for p in procs.values():
            p.start()
        for p in procs.values():
            p.wait_ready(90)
    except BaseException:
        stop_all(procs.values(), STOP_GRACE_S)
        raise
    return procs


@contextlib.contextmanager
def running_tritons(cfg: MeshConfig, root: pathlib.Path) -> Iterator[dict[str, TritonProcess]]:
    """Every backend of ``cfg`` as a real Triton, warmed up; stopped together on exit."""
    procs = start_tritons(cfg, root)
    try:
        warm([p.endpoint for p in procs.values()], ["summarize-small", "summarize-large"])
        yield procs
    finally:
        stop_all(procs.values(), STOP_GRACE_S)


def summarize_input(dim: int = 16, batch: int = 1) -> tc.InferInput:
    x = tc.InferInput("INPUT0", [batch, dim], "FP32")
    x.set_data_from_numpy(np.ones((batch, dim), np.float32))
    return x


def warm(endpoints: Sequence[str], variants: Sequence[str], calls: int = 15) -> None:
    """Direct calls so Triton has statistics for the agent to report."""
    for ep in endpoints:
        c = tc.InferenceServerClient(ep)
        ready = [v for v in variants if c.is_model_ready(v)]
        for v in ready:
            if v.startswith("generate"):
                continue
            for _ in range(calls):
                c.infer(v, [summarize_input()])
        c.close()


@contextlib.asynccontextmanager
async def running_mesh(cfg: MeshConfig, tritons: dict[str, TritonProcess],
                       nvml: Any = None) -> AsyncIterator[Mesh]:
    """``nvml``: a pynvml-like module for the agent (e.g. ``FakeNvml``); None = real/simulated."""
    relay = WanRelay(relay_routes(cfg))
    await relay.start()
    placement = await start_placement(cfg, port=0, metrics_port=0)
    address = f"127.0.0.1:{placement.port}"
    agent = NodeAgent(cfg, [b.id for b in cfg.backends], placement=[address], interval_s=0.3,
                      nvml=nvml)
    await agent.start()
    edge = await start_edge(cfg, cfg.edges[0], port=0, placement=[address], metrics_port=0)
    mesh = Mesh(cfg, tritons, relay, placement, agent, edge)
    try:
        await wait_measured(mesh)
        yield mesh
    finally:
        await edge.stop(0.5)
        await agent.stop()
        await placement.stop(0.5)
        await relay.stop()


async def wait_measured(mesh: Mesh, within_s: float = 30.0) -> None:
    """Until the edge holds this placement's tables (not the snapshot an earlier mesh in the
    same run directory persisted: its rows carry that mesh's learning, e.g. the fleet's token
    speeds, so a test would start from another test's state) and every summarize candidate in
    them has measured estimates."""
    def measured() -> bool:
        store = mesh.edge.router.store
        cands = store.candidates.get("summarize", ())
        return (store.source == "placement" and bool(cands)
                and all("no measurements" not in c.penalty_reason for c in cands))

    try:
        await eventually(measured, within_s, "the route table has measurements", poll_s=0.1)
    except AssertionError as err:
        raise AssertionError(f"{err}: {mesh.edge.router.store.candidates.get('summarize')}"
                             ) from None


async def eventually(cond: Callable[[], object], within_s: float, what: str = "",
                     poll_s: float = 0.05) -> float:
    """Poll ``cond`` every ``poll_s`` until true (other components change it); seconds it
    took. A short ``poll_s`` catches a state that lasts only a moment (a call in flight).
    ``cond`` may be a coroutine function (an RPC that reads the state): it is awaited."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while True:
        got = cond()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return loop.time() - t0
        if loop.time() - t0 > within_s:
            raise AssertionError(f"not within {within_s} s: {what or cond}")
        await asyncio.sleep(poll_s)  # the poll interval of this wait, not a wait of its own


def eventually_sync(cond: Callable[[], object], within_s: float, what: str = "",
                    poll_s: float = 0.05) -> float:
    """:func:`eventually` for code without an event loop (threads, tritonclient calls)."""
    t0 = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - t0
        if time.monotonic() - t0 > within_s:
            raise AssertionError(f"not within {within_s} s: {what or cond}")
        time.sleep(poll_s)  # the poll interval of this wait, not a wait of its own


def call(mesh: Mesh, metadata: Sequence[tuple[str, str]] = (), model: str = "summarize",
         timeout_s: float = 5.0) -> dict[str, str]:
    """One tritonclient call through the edge; returns the trailers."""
    _, trailers = infer_with_trailers(mesh.client(), model, [summarize_input()], metadata,
                                      timeout_s)
    return trailers


def why(mesh: Mesh, metadata: Sequence[tuple[str, str]] = (), model: str = "summarize",
        tail_lines: int = 12) -> str:
    """For failure messages: where the edge would send such a call now and why, candidate by
    candidate (the edge's own pipeline over its own table and health snapshot:
    ``placement.explain.explain_call``), every deployment its health view blocks with the
    reason, and the Triton log tail of every backend with a blocked or dropped row."""
    from placement.explain import explain_call
    from services.edge.router import CallRecord

    router = mesh.edge.router
    lines = [f"routes version {router.store.version} from {router.store.source}"]
    try:
        _, cands, ctx, profile = router.read(request_bytes(model), list(metadata), None,
                                             CallRecord("why", model))
        ex = explain_call(profile, cands, ctx)
        lines.append(f"a {model} call with {list(metadata)} now: {ex.summary}")
        lines += [f"  {v.candidate.deployment_id}: {v.reason}" for v in ex.verdicts]
    except Exception as exc:  # a diagnostic must not hide the real failure
        lines.append(f"(no explanation: {exc!r})")
    unusable = router.health.view().unusable
    lines.append("blocked by the edge's health view: "
                 + (", ".join(f"{d} ({r})" for d, r in sorted(unusable.items())) or "none"))
    troubled = {d.split("/", 1)[0] for d in unusable} | {
        c.backend_id for cs in router.store.candidates.values() for c in cs if c.dropped_reason}
    for b in sorted(troubled):
        proc = mesh.tritons.get(b)
        if proc is not None:
            lines.append(f"--- {b} tritonserver (alive={proc.alive}) log tail:\n"
                         + proc.log_tail(tail_lines))
    return "\n".join(lines)


INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"


def request_bytes(model: str = "summarize", dim: int = 16) -> bytes:
    """A serialised ModelInfer request, as tritonclient builds it."""
    from tritonclient.grpc import _utils as tc_utils
    req = tc_utils._get_inference_request(
        model_name=model, inputs=[summarize_input(dim)], model_version="", request_id="",
        outputs=None, sequence_id=0, sequence_start=False, sequence_end=False, priority=0,
        timeout=None, parameters=None)
    return bytes(req.SerializeToString())


def padded(size: int) -> bytes:
    """A real summarize request padded to exactly ``size`` bytes with an unknown field (Triton
    skips it), so the message is as large as the caller chooses."""
    body = request_bytes()
    pad = size - len(body) - 6  # tag (2 bytes) and a 4-byte length varint
    return (body + b"\x92\x01" + bytes([0x80 | (pad & 0x7F), 0x80 | ((pad >> 7) & 0x7F),
                                        0x80 | ((pad >> 14) & 0x7F), pad >> 21]) + bytes(pad))


async def raw_infer(ch: Any, md: Sequence[tuple[str, str | bytes]] = (), raw: bytes | None = None,
                    timeout: float | None = 5.0) -> tuple[Any, dict[str, str], str]:
    """(status, trailers, details) of one raw ModelInfer on a grpc.aio channel."""
    import grpc
    call = ch.unary_unary(INFER_PATH)(raw if raw is not None else request_bytes(),
                                      metadata=tuple(md), timeout=timeout)
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code(), dict(err.trailing_metadata() or ()), err.details() or ""
    return grpc.StatusCode.OK, dict(await call.trailing_metadata() or ()), ""


@contextlib.asynccontextmanager
async def serving_placement(service: Any) -> AsyncIterator[Any]:
    """``service`` (a ``PlacementService``) on a plaintext gRPC server on 127.0.0.1 with the
    interceptors placement runs with, registered as placement registers it
    (``services.placement.main.register``: ``WatchRoutes`` yields serialised pushes), and a
    ``PlacementStub`` to it."""
    from services.placement.main import register

    server = grpc.aio.server(interceptors=[*interceptors(SecuritySettings(plaintext=True)),
                                           ErrorInterceptor()])
    register(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            yield placement_pb2_grpc.PlacementStub(ch)
    finally:
        await server.stop(0)


def parked(endpoint: str, variant: str) -> bool:
    """A direct call to ``variant`` does not finish within 0.3 s: the model parks requests."""
    client = tc.InferenceServerClient(endpoint)
    try:
        client.infer(variant, [summarize_input()], client_timeout=0.3)
    except InferenceServerException as exc:
        return str(exc.status()) == "StatusCode.DEADLINE_EXCEEDED"
    finally:
        client.close()
    return False


@contextlib.asynccontextmanager
async def models_parked(cfg: MeshConfig, tritons: dict[str, TritonProcess],
                        model: str = "summarize") -> AsyncIterator[None]:
    """Inside the block every backend's variants of ``model`` park their calls (the drills'
    ``hang`` knob), each seen parking a direct call before the block starts; they answer
    again when it ends, however it ends."""
    for proc in tritons.values():
        set_control(proc.repository, hang=True)
    try:
        for b in cfg.backends:
            for variant in (v for v in b.variants if v.startswith(model)):
                await eventually(lambda e=tritons[b.id].endpoint, v=variant:
                                 asyncio.to_thread(parked, e, v),
                                 10, f"{b.id}/{variant} parks its requests")
        yield
    finally:
        for proc in tritons.values():
            set_control(proc.repository, hang=False)
