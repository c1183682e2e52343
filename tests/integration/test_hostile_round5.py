"""A hostile caller against the edge, round 5: what rounds 1-4 (test_edge_hostile,
test_hostile_engines, test_envoy_stream_hostile, test_envoy_hostile, test_hostile_round4)
left.

One mesh for the module, both engines, as round 4's: real Triton backends, placement serving
ADS, a node agent, the co-located Python edge (``<edge>-slow``, called directly as *the Python
edge*) and a real Envoy driven by placement (a stream is its slow path's from its first
message: README, "Envoy edges"; both engines' streams share that edge's upstreams).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from services.backends.triton import TritonProcess
from services.config import MeshConfig
from services.edge.router import CallRecord
from services.edge.tokens import llm_request
from services.edge.upstream import DRAIN_BACKLOG, STREAM
from tests.envoy_harness import EnvoyMesh, running_envoy_mesh
from tests.mesh_harness import eventually, mesh_config

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    return mesh_config(tmp_path_factory.mktemp("hostile5"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(cfg: MeshConfig, tritons: dict[str, TritonProcess],
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EnvoyMesh]:
    async with running_envoy_mesh(cfg, tmp_path_factory.mktemp("envoy")) as m:
        yield m


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engines(mesh: EnvoyMesh) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    """A channel to each engine: ``python`` (the Python edge) and ``envoy``."""
    async with (grpc.aio.insecure_channel(f"127.0.0.1:{mesh.slow.port}") as py,
                mesh.channel() as envoy):
        yield {"python": py, "envoy": envoy}


@pytest.fixture
def records(mesh: EnvoyMesh) -> Iterator[list[CallRecord]]:
    """Every CallRecord the Python edge finishes during the test."""
    got: list[CallRecord] = []
    router = mesh.slow.router
    original = router.on_done

    def done(rec: CallRecord) -> None:
        got.append(rec)
        original(rec)

    router.on_done = done
    try:
        yield got
    finally:
        router.on_done = original


def dead(tritons: dict[str, TritonProcess]) -> str:
    """The log tails of the backends that died ("" when every one is alive)."""
    return "\n".join(f"{b}:\n{p.log_tail(20)}" for b, p in tritons.items() if not p.alive)


def streamer(ch: grpc.aio.Channel) -> Any:
    return ch.stream_stream(STREAM, request_serializer=None, response_deserializer=None)


LONG_TOKENS = 2000  # on west-cheap (2 ms a token alone): drained for seconds
SHORT = 120
SHORT_TOKENS = 120  # on east-fast: longer than any of the short deadlines below
CLIENT_LOST = "INTERNAL: Internal error from Core"


async def test_cancels_past_the_drain_bound_leave_backends_alive(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel],
        tritons: dict[str, TritonProcess], records: list[CallRecord]) -> None:
    """DRAIN_BACKLOG long streams cancelled by their callers after their first token fill the
    edge's drain backlog; then 120 short streams whose callers' deadlines run out mid-generation
    (round 4's), half on each engine (all the slow path's upstreams). Every caller gets its
    status at once; the edge lets each upstream stream go without cancelling it at the
    backend (Triton 2.51 dies of such cancels: SIGSEGV, server#7368). Past 128 drains the
    old edge cancelled the short streams' upstreams at once instead: east-fast died
    (SIGSEGV; the rest UNAVAILABLE) in 1 run of 2."""
    calls = {e: streamer(ch) for e, ch in engines.items()}
    long: list[Any] = [calls["python" if i % 2 else "envoy"](
        iter([llm_request("generate", list(range(200, 230)), LONG_TOKENS)]), timeout=300,
        metadata=(("x-request-id", f"long-{i}"), ("x-allowed-regions", "r-west")))
        for i in range(DRAIN_BACKLOG)]
    await asyncio.wait_for(asyncio.gather(*(c.read() for c in long)), 60)
    for c in long:
        c.cancel()
    assert {await c.code() for c in long} == {grpc.StatusCode.CANCELLED}
    router = mesh.slow.router
    await eventually(lambda: len(router.upstreams.draining) == DRAIN_BACKLOG, 10,
                     "the long streams drained")
    statuses = []
    for i in range(SHORT):
        c = calls["python" if i % 2 else "envoy"](
            iter([llm_request("generate", list(range(100, 120)), SHORT_TOKENS)]),
            timeout=0.05 + (i // 2 % 8) * 0.02,
            metadata=(("x-request-id", f"short-{i}"), ("x-allowed-regions", "r-east")))
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for _ in c:
                pass
        statuses.append(f"{(await c.code()).name}: {await c.details()}")
    assert dead(tritons) == ""
    # DEADLINE_EXCEEDED (or OK); now and then the grpc.aio client loses the status of a call
    # that ended while it was still writing its request: its own INTERNAL "Internal error
    # from Core" (set_internal_error; no trailers), the edge's record says DEADLINE_EXCEEDED
    assert {s.partition(":")[0] for s in statuses if s != CLIENT_LOST} <= {
        "DEADLINE_EXCEEDED", "OK"}, statuses
    await eventually(lambda: not router.upstreams.draining, 120,
                     "every let-go stream ran to its end")
    assert dead(tritons) == ""
    await eventually(lambda: sum(r.request_id.startswith(("long-", "short-"))
                                 for r in records) >= DRAIN_BACKLOG + SHORT - 4, 10,
                     "the streams recorded")
    seen = {f"short-{i}": "DEADLINE_EXCEEDED" if s == CLIENT_LOST else s.partition(":")[0]
            for i, s in enumerate(statuses)}
    differ = {r.request_id: (r.status, seen[r.request_id]) for r in records
              if r.request_id in seen and r.status != seen[r.request_id]}
    assert not differ, differ
    await eventually(lambda: sum(router.streams.inflight.values()) == 0, 10,
                     f"no stream in flight: {router.streams.inflight}")
    assert sum(router.inflight.values()) == 0, router.inflight
    for stream in calls.values():  # still served, on both engines
        got = [r async for r in stream(iter([llm_request("generate", [1, 2, 3], 4)]),
                                       timeout=20)]
        assert len(got) == 4
