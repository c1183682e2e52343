"""A hostile caller against the edge, round 6: what rounds 1-5 (test_edge_hostile,
test_hostile_engines, test_envoy_stream_hostile, test_envoy_hostile, test_hostile_round4,
test_hostile_round5) left.

One mesh for the module, both engines, as round 5's: real Triton backends, placement serving
ADS, a node agent, the co-located Python edge (``<edge>-slow``, called directly as *the Python
edge*) and a real Envoy driven by placement, its stream idle timeout shortened to ``IDLE_S``.
The hostile caller is grpc.aio's own client calling ``ModelInfer`` as a stream: it sends the
call's HEADERS and then what the test says (no DATA frame, no half-close, or END_STREAM with no
message), which no unary client does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest

from services.backends.triton import TritonProcess
from services.config import MeshConfig
from services.edge import stream as edge_stream
from services.edge.main import start_edge
from services.edge.router import CallRecord
from services.edge.tokens import llm_request
from services.edge.upstream import STREAM, Upstreams
from tests.envoy_harness import EnvoyMesh, dead, hostile_fixtures
from tests.mesh_harness import INFER_PATH, eventually, raw_infer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

IDLE_S = 2.0  # Envoy's stream idle timeout and the edge's FIRST_MESSAGE_S, shortened


cfg, mesh, engines, records = hostile_fixtures("hostile6", IDLE_S)


def inflight(mesh: EnvoyMesh, kind: str) -> float | None:
    """The Python edge's ``switchyard_edge_inflight{kind}`` as its /metrics says it."""
    assert mesh.slow.metrics is not None
    return mesh.slow.metrics.registry.get_sample_value("switchyard_edge_inflight",
                                                       {"kind": kind})


async def unary_as_stream(ch: grpc.aio.Channel, messages: list[bytes], close: bool,
                          timeout: float | None, request_id: str,
                          method: str = INFER_PATH) -> tuple[str, str, float]:
    """A ModelInfer (or ``method``) that sends ``messages`` and then half-closes (``close``)
    or holds the call open in silence: (status, details, seconds it took)."""
    quiet = asyncio.Event()

    async def requests() -> AsyncIterator[bytes]:
        for m in messages:
            yield m
        if not close:
            await quiet.wait()  # never set: nothing more, no half-close

    infer: Any = ch.stream_stream(method, request_serializer=None, response_deserializer=None)
    t0 = time.monotonic()
    call = infer(requests(), timeout=timeout, metadata=(("x-request-id", request_id),))
    with contextlib.suppress(grpc.aio.AioRpcError):
        async for _ in call:
            pass
    return (await call.code()).name, await call.details() or "", time.monotonic() - t0


SILENT = 20  # ModelInfer calls held open with no message, on each engine at once


async def test_a_model_infer_that_never_sends_its_message_ends_at_the_idle_timeout(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel], records: list[CallRecord],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """ModelInfer calls whose callers send HEADERS and then nothing (no message, no
    half-close) and set no deadline: on both engines each ends UNAVAILABLE after the stream
    idle timeout saying so (Envoy's fast path: its ``stream_idle_timeout`` as pushed; the
    Python edge: ``stream.FIRST_MESSAGE_S``, counted once UNAVAILABLE), nothing stays in
    flight and both still serve. Fails on the old edge: gRPC handed a unary handler its call
    only once the message was in, so the Python edge held each such call (an HTTP/2 stream,
    its memory) for ever (not ended within 10 x IDLE_S)."""
    monkeypatch.setattr(edge_stream, "FIRST_MESSAGE_S", IDLE_S)
    got = await asyncio.wait_for(asyncio.gather(*(
        unary_as_stream(ch, [], False, None, f"silent-{e}-{i}")
        for e, ch in engines.items() for i in range(SILENT))), 10 * IDLE_S)
    by_engine = {e: got[n * SILENT:(n + 1) * SILENT] for n, e in enumerate(engines)}
    assert all(code == "UNAVAILABLE" and "idle timeout" in details
               and IDLE_S - 0.1 < took < 5 * IDLE_S
               for code, details, took in got), by_engine
    assert {d for _, d, _ in by_engine["python"]} == {
        "no message on this call for 2 s (the edge's stream idle timeout)"}
    # the Python edge counted each once with its caller's status; Envoy's never reached it
    await eventually(lambda: sum(r.request_id.startswith("silent-python-") for r in records)
                     == SILENT, 5, "the Python edge's silent calls recorded")
    assert {r.status for r in records if r.request_id.startswith("silent-")} == {"UNAVAILABLE"}
    assert not any(r.request_id.startswith("silent-envoy-") for r in records)
    assert inflight(mesh, "unary") == 0
    for e, ch in engines.items():
        code, _, details = await raw_infer(ch, timeout=10.0)
        assert code == grpc.StatusCode.OK, (e, details)


async def test_a_model_infer_half_closed_with_no_message_is_refused_at_once(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel],
        records: list[CallRecord]) -> None:
    """A ModelInfer whose caller half-closes it with no message (HEADERS, then END_STREAM),
    with a 30 s deadline: INVALID_ARGUMENT at once on the Python edge, counted so. It was held
    to the caller's deadline (for ever without one: gRPC's unary handler never ran, and gRPC
    ended nothing). Envoy's listener answers it at once too, in its words: no body."""
    got = {e: await asyncio.wait_for(unary_as_stream(ch, [], True, 30.0, f"empty-{e}"), 20)
           for e, ch in engines.items()}
    assert all(code == "INVALID_ARGUMENT" and took < 10 for code, _, took in got.values()), got
    assert "without a request message" in got["python"][1], got
    # the listener's words for an empty body: "(no body)" from the C module, "(no gRPC
    # message)" from the Lua where the module is not built
    assert "do not parse as a KServe v2 request" in got["envoy"][1], got
    await eventually(lambda: any(r.request_id == "empty-python" for r in records), 5,
                     "the empty call recorded")
    assert {r.status for r in records if r.request_id.startswith("empty-")} == {
        "INVALID_ARGUMENT"}
    assert inflight(mesh, "unary") == 0


async def test_a_model_infer_whose_deadline_ends_before_its_message_counts_as_its_caller_saw(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel], records: list[CallRecord],
        tritons: dict[str, TritonProcess]) -> None:
    """A ModelInfer whose caller sends no message before its 0.5 s deadline: its caller sees
    DEADLINE_EXCEEDED on both engines; the Python edge, which now has the call from its
    headers, counts it DEADLINE_EXCEEDED (never CANCELLED, nothing held against a backend:
    no backend was chosen) and nothing stays in flight."""
    got = await asyncio.gather(*(unary_as_stream(ch, [], False, 0.5, f"late-{e}-{i}")
                                 for e, ch in engines.items() for i in range(5)))
    assert {code for code, _, _ in got} == {"DEADLINE_EXCEEDED"}, got
    await eventually(lambda: sum(r.request_id.startswith("late-python-") for r in records)
                     == 5, 5, "the Python edge's late calls recorded")
    mine = [r for r in records if r.request_id.startswith("late-")]
    assert {(r.status, r.chosen) for r in mine} == {("DEADLINE_EXCEEDED", None)}, mine
    assert inflight(mesh, "unary") == 0
    assert not mesh.slow.router.blocked and dead(tritons) == ""


async def test_a_model_infer_its_caller_cancels_before_its_message_counts_cancelled(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel],
        records: list[CallRecord]) -> None:
    """ModelInfer calls without a deadline whose callers cancel them, no message sent, once
    the Python edge holds them: counted CANCELLED, as their callers saw (gRPC ends such a
    call's requests as a half-close before it cancels the handler: not INVALID_ARGUMENT)."""
    infer: Any = engines["python"].stream_stream(INFER_PATH, request_serializer=None,
                                                 response_deserializer=None)
    await cancel_before_a_message(
        mesh, records, "unary", "gone-", "the edge holds the calls",
        lambda requests: [infer(requests(), metadata=(("x-request-id", f"gone-{i}"),))
                          for i in range(3)])


async def cancel_before_a_message(
        mesh: EnvoyMesh, records: list[CallRecord], kind: str, prefix: str, held: str,
        open_calls: Callable[[Callable[[], AsyncIterator[bytes]]], list[Any]]) -> None:
    """Calls opened by ``open_calls`` (given their requests: none ever sent) and cancelled
    once the edges hold them (``kind`` in flight): each ends CANCELLED for its caller, is
    recorded CANCELLED (request ids starting ``prefix``), and none stays in flight."""
    quiet = asyncio.Event()

    async def requests() -> AsyncIterator[bytes]:
        await quiet.wait()  # never set
        yield b""

    calls = open_calls(requests)
    await eventually(lambda: inflight(mesh, kind) == len(calls), 10, held)
    for c in calls:
        c.cancel()
    assert {await c.code() for c in calls} == {grpc.StatusCode.CANCELLED}
    await eventually(lambda: sum(r.request_id.startswith(prefix) for r in records)
                     == len(calls), 5, "the cancelled calls recorded")
    assert {r.status for r in records if r.request_id.startswith(prefix)} == {"CANCELLED"}
    assert inflight(mesh, kind) == 0


def streamer(ch: grpc.aio.Channel) -> Any:
    return ch.stream_stream(STREAM, request_serializer=None, response_deserializer=None)


@contextlib.contextmanager
def drained_calls(monkeypatch: pytest.MonkeyPatch,
                  max_s: float | None = None) -> Iterator[list[Any]]:
    """Every upstream call an edge in this process lets go of (``Upstreams.drain``), drained
    ``max_s`` before it may be cancelled (None: ``DRAIN_MAX_S``)."""
    calls: list[Any] = []
    original = Upstreams.drain

    def drain(self: Upstreams, call: Any, pending: Any, bound: float | None = None) -> Any:
        calls.append(call)
        return original(self, call, pending, max_s if max_s is not None else bound)

    monkeypatch.setattr(Upstreams, "drain", drain)
    yield calls


WEST = (("x-allowed-regions", "r-west"),)  # west-cheap only
STOPPED = 16  # streams whose callers cancelled them, drained as their edge stops
STOP_TOKENS = 40


async def test_an_edge_stopping_lets_the_streams_it_drains_end(
        cfg: MeshConfig, mesh: EnvoyMesh, tritons: dict[str, TritonProcess],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python edge stopped (SIGTERM: ``RunningEdge.stop``, grace 5 s as ``switchyard edge``)
    while it drains 16 LLM streams whose callers cancelled them after their first token: each
    upstream stream runs to its end (OK at the backend), none is cancelled, the backend lives.
    The old edge cancelled every drain at once on stop (``Upstreams.close``), the burst of
    mid-stream cancels Triton 2.51 can die of (server#7368): every one CANCELLED."""
    with drained_calls(monkeypatch) as calls:
        edge = await start_edge(cfg, cfg.edges[0].model_copy(update={"id": "edge-stopping"}),
                                port=0, placement=[f"127.0.0.1:{mesh.placement.port}"],
                                metrics_port=0, dial=lambda endpoint: endpoint)
        try:
            await eventually(lambda: "generate" in edge.router.store.candidates, 20,
                             "the edge has its route tables")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as ch:
                streams = [streamer(ch)(iter([llm_request("generate", list(range(200, 230)),
                                                          STOP_TOKENS)]),
                                        timeout=60, metadata=WEST) for _ in range(STOPPED)]
                await asyncio.wait_for(asyncio.gather(*(c.read() for c in streams)), 30)
                for c in streams:
                    c.cancel()
                await eventually(lambda: len(edge.router.upstreams.draining) == STOPPED, 10,
                                 "the streams drained")
        finally:
            await edge.stop(5.0)
    assert len(calls) == STOPPED
    assert [(await c.code()).name for c in calls] == ["OK"] * STOPPED
    assert dead(tritons) == ""


BURST = 64  # drains past their bound at once, mid-generation
BURST_TOKENS = 120


async def test_drains_past_their_bound_that_still_answer_are_not_cancelled(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel],
        tritons: dict[str, TritonProcess], monkeypatch: pytest.MonkeyPatch) -> None:
    """64 LLM streams whose callers cancelled them after their first token, drained with a
    bound (``DRAIN_MAX_S``, 60 s) shortened to 0.3 s, all past it at once mid-generation:
    none is cancelled at the backend (each still answering is read to its end, OK there) and
    the backend lives. The old drain cancelled every one at its bound: all CANCELLED, and in
    a probe of 128 such drains (400 tokens each) west-cheap died (socket closed) in 1 run
    of 5."""
    with drained_calls(monkeypatch, max_s=0.3) as calls:
        streams = [streamer(engines["python"])(
            iter([llm_request("generate", list(range(200, 230)), BURST_TOKENS)]),
            timeout=60, metadata=WEST) for _ in range(BURST)]
        await asyncio.wait_for(asyncio.gather(*(c.read() for c in streams)), 30)
        for c in streams:
            c.cancel()
        await eventually(lambda: len(calls) == BURST and all(c.done() for c in calls), 30,
                         "every drained stream ended")
    codes = collections.Counter([(await c.code()).name for c in calls])
    assert codes == {"OK": BURST}, codes
    assert dead(tritons) == ""
    got = [r async for r in streamer(engines["python"])(
        iter([llm_request("generate", [1, 2, 3], 4)]), timeout=20, metadata=WEST)]
    assert len(got) == 4


def name_field(name: bytes) -> bytes:
    """A control request whose field 1 (its ``name``) is ``name``, whatever its bytes."""
    assert len(name) < 128
    return bytes([0x0A, len(name)]) + name


CONTROL = "/inference.GRPCInferenceService/"
# (method, request bytes): requests that do not parse as the method's message
UNPARSED = [("ModelMetadata", name_field(b"sum\xff\xfemarize")),  # a name that is not UTF-8
            ("ModelConfig", name_field(b"\xc3")),
            ("ModelReady", name_field(b"summarize\x80")),
            ("ModelStatistics", name_field(b"\xed\xa0\x80")),  # a UTF-16 surrogate
            ("RepositoryIndex", name_field(b"\xff")),
            ("ServerLive", b"\xff\xff\xff\xff"),
            ("ServerMetadata", b"\x0a\x05ab")]  # a field longer than the message


async def test_control_requests_that_do_not_parse_are_invalid_argument(
        engines: dict[str, grpc.aio.Channel]) -> None:
    """Control RPCs whose bytes are not their request (a name that is not UTF-8, truncated
    or garbage bytes), on both engines (Envoy sends them to its slow path): INVALID_ARGUMENT
    naming the message, and the edge still answers. gRPC's deserializer answered UNKNOWN
    "Unexpected <class 'google.protobuf.message.DecodeError'>" (fails on the old code)."""
    got: dict[tuple[str, str], tuple[str, str]] = {}
    for e, ch in engines.items():
        for method, raw in UNPARSED:
            call: Any = ch.unary_unary(CONTROL + method, request_serializer=None,
                                       response_deserializer=None)
            try:
                await call(raw, timeout=10)
                got[e, method] = ("OK", "")
            except grpc.aio.AioRpcError as err:
                got[e, method] = (err.code().name, err.details() or "")
    assert all(code == "INVALID_ARGUMENT" and f"do not parse as inference.{m}Request" in d
               for (_, m), (code, d) in got.items()), got
    for e, ch in engines.items():
        code, _, details = await raw_infer(ch, timeout=10.0)
        assert code == grpc.StatusCode.OK, (e, details)


async def test_a_control_call_that_never_sends_its_message_ends_at_the_idle_timeout(
        engines: dict[str, grpc.aio.Channel], monkeypatch: pytest.MonkeyPatch) -> None:
    """ModelConfig and ServerMetadata calls that send HEADERS and nothing more, no deadline:
    UNAVAILABLE after the stream idle timeout on both engines, as ModelInfer; half-closed
    empty: INVALID_ARGUMENT at once. A unary handler held them for ever (fails on the old
    code)."""
    monkeypatch.setattr(edge_stream, "FIRST_MESSAGE_S", IDLE_S)
    silent = await asyncio.wait_for(asyncio.gather(*(
        unary_as_stream(ch, [], False, None, f"control-{e}", CONTROL + m)
        for e, ch in engines.items() for m in ("ModelConfig", "ServerMetadata"))), 10 * IDLE_S)
    assert all(code == "UNAVAILABLE" and "idle timeout" in details
               and took < 5 * IDLE_S for code, details, took in silent), silent
    empty = [await asyncio.wait_for(unary_as_stream(ch, [], True, 30.0, "empty", CONTROL + m),
                                    20) for ch in engines.values()
             for m in ("ModelConfig", "ServerMetadata")]
    assert all(code == "INVALID_ARGUMENT" and "missing" in details and took < 10
               for code, details, took in empty), empty


async def test_a_stream_its_caller_cancels_before_its_first_message_counts_cancelled(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel],
        records: list[CallRecord]) -> None:
    """ModelStreamInfer calls without a deadline whose callers cancel them before sending a
    message, once the edge holds them, on both engines: counted CANCELLED, as their callers
    saw. gRPC ends such a stream's requests as a half-close before it cancels the handler,
    and the edge counted an empty stream OK (fails on the old code: OK)."""
    await cancel_before_a_message(
        mesh, records, "stream", "left-",
        "the edge holds the streams (Envoy's too: its slow path's from the start)",
        lambda requests: [streamer(ch)(requests(), metadata=(("x-request-id", f"left-{e}-{i}"),))
                          for e, ch in engines.items() for i in range(3)])
