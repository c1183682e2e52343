"""A hostile caller against the edge's limits, with fake upstreams and an injected clock:
messages at the size limit, hints in binary headers or odd number syntax, streams of many
large messages. Each test fails on the code before its fix (see the commit that added it)."""

from __future__ import annotations

import asyncio
import contextlib
import tracemalloc
from collections.abc import AsyncIterator

import grpc
import pytest

from placement.attempts import AttemptPolicy, AttemptSettings
from placement.errors import BackendFailed, InvalidHint, MessageTooLarge
from services.edge import hints as hint_parser
from services.edge.router import CallRecord
from services.edge.stream import REPLAY_MAX_BYTES, route_stream
from services.edge.upstream import DRAIN_BACKLOG, MAX_DRAINING, Upstreams
from services.edge.wire import _MAX_NAME, REWRITE_HEADROOM_BYTES, encode_name_field
from tests.mesh_harness import eventually
from tests.unit.test_edge_resilience import RAW, Clock, FakeUpstream, cand, make_router

# What gRPC's own channel says when a message is over its send limit.
TOO_BIG = grpc.aio.AioRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(),
                               grpc.aio.Metadata(),
                               details="CLIENT: Sent message larger than max (16777233 vs. "
                                       "16777216)")
REGIONS = frozenset({"east", "west"})
PROFILES = ("cheapest", "fastest")


# ... and when a backend's response is over its receive limit.
TOO_BIG_ANSWER = grpc.aio.AioRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(),
                                      grpc.aio.Metadata(),
                                      details="CLIENT: Received message larger than max "
                                              "(16777300 vs. 16777216)")


class Refusing(FakeUpstream):
    """Every attempt refused by the edge's own channel (as an over-limit message is)."""

    error = TOO_BIG

    async def infer(self, raw: bytes, timeout: float | None = None) -> bytes:
        self.calls.append((self._endpoint, raw))
        raise self.error


@pytest.mark.parametrize("error", [TOO_BIG, TOO_BIG_ANSWER])
async def test_the_edges_own_size_refusal_is_not_retried_nor_held_against_a_backend(
        error: grpc.aio.AioRpcError) -> None:
    clock = Clock()
    router, _, done = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)], {}, clock)
    up = Refusing({})
    up.error = error
    router.upstreams = up  # type: ignore[assignment]
    for _ in range(4):  # more than eject_consecutive_failures (3)
        with pytest.raises(MessageTooLarge, match=r"refused the message: (Sent|Received) mess"):
            await router.infer(RAW, [("x-slo-ms", "100")], 2.0, CallRecord("", ""))
    assert [e for e, _ in up.calls] == ["ep0"] * 4  # one attempt per call, never retried
    assert dict(router.blocked) == {}  # no healthy deployment ejected
    assert [r.status for r in done] == ["RESOURCE_EXHAUSTED"] * 4


async def test_a_backends_own_resource_exhausted_is_still_retried() -> None:
    clock = Clock()
    router, up, _ = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)],
                                {"ep0": grpc.StatusCode.RESOURCE_EXHAUSTED, "ep1": b""}, clock)
    assert await router.infer(RAW, [("x-slo-ms", "100")], 2.0, CallRecord("", "")) == b"ep1"
    assert [e for e, _ in up.calls] == ["ep0", "ep1"]


def test_the_upstream_send_limit_leaves_room_for_the_longest_variant_rewrite() -> None:
    limit = 16 << 20
    options = dict(Upstreams(lambda e: e, limit).options)
    assert options["grpc.max_send_message_length"] >= limit + len(
        encode_name_field("v" * _MAX_NAME))
    assert len(encode_name_field("v" * _MAX_NAME)) <= REWRITE_HEADROOM_BYTES


@pytest.mark.parametrize("key", ["x-min-quality-bin", "x-allowed-regions-bin",
                                 "x-max-cost-usd-bin", "x-slo-ms-bin", "x-tpot-ms-bin"])
def test_a_hint_in_a_binary_header_is_refused_naming_it(key: str) -> None:
    with pytest.raises(InvalidHint) as err:
        hint_parser.parse([(key, b"0.9")], REGIONS, PROFILES)
    assert err.value.header == key
    assert key.removesuffix("-bin") in err.value.message and "text header" in err.value.message


def test_other_binary_headers_are_not_hints() -> None:
    p = hint_parser.parse([("x-data-bin", b"\x00\x01"), ("trace-bin", b"\xff")], REGIONS,
                          PROFILES)
    assert p.min_quality == 0.0 and p.slo_ms is None


@pytest.mark.parametrize("value", ["5_0", " 50", "50 ", "0x10", "nan", "inf", "-inf",
                                   "Infinity", "\u0663", "1e", "."])
def test_a_number_hint_is_a_plain_decimal(value: str) -> None:
    with pytest.raises(InvalidHint, match="not a number") as err:
        hint_parser.parse([("x-slo-ms", value)], REGIONS, PROFILES)
    assert err.value.header == "x-slo-ms"


@pytest.mark.parametrize(("value", "expected"), [("50", 50.0), ("0.5", 0.5), (".5", 0.5),
                                                 ("5.", 5.0), ("1e2", 100.0), ("+7", 7.0)])
def test_plain_decimals_still_parse(value: str, expected: float) -> None:
    assert hint_parser.parse([("x-slo-ms", value)], REGIONS, PROFILES).slo_ms == expected


def test_a_negative_zero_cost_cap_is_the_zero_cap() -> None:
    p = hint_parser.parse([("x-max-cost-usd", "-0")], REGIONS, PROFILES)
    assert str(p.max_cost_usd) == "0.0"


# -- streams -------------------------------------------------------------------------------

MIB = 1 << 20


class EchoCall:
    """A fake upstream stream: one response per request written (the request dropped at
    once, as a backend's channel would after sending it), EOF after the caller half-closes;
    ``fail_after`` responses, the stream fails UNAVAILABLE instead of answering."""

    def __init__(self, fail_after: int | None = None, answer: bool = True,
                 tokens: int = 0) -> None:
        self.q: asyncio.Queue[object] = asyncio.Queue()
        self.written = 0
        self.fail_after, self.answer, self.tokens = fail_after, answer, tokens
        self.ended = self.cancelled = self.half_closed = False
        self.read_after_half_close = 0

    async def write(self, req: bytes) -> None:
        self.written += 1
        if self.answer:
            await self.q.put(b"resp")
        for _ in range(self.tokens):  # a generation: many responses to one request
            await self.q.put(b"token")

    async def done_writing(self) -> None:
        self.half_closed = True
        await self.q.put(grpc.aio.EOF if self.fail_after is None else grpc.StatusCode.UNAVAILABLE)

    async def read(self) -> object:
        got = await self.q.get()
        await asyncio.sleep(0)  # a response takes a loop turn to arrive
        if self.half_closed:
            self.read_after_half_close += 1
        if isinstance(got, grpc.StatusCode):
            self.ended = True
            raise grpc.aio.AioRpcError(got, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       details="backend went away")
        if got is grpc.aio.EOF:
            self.ended = True
        return got

    def done(self) -> bool:
        return self.ended or self.cancelled

    def cancel(self) -> bool:
        self.cancelled = True
        return True


class StreamUpstream(FakeUpstream):
    def __init__(self, make: type[EchoCall] | None = None, **kw: object) -> None:
        super().__init__({})
        self.streams: list[tuple[str, EchoCall]] = []
        self.kw = kw
        self.draining: set[asyncio.Task[None]] = set()
        self.let_go: list[EchoCall] = []

    def drain(self, call: EchoCall, pending: asyncio.Future[object] | None
              ) -> asyncio.Task[None] | None:
        """The real ``Upstreams.drain``, recording what the edge let go of."""
        self.let_go.append(call)
        return Upstreams.drain(self, call, pending)  # type: ignore[arg-type]

    async def drained(self) -> None:
        while self.draining:
            await asyncio.wait(set(self.draining), timeout=5)

    def stream(self, timeout: float | None = None) -> EchoCall:
        call = EchoCall(**self.kw)  # type: ignore[arg-type]
        self.streams.append((self._endpoint, call))
        return call


class Context:
    async def send_initial_metadata(self, _md: object) -> None:
        return None


async def big_messages(n: int, size: int) -> AsyncIterator[bytes]:
    """``n`` requests naming model ``m``, each padded to ``size`` bytes (an unknown field)."""
    for _ in range(n):
        pad = size - len(RAW) - 6  # tag (2 bytes), a 4-byte length varint
        yield RAW + b"\x92\x01" + bytes([0x80 | (pad & 0x7F), 0x80 | ((pad >> 7) & 0x7F),
                                         0x80 | ((pad >> 14) & 0x7F), pad >> 21]) + bytes(pad)
        await asyncio.sleep(0)  # the caller's next message arrives on a later loop turn


async def test_a_long_stream_of_large_messages_is_not_kept_at_the_edge() -> None:
    """48 messages of 1 MiB, each answered: once the first response reached the caller no
    request can be replayed, so none is kept (before: all 48 MiB until the stream ended)."""
    clock = Clock()
    router, _, done = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)], {}, clock)
    up = StreamUpstream()
    router.upstreams = up  # type: ignore[assignment]
    tracemalloc.start()
    try:
        got = 0
        async for _ in route_stream(router, big_messages(48, MIB), [("x-slo-ms", "100")], 30.0,
                                    CallRecord("", ""), Context()):  # type: ignore[arg-type]
            got += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == 48 and [r.status for r in done] == ["OK"]
    assert up.streams[0][1].written == 48
    assert peak < 12 * MIB, f"peak {peak / MIB:.1f} MiB traced while streaming 48 MiB"


async def test_a_stream_past_the_replay_limit_is_not_replayed_to_another_backend() -> None:
    """More than ``REPLAY_MAX_BYTES`` sent before any response, then the backend fails: the
    edge kept no copy past the limit, so the stream ends with the backend's status instead of
    moving with part of its requests (and its memory stays bounded)."""
    clock = Clock()
    router, _, done = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)], {}, clock)
    up = StreamUpstream(fail_after=0, answer=False)
    router.upstreams = up  # type: ignore[assignment]
    n = REPLAY_MAX_BYTES // MIB + 8
    tracemalloc.start()
    try:
        with pytest.raises(BackendFailed, match="UNAVAILABLE"):
            async for _ in route_stream(router, big_messages(n, MIB), [("x-slo-ms", "100")],
                                        30.0, CallRecord("", ""),
                                        Context()):  # type: ignore[arg-type]
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [e for e, _ in up.streams] == ["ep0"]  # not replayed elsewhere
    assert up.streams[0][1].written == n
    assert [r.status for r in done] == ["UNAVAILABLE"]
    assert peak < REPLAY_MAX_BYTES + 8 * MIB


async def test_a_stream_under_the_replay_limit_is_still_replayed() -> None:
    clock = Clock()
    router, _, done = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)], {}, clock)
    up = StreamUpstream(fail_after=0, answer=False)
    router.upstreams = up  # type: ignore[assignment]
    with pytest.raises(BackendFailed, match="UNAVAILABLE"):
        async for _ in route_stream(router, big_messages(3, MIB), [("x-slo-ms", "100")], 30.0,
                                    CallRecord("", ""), Context()):  # type: ignore[arg-type]
            pass
    # Both deployments were tried, each sent all three requests.
    assert [(e, c.written) for e, c in up.streams] == [("ep0", 3), ("ep1", 3)]
    assert [r.status for r in done] == ["UNAVAILABLE"]


def test_an_unreplayable_call_cannot_move_unless_it_may_resume() -> None:
    c0, c1 = cand(0, 1e-6, 5), cand(1, 2e-6, 5)
    tries = AttemptPolicy(AttemptSettings()).start(None)
    tries.started(c0)
    tries.unreplayable()
    verdict = tries.failed(c0, "UNAVAILABLE", [c0, c1], 0.0, lambda: True)
    assert not verdict.retry and "replayed" in verdict.reason and verdict.blames_backend
    tries.may_resume()
    assert tries.failed(c1, "UNAVAILABLE", [c0, c1], 0.0, lambda: True).retry


async def test_a_stream_refused_by_the_edges_own_channel_is_not_retried() -> None:
    class Refused(EchoCall):
        async def read(self) -> object:
            raise TOO_BIG

    class Up(StreamUpstream):
        def stream(self, timeout: float | None = None) -> EchoCall:
            call = Refused()
            self.streams.append((self._endpoint, call))
            return call

    router, _, done = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)], {}, Clock())
    up = Up()
    router.upstreams = up  # type: ignore[assignment]
    with pytest.raises(MessageTooLarge):
        async for _ in route_stream(router, big_messages(1, 1024), [("x-slo-ms", "100")], 30.0,
                                    CallRecord("", ""), Context()):  # type: ignore[arg-type]
            pass
    assert [e for e, _ in up.streams] == ["ep0"] and dict(router.blocked) == {}
    assert [r.status for r in done] == ["RESOURCE_EXHAUSTED"]


# -- a stream the caller stops reading: its upstream is let go of, never cancelled ---------


async def test_a_stream_its_caller_cancels_mid_generation_is_drained_not_cancelled() -> None:
    """Triton 2.51 can SIGSEGV when a client cancels a decoupled stream while it sends
    responses (server#7368); through the edge, callers cancelling streams mid-generation killed
    backends. The edge now half-closes the upstream and reads it to its end instead."""
    router, _, done = make_router([cand(0, 1e-6, 5)], {}, Clock())
    up = StreamUpstream(tokens=50)
    router.upstreams = up  # type: ignore[assignment]

    async def caller() -> None:
        async for _ in route_stream(router, big_messages(1, 1024), [("x-slo-ms", "100")],
                                    30.0, CallRecord("", ""),
                                    Context()):  # type: ignore[arg-type]
            await asyncio.Event().wait()  # reads one response, then waits until cancelled

    task = asyncio.create_task(caller())
    await eventually(lambda: up.streams and up.streams[0][1].q.qsize() >= 50, 10,
                     "the upstream's 50 responses wait unread", poll_s=0)  # loop turns
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    call = up.streams[0][1]
    assert up.let_go == [call], "the upstream stream was not handed to the drain"
    await up.drained()
    assert not call.cancelled and call.half_closed and call.ended
    assert call.read_after_half_close >= 49  # read to its end, responses discarded
    assert [r.status for r in done] == ["CANCELLED"]


async def test_a_drained_stream_holds_its_backends_slot_until_the_drain_ends() -> None:
    """A caller cancelling a stream frees nothing on the backend: it still generates the
    rest while the edge drains it. Counted as ended at the cancel, the backend looked idle
    to the next streams' choices (a caller cancelling streams could pile work on it)."""
    router, _, _ = make_router([cand(0, 1e-6, 5)], {}, Clock())
    up = StreamUpstream(tokens=50)
    router.upstreams = up  # type: ignore[assignment]

    first = asyncio.Event()

    async def caller() -> None:
        responses = route_stream(router, big_messages(1, 1024), [("x-slo-ms", "100")], 30.0,
                                 CallRecord("", ""), Context())  # type: ignore[arg-type]
        async with contextlib.aclosing(responses):  # closed when the caller is cancelled
            async for _ in responses:
                first.set()
                await asyncio.Event().wait()

    task = asyncio.create_task(caller())
    await first.wait()  # the caller has its first response: the attempt is running
    dep = cand(0, 1e-6, 5).deployment_id
    assert router.streams.inflight.get(dep) == 1
    call = up.streams[0][1]
    call.q = _Held(call.q)  # the backend's next responses are late: the drain cannot end yet
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert up.let_go == [call] and up.draining
    assert router.streams.inflight.get(dep) == 1, "a drained stream's slot counted as free"
    call.q.release()
    await up.drained()
    assert call.ended and router.streams.inflight.get(dep) == 0


class _Held(asyncio.Queue[object]):
    """A stream's response queue whose reads wait until ``release``."""

    def __init__(self, inner: asyncio.Queue[object]) -> None:
        super().__init__()
        while not inner.empty():
            self.put_nowait(inner.get_nowait())
        self.open = asyncio.Event()

    def release(self) -> None:
        self.open.set()

    async def get(self) -> object:
        await self.open.wait()
        return await super().get()


async def test_a_bad_later_message_ends_the_stream_and_drains_its_upstream() -> None:
    router, _, done = make_router([cand(0, 1e-6, 5)], {}, Clock())
    up = StreamUpstream(tokens=20, answer=False)
    router.upstreams = up  # type: ignore[assignment]

    async def requests() -> AsyncIterator[bytes]:
        async for r in big_messages(1, 1024):
            yield r
        await asyncio.sleep(0)
        yield b"\xff\xff"  # does not parse

    from placement.errors import InvalidRequest
    with pytest.raises(InvalidRequest, match="stream message 2"):
        async for _ in route_stream(router, requests(), [("x-slo-ms", "100")], 30.0,
                                    CallRecord("", ""), Context()):  # type: ignore[arg-type]
            pass
    await up.drained()
    call = up.streams[0][1]
    assert up.let_go == [call] and not call.cancelled and call.ended
    assert [r.status for r in done] == ["INVALID_ARGUMENT"]


class Endless(EchoCall):
    """A stream that never ends, half-closed or not."""

    async def done_writing(self) -> None:
        self.half_closed = True


async def test_a_drain_that_outlasts_its_bound_is_cancelled() -> None:
    call = Endless(answer=False)
    up = Upstreams(lambda e: e, 1024)
    up.drain(call, None, max_s=0.05)  # type: ignore[arg-type]
    await asyncio.wait(set(up.draining), timeout=5)
    assert call.cancelled and not up.draining


async def test_past_the_drain_backlog_a_stream_let_go_of_is_still_drained() -> None:
    """Many streams let go of at once are not cancelled at the backend (Triton 2.51 dies of
    such cancels, server#7368): past ``DRAIN_BACKLOG`` (128) the old edge cancelled the
    rest, and 128 long streams then 120 short ones killed a backend
    (tests/integration/test_hostile_round5.py). Only past ``MAX_DRAINING`` (the edge's
    memory) is a stream cancelled. The edge stopping still ends every drain."""
    up = Upstreams(lambda e: e, 1024)
    calls = [Endless(answer=False) for _ in range(MAX_DRAINING + 2)]
    for call in calls:
        up.drain(call, None)  # type: ignore[arg-type]
    assert len(up.draining) == MAX_DRAINING and up.drains_refused == 2
    assert not any(c.cancelled for c in calls[:MAX_DRAINING]) and DRAIN_BACKLOG < MAX_DRAINING
    assert [c.cancelled for c in calls[-2:]] == [True, True]
    tasks = set(up.draining)
    await up.close()  # the edge stopping: no drain outlives it (its channels cancel the calls)
    await asyncio.wait(tasks, timeout=5)
    assert all(t.done() for t in tasks) and not up.draining


# -- a large request's attempt gets the time to cross the wire -----------------------------


class Timed(FakeUpstream):
    """Records each attempt's timeout."""

    def __init__(self) -> None:
        super().__init__({})
        self.timeouts: list[float | None] = []

    async def infer(self, raw: bytes, timeout: float | None = None) -> bytes:
        self.timeouts.append(timeout)
        return b"ok"


def test_an_attempts_bound_allows_its_requests_bytes() -> None:
    settings = AttemptSettings()
    tries = AttemptPolicy(settings).start(None)
    c = cand(0, 1e-6, 5)
    assert tries.next_timeout(c, 0.0) == settings.min_attempt_timeout_s
    assert tries.next_timeout(c, 0.0, size_bytes=16 * MIB) == pytest.approx(
        settings.min_attempt_timeout_s + 16 * MIB / settings.min_transfer_bytes_per_s)


async def test_a_16_mib_request_is_not_cut_at_the_usual_attempt_timeout() -> None:
    """A p95 is learned from the usual calls: a 16 MiB request (within max_message_bytes) cut
    at 250 ms was retried, and sustained, such calls ejected healthy deployments."""
    router, _, _ = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)], {}, Clock())
    up = Timed()
    router.upstreams = up  # type: ignore[assignment]
    big = await anext(big_messages(1, 16 * MIB))
    await router.infer(RAW, [("x-slo-ms", "100")], 30.0, CallRecord("", ""))
    await router.infer(big, [("x-slo-ms", "100")], 30.0, CallRecord("", ""))
    small_t, big_t = up.timeouts
    assert small_t == pytest.approx(0.25, abs=1e-3) and big_t is not None and big_t > 2.0


async def test_health_checks_have_a_connection_of_their_own() -> None:
    """On the calls' connection a check waited behind megabytes of request bytes: 8 callers
    sending 16 MiB requests had every remote backend's check time out. A real gRPC server on
    127.0.0.1 sees the calls' stub and the checks' stub come from two connections."""
    from tritonclient.grpc import service_pb2

    peers: list[str] = []

    async def ready(_req: service_pb2.ServerReadyRequest,
                    context: grpc.aio.ServicerContext[object, object]
                    ) -> service_pb2.ServerReadyResponse:
        peers.append(context.peer())
        return service_pb2.ServerReadyResponse(ready=True)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ServerReady": grpc.unary_unary_rpc_method_handler(
            ready, request_deserializer=service_pb2.ServerReadyRequest.FromString,
            response_serializer=service_pb2.ServerReadyResponse.SerializeToString)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ups = Upstreams(lambda e: e, 1024)
    try:
        up = ups.get(f"127.0.0.1:{port}")
        for stub in (up.stub, up.checks, up.stub, up.checks):
            assert (await stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=5)).ready
        assert peers[0] == peers[2] and peers[1] == peers[3] and peers[0] != peers[1], peers
    finally:
        await ups.close()
        await server.stop(None)
