"""Hostile callers against streams through an Envoy edge: what the Python edge's stream cases
(README, "Streaming"; ``test_edge_hostile.py``, ``test_llm_streams.py``) become on a real Envoy
configured by placement over ADS, whose slow path serves every ``ModelStreamInfer``.

Each case checks what the caller sees (status, message, how long until it ends), what Envoy
counts (``cluster.slow-path.upstream_rq_active`` back to 0: no stream left open through it),
and that the backend's slot comes back (the slow path's drains end; a next stream is served).
A later message naming another model and a tiny deadline are ``test_envoy_hostile.py``'s.

One mesh for the module: real Triton backends (the demo LLM ``generate`` on east-fast and
west-cheap), placement serving ADS, a node agent, the slow-path Python edge, a real Envoy.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio

from services.backends.triton import TritonProcess
from services.config import MeshConfig
from services.edge.tokens import llm_request, parse_token
from services.edge.upstream import INFER, STREAM
from tests.envoy_harness import EnvoyMesh, running_envoy_mesh
from tests.llm_harness import PROMPT
from tests.mesh_harness import eventually, mesh_config

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

MIB = 1 << 20


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    return mesh_config(tmp_path_factory.mktemp("envoy-stream-hostile"))


# Envoy's stream idle timeout (its default 300 s) shortened so that the module sees it: a
# slow-path stream silent for longer must still live (its route turns the timeout off).
IDLE_S = 1.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(cfg: MeshConfig, tritons: dict[str, TritonProcess],
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EnvoyMesh]:
    async with running_envoy_mesh(cfg, tmp_path_factory.mktemp("envoy"), idle_s=IDLE_S) as m:
        yield m


@pytest.fixture
def stopped(tritons: dict[str, TritonProcess]) -> Iterator[list[str]]:
    """Backends a test stopped (SIGSTOP); continued and ready again afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        os.kill(tritons[name].pid, signal.SIGCONT)
        tritons[name].wait_ready(90)


def active(mesh: EnvoyMesh) -> int:
    return mesh.envoy_stat("cluster.slow-path.upstream_rq_active")


def slow_path_counts(mesh: EnvoyMesh) -> dict[str, int]:
    """Envoy's counters of its slow-path cluster: streams sent, and resets either way."""
    names = ("upstream_rq_total", "upstream_rq_rx_reset", "upstream_rq_tx_reset")
    counts = {n: mesh.envoy_stat(f"cluster.slow-path.{n}") for n in names}
    assert counts["upstream_rq_total"] > 0  # the counters exist (a missing one reads 0)
    return counts


async def settled(mesh: EnvoyMesh) -> None:
    """Nothing left open: no stream through Envoy to the slow path, no drain at a backend."""
    await eventually(lambda: asyncio.to_thread(lambda: active(mesh) == 0), 20,
                     "Envoy has no slow-path stream open")
    await eventually(lambda: not mesh.slow.router.upstreams.draining, 20,
                     "the slow path drains nothing")


async def served_stream(mesh: EnvoyMesh, tokens: int = 8,
                        metadata: tuple[tuple[str, str], ...] = ()) -> int:
    """A fresh stream through Envoy, served in full: its tokens (0: it failed)."""
    async with mesh.channel() as ch:
        call = opened(ch, iter([llm_request("generate", PROMPT, tokens)]), 20, metadata)
        code, _, _, n = await outcome(call, time.monotonic())
    return n if code is grpc.StatusCode.OK else 0


async def outcome(call: Any, t0: float
                  ) -> tuple[grpc.StatusCode, str, float, int]:
    """Read a stream to its end: code, message, seconds from ``t0``, responses read."""
    n = 0
    try:
        while await call.read() is not grpc.aio.EOF:
            n += 1
    except grpc.aio.AioRpcError:
        pass
    return await call.code(), await call.details() or "", time.monotonic() - t0, n


def opened(ch: grpc.aio.Channel, requests: AsyncIterator[bytes] | Iterator[bytes],
           timeout: float, metadata: tuple[tuple[str, str], ...] = (), path: str = STREAM
           ) -> Any:
    """A raw stream through the edge (its calls are typed loosely by grpc's stubs); ``path``
    another RPC's, to send its caller's messages as a test says."""
    stream: Any = ch.stream_stream(path, request_serializer=None, response_deserializer=None)
    return stream(requests, timeout=timeout, metadata=metadata)


class Sender:
    """A stream's requests, sent when the test says (the stream stays open until ``close``)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def requests(self) -> AsyncIterator[bytes]:
        while (m := await self.queue.get()) is not None:
            yield m


@dataclass
class MidStream:
    """A 200-token stream whose backend a test broke after its first token: which backend,
    and how the stream ended."""

    backend: str
    code: grpc.StatusCode
    details: str
    took: float  # seconds from the stream's start to its end
    n: int  # responses read after the first
    trailers: dict[str, Any]


async def fault_mid_stream(mesh: EnvoyMesh, fault: Callable[[str], object],
                           metadata: tuple[tuple[str, str], ...] = ()) -> MidStream:
    """Open a 200-token stream (30 s deadline), ``fault`` its backend after the first token
    and read the stream to its end."""
    async with mesh.channel() as ch:
        t0 = time.monotonic()
        call = opened(ch, iter([llm_request("generate", PROMPT, 200)]), 30, metadata)
        await call.read()
        backend = str(dict(await call.initial_metadata())["x-served-by"]).split("/")[0]
        fault(backend)
        code, details, took, n = await outcome(call, t0)
        trailers = dict(await call.trailing_metadata() or ())
    return MidStream(backend, code, details, took, n, trailers)


def stop(tritons: dict[str, TritonProcess], stopped: list[str]) -> Callable[[str], None]:
    """The fault SIGSTOP: the backend's connection stays open and says nothing (``stopped``
    continues it after the test)."""
    def fault(backend: str) -> None:
        os.kill(tritons[backend].pid, signal.SIGSTOP)
        stopped.append(backend)
    return fault


async def continue_and_drained(mesh: EnvoyMesh, tritons: dict[str, TritonProcess],
                               backend: str) -> None:
    """No stream left open through Envoy; the stopped backend's attempt is drained (README:
    at most 60 s), and once it runs again (SIGCONT) the drain ends and its slot is back."""
    await eventually(lambda: asyncio.to_thread(lambda: active(mesh) == 0), 10,
                     "Envoy has no slow-path stream open")
    os.kill(tritons[backend].pid, signal.SIGCONT)
    await eventually(lambda: not mesh.slow.router.upstreams.draining, 30,
                     "the stopped backend's drain ends once it runs again")


async def test_a_backend_stopped_mid_stream_resumes_elsewhere_long_before_the_deadline(
        mesh: EnvoyMesh, tritons: dict[str, TritonProcess], stopped: list[str]) -> None:
    """SIGSTOP: the backend's connection stays open and says nothing. The slow path gives the
    attempt up (2 s silent on a backend its health checks find unreachable) and the LLM
    stream resumes on the other backend: every token, OK, well within the 30 s deadline."""
    got = await fault_mid_stream(mesh, stop(tritons, stopped))
    trailers = got.trailers
    assert got.code is grpc.StatusCode.OK, got.details
    assert got.n + 1 == 200 and trailers["x-tokens-out"] == "200"
    assert trailers["x-resumed"] == "1" and not trailers["x-served-by"].startswith(got.backend)
    assert trailers["x-switchyard-path"] == "slow"
    assert got.took < 15, f"{got.took:.1f} s"
    await continue_and_drained(mesh, tritons, got.backend)


async def test_a_stream_that_cannot_resume_ends_unavailable_when_its_backend_stops(
        mesh: EnvoyMesh, tritons: dict[str, TritonProcess], stopped: list[str]) -> None:
    """The same stop on a stream whose hint leaves it no other deployment (r-east only):
    UNAVAILABLE naming the silent backend, well before the caller's 30 s deadline."""
    east = (("x-allowed-regions", "r-east"),)
    # a backend an earlier test stopped is healthy again in the slow path's checks
    await eventually(lambda: served_stream(mesh, 2, east), 30, "r-east serves a stream")
    got = await fault_mid_stream(mesh, stop(tritons, stopped), east)
    assert got.code is grpc.StatusCode.UNAVAILABLE, (got.code, got.details)
    assert (f"{got.backend} sent nothing for" in got.details
            and got.trailers["x-switchyard-path"] == "slow")
    assert got.took < 15, f"{got.took:.1f} s"
    await continue_and_drained(mesh, tritons, got.backend)


async def test_a_half_closed_stream_never_read_ends_at_its_deadline_and_leaves_nothing(
        mesh: EnvoyMesh) -> None:
    """The caller sends its request, half-closes and never reads a 2,000-token stream."""
    async with mesh.channel() as ch:
        t0 = time.monotonic()
        call = opened(ch, iter([llm_request("generate", PROMPT, 2000)]), 3)
        code = await call.code()
        took = time.monotonic() - t0
    assert code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert took < 5, f"{took:.1f} s past a 3 s deadline"
    await settled(mesh)
    assert await served_stream(mesh) == 8


async def test_a_short_deadline_ends_the_stream_at_it(mesh: EnvoyMesh) -> None:
    """A 3,000-token stream (1.5 s at east-fast's emulated 0.5 ms a token) under a deadline
    long enough for its first tokens (0.5 s was not, once, on a host at load 13: no token
    came) ends at it."""
    async with mesh.channel() as ch:
        t0 = time.monotonic()
        call = opened(ch, iter([llm_request("generate", PROMPT, 3000)]), 1.0)
        code, _, took, n = await outcome(call, t0)
    assert code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert n > 0 and took < 3.0, (n, took)
    await settled(mesh)


async def test_a_stream_silent_past_envoys_idle_timeout_lives_until_its_deadline(
        mesh: EnvoyMesh) -> None:
    """A stream that sends nothing for longer than Envoy's stream idle timeout is served when
    it speaks, as on a Python edge; one that never speaks ends at its own deadline,
    DEADLINE_EXCEEDED. (Before the slow-path route turned the timeout off, Envoy ended both
    after ``IDLE_S``, UNKNOWN "stream timeout": at its default 300 s, any stream silent that
    long.)"""
    async with mesh.channel() as ch:
        sender = Sender()
        call = opened(ch, sender.requests(), 20)
        first = asyncio.ensure_future(call.read())
        done, _ = await asyncio.wait({first}, timeout=3 * IDLE_S)  # the silence under test
        assert not done, f"the silent stream ended: {await call.code()} {await call.details()}"
        await sender.queue.put(llm_request("generate", PROMPT, 8))
        await sender.queue.put(None)
        assert parse_token(await first) is not None
        code, details, _, n = await outcome(call, time.monotonic())
        assert code is grpc.StatusCode.OK, details
        assert n == 7
        silent = Sender()
        t0 = time.monotonic()
        call = opened(ch, silent.requests(), 3 * IDLE_S)
        code, details, took, _ = await outcome(call, t0)
        await silent.queue.put(None)
    assert code is grpc.StatusCode.DEADLINE_EXCEEDED, (code, details)
    assert took > 3 * IDLE_S - 0.1, f"ended after {took:.1f} s"
    await settled(mesh)


async def test_a_stream_with_a_hint_only_the_slow_path_keeps_is_kept_to_it(
        mesh: EnvoyMesh) -> None:
    async with mesh.channel() as ch:
        call = opened(ch, iter([llm_request("generate", PROMPT, 8)]), 20,
                      (("x-allowed-regions", "r-west"),))
        code, details, _, n = await outcome(call, time.monotonic())
        trailers = dict(await call.trailing_metadata() or ())
    assert code is grpc.StatusCode.OK, details
    assert n == 8 and trailers["x-served-region"] == "r-west"


OK, BAD, GONE, NONE = (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
                       grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)
HOSTILE_FIRSTS = [
    ("unknown model", [llm_request("no-such-model", PROMPT, 8)], (), GONE),
    ("empty first message", [b""], (), BAD),
    ("truncated first message", [b"\xff\xff\xff"], (), BAD),
    ("no region serves it", [llm_request("generate", PROMPT, 8)],
     (("x-allowed-regions", "r-central"),), NONE),
    ("a bad hint", [llm_request("generate", PROMPT, 8)], (("x-min-quality", "high"),), BAD),
    ("a cost cap nothing meets", [llm_request("generate", PROMPT, 8)],
     (("x-max-cost-usd", "0.0000000001"),), NONE),
    ("nothing sent, half-closed", [], (), OK),
    ("a first message of max_message_bytes + 1", [bytes(16 * MIB + 1)], (),
     grpc.StatusCode.RESOURCE_EXHAUSTED),
]


@pytest.mark.parametrize(("case", "messages", "metadata", "status"), HOSTILE_FIRSTS,
                         ids=[c[0] for c in HOSTILE_FIRSTS])
async def test_a_refused_stream_ends_as_the_python_edge_ends_it(
        mesh: EnvoyMesh, case: str, messages: list[bytes],
        metadata: tuple[tuple[str, str], ...], status: grpc.StatusCode) -> None:
    """Through Envoy and straight to its slow path (a Python edge): the same status and
    message (up to what is on offer, which a push may change between the two), long before
    the deadline."""
    seen = []
    for address in (mesh.envoy.address, f"127.0.0.1:{mesh.slow.port}"):
        async with grpc.aio.insecure_channel(address) as ch:
            t0 = time.monotonic()
            call = opened(ch, iter(messages), 20, metadata)
            code, details, took, _ = await outcome(call, t0)
        seen.append((code, details.split("; on offer")[0]))
        assert took < 10, f"{case} via {address}: {took:.1f} s"
    assert seen[0] == seen[1]
    assert seen[0][0] is status, seen[0]
    await settled(mesh)


async def test_a_message_over_the_limit_mid_stream_ends_it_at_once(
        cfg: MeshConfig, mesh: EnvoyMesh) -> None:
    """A second message of max_message_bytes + 1 (16 MiB + 1) in a decoding stream:
    RESOURCE_EXHAUSTED naming the limit, from the slow path, long before the deadline."""
    limit = cfg.edge.max_message_bytes
    async with mesh.channel() as ch:
        t0 = time.monotonic()
        call = opened(ch, iter([llm_request("generate", PROMPT, 2000), bytes(limit + 1)]), 30)
        code, details, took, _ = await outcome(call, t0)
        trailers = dict(await call.trailing_metadata() or ())
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(limit) in details and trailers["x-switchyard-path"] == "slow"
    assert took < 10, f"{took:.1f} s"
    await settled(mesh)
    assert await served_stream(mesh) == 8


async def test_a_fast_path_call_that_never_sends_its_message_is_unavailable_saying_why(
        mesh: EnvoyMesh) -> None:
    """A ModelInfer whose caller sends its headers and never its message: on the fast path
    Envoy ends it after its stream idle timeout, UNAVAILABLE saying so and counted as an
    idle timeout; a Python edge waits for the caller's deadline (README). Before the
    listener mapped Envoy's 408, the caller saw UNKNOWN "stream timeout"."""
    async def silent_infer(ch: grpc.aio.Channel, timeout: float
                           ) -> tuple[grpc.StatusCode, str, float]:
        """A ModelInfer that never sends its message: code, message, seconds it took."""
        silent = Sender()
        call = opened(ch, silent.requests(), timeout, path=INFER)
        code, details, took, _ = await outcome(call, time.monotonic())
        await silent.queue.put(None)
        return code, details, took

    idle = "http.switchyard.downstream_rq_idle_timeout"
    before = await asyncio.to_thread(mesh.envoy_stat, idle)
    async with mesh.channel() as ch:
        code, details, took = await silent_infer(ch, 10 * IDLE_S)
    assert code is grpc.StatusCode.UNAVAILABLE, (code, details)
    assert "stream idle timeout" in details and took < 10 * IDLE_S
    assert await asyncio.to_thread(mesh.envoy_stat, idle) == before + 1
    await settled(mesh)
    # the same call to a Python edge (the slow path itself) ends at the caller's deadline
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.slow.port}") as ch:
        code, details, took = await silent_infer(ch, 2 * IDLE_S)
    assert code is grpc.StatusCode.DEADLINE_EXCEEDED, (code, details)
    assert took > 2 * IDLE_S - 0.1


async def test_a_backend_killed_mid_stream_resumes_elsewhere(
        mesh: EnvoyMesh, tritons: dict[str, TritonProcess]) -> None:
    """SIGKILL (last: the module's backends are not needed after it): the connection
    closes, the stream resumes on the other backend at once."""
    counts = await asyncio.to_thread(slow_path_counts, mesh)
    got = await fault_mid_stream(mesh, lambda backend: tritons[backend].kill())
    assert got.code is grpc.StatusCode.OK, got.details
    assert got.n + 1 == 200 and got.trailers["x-resumed"] == "1"
    assert got.took < 10, f"{got.took:.1f} s"
    await settled(mesh)
    # Envoy saw one slow-path stream, ended by the slow path, not reset on either side
    after = await asyncio.to_thread(slow_path_counts, mesh)
    assert after == {**counts, "upstream_rq_total": counts["upstream_rq_total"] + 1}, after
