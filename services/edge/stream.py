"""``ModelStreamInfer`` (decoupled / token-streaming models) through the edge.

The stream is routed like a unary call on its first request and then pinned to the chosen
deployment for its whole life. Retries are the attempt policy's (``placement.attempts``, the
one the unary path drives): before the first response reaches the caller, a failed upstream
gets the requests sent so far replayed to the next candidate (while they fit in
``REPLAY_MAX_BYTES``; past it the stream cannot move); after it the call is committed, the
edge keeps no request, and a failure ends the stream with the backend's status, unless the
stream can be resumed.

An LLM stream (its first request carries a prompt, see ``services.edge.tokens``) is chosen
by tokens and measured by its ``generation.Generation`` (``placement.streams``: predicted
TTFT/TPOT against ``x-ttft-ms``/``x-tpot-ms``, cost per token, the session's prefix holder,
bounded load). When its backend fails after tokens were sent, the stream had one request, and
its variant declares ``switchyard_resumable``, the policy may retry it: the next deployment of
the same variant (with ``x-allow-variant-change: true``, of any variant of the model that
declares it too) gets the prompt plus the tokens already delivered and the tokens still owed,
so the caller sees one stream with no token missing or repeated, and ``x-resumed: N`` in the
trailers.

Every later request must parse and name the stream's model; one that does not ends the
stream at once with INVALID_ARGUMENT saying which message and why (the reader watches the
request pump, so a bad message never leaves the stream waiting for a response that cannot
come).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from placement.attempts import RETRYABLE
from placement.errors import (
    BackendFailed,
    DeadlineTooShort,
    InvalidRequest,
    NoHealthyDeployment,
    SwitchyardError,
)
from placement.model import CallContext, Candidate
from placement.pipeline import Decision, Profile
from services.edge import deadline
from services.edge import hints as hint_parser
from services.edge.generation import Generation
from services.edge.router import (
    DEADLINE_SLACK_S,
    AttemptFailed,
    CallRecord,
    Router,
    caller_code,
    gone_hint,
    local_refusal,
    status_name,
)
from services.edge.stalls import Watch
from services.edge.token_stats import StreamMeter
from services.edge.tokens import parse_request
from services.edge.upstream import Upstreams
from services.edge.wire import rewrite_model_name, scan_model_name

# What writing to an upstream stream that has already ended raises; the request stays in
# ``sent`` and is replayed to the next attempt (or the reader reports the failure).
_WRITE_ERRORS = (grpc.aio.AioRpcError, asyncio.InvalidStateError)
# Most request bytes a stream keeps to replay to its next attempt before its first response.
# Past it they are let go and the stream can no longer move (``CallAttempts.unreplayable``).
REPLAY_MAX_BYTES = 32 << 20


class _Pipe:
    """The caller's requests, forwarded to whichever upstream call is current.

    Requests are kept for a replay only while one may happen: until the first response
    reached the caller (then only a resumption's one request is replayed) and up to
    ``REPLAY_MAX_BYTES``. Before, every request of a stream stayed in memory until it
    ended: a long stream of large messages grew the edge without bound."""

    def __init__(self, model: str, first: bytes) -> None:
        self.model = model
        self.sent = [first]  # what the next attempt is sent first
        self.held = len(first)  # bytes in ``sent``
        self.count = 1  # requests the caller has sent
        self.keeping = True  # False once no replay of the caller's requests can happen
        self.replayable = True  # ``sent`` holds every request the caller has sent
        self.call: grpc.aio.StreamStreamCall[bytes, bytes] | None = None
        self.variant = model
        self.client_done = False
        self.lock = asyncio.Lock()  # a replay and the pump's writes never interleave

    def committed(self) -> None:
        """A response reached the caller: the requests are never replayed, let them go."""
        self.keeping, self.sent, self.held = False, [], 0

    def resume(self, request: bytes) -> None:
        """From now on the stream's request is ``request`` (a resumed generation)."""
        self.sent, self.held = [request], len(request)

    def _keep(self, req: bytes) -> None:
        if not self.keeping:
            return
        if self.held + len(req) > REPLAY_MAX_BYTES:
            self.keeping = self.replayable = False
            self.sent, self.held = [], 0
            return
        self.sent.append(req)
        self.held += len(req)

    async def attach(self, call: grpc.aio.StreamStreamCall[bytes, bytes], variant: str) -> None:
        async with self.lock:
            self.call, self.variant = call, variant
            try:
                for req in self.sent:  # shielded: a cancelled write cancels the call
                    await asyncio.shield(call.write(rewrite_model_name(req, self.model,
                                                                       variant)))
                if self.client_done:
                    await call.done_writing()
            except _WRITE_ERRORS:
                pass  # the upstream already failed: its reader says how

    def check(self, req: bytes) -> None:
        n = self.count + 1
        try:
            name = scan_model_name(req)
        except InvalidRequest as exc:
            raise InvalidRequest(f"stream message {n}: {exc.message}") from None
        if name != self.model:
            raise InvalidRequest(f"stream message {n} names model {name!r}; this stream is "
                                 f"pinned to model {self.model!r}")

    async def pump(self, requests: AsyncIterator[bytes]) -> None:
        async for req in requests:
            self.check(req)
            async with self.lock:
                self.count += 1
                self._keep(req)
                assert self.call is not None
                with contextlib.suppress(*_WRITE_ERRORS):  # shielded, as in ``attach``
                    await asyncio.shield(self.call.write(
                        rewrite_model_name(req, self.model, self.variant)))
        async with self.lock:
            self.client_done = True
            assert self.call is not None
            with contextlib.suppress(*_WRITE_ERRORS):
                await self.call.done_writing()


class _Upstream:
    """One attempt's upstream call and the read in flight on it. The edge never cancels it:
    when the stream stops reading it early, ``let_go`` hands it to ``Upstreams.drain``
    (Triton 2.51 can crash when a client cancels a stream mid-generation)."""

    def __init__(self, call: grpc.aio.StreamStreamCall[bytes, bytes], watch: Watch,
                 clock: Callable[[], float]) -> None:
        self.call = call
        self.pending: asyncio.Future[Any] | None = None
        self.watch, self.clock = watch, clock

    async def read(self, pump: asyncio.Task[None]) -> object:
        """The next response, or the pump's error as soon as a request turns out to be bad,
        or UNAVAILABLE when the edge gives the backend up (``stalls``: silent, and failing
        its health checks). The caller's cancel does not cancel the read (it stays
        ``pending`` for the drain)."""
        if self.pending is None:
            self.pending = asyncio.ensure_future(self.call.read())
            self.pending.add_done_callback(_retrieve)
        aborted = self.watch.aborted
        while not self.pending.done():
            if pump.done() and not pump.cancelled() and pump.exception() is not None:
                raise pump.exception()  # type: ignore[misc]
            if aborted.done() and not aborted.cancelled():
                raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                           grpc.aio.Metadata(), details=aborted.result())
            waiting = {self.pending, aborted} if pump.done() else {self.pending, pump, aborted}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        read, self.pending = self.pending, None
        self.watch.heard(self.clock())
        return read.result()

    async def attach(self, pipe: _Pipe, variant: str) -> None:
        """``pipe``'s requests written to this call, unless the edge gives the backend up
        first (``stalls``): a write to a backend that stopped answering (SIGSTOP, a hung
        host) can block before any read, and the give-up, heard only by ``read``, left the
        stream waiting out its caller's deadline (the audit's stream on a stopped Triton:
        given up and counted, never moved, 2 runs of 3). Given up, the writes are cancelled
        (each is shielded: the call's own goes on until it is drained) and ``read`` raises
        the give-up's UNAVAILABLE."""
        attaching = asyncio.ensure_future(pipe.attach(self.call, variant))
        either: set[asyncio.Future[Any]] = {attaching, self.watch.aborted}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not attaching.done():
                attaching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await attaching
        if not attaching.cancelled():
            attaching.result()

    def let_go(self, upstreams: Upstreams) -> asyncio.Task[None] | None:
        """The stream is done with this call: drain it if it still runs (the drain's task)."""
        draining = upstreams.drain(self.call, self.pending)
        self.pending = None
        return draining


def _retrieve(t: asyncio.Future[Any]) -> None:
    if not t.cancelled():
        t.exception()


async def route_stream(router: Router, requests: AsyncIterator[bytes],
                       metadata: Sequence[tuple[str, str | bytes]] | None,
                       time_remaining_s: float | None, record: CallRecord,
                       context: grpc.aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
    start = router.clock()
    tries = router.attempt_policy.start(
        None if time_remaining_s is None else start + time_remaining_s)
    pump_task: asyncio.Task[None] | None = None
    meter = StreamMeter(start, 0)
    goals = hint_parser.StreamHints()
    gen: Generation | None = None
    try:
        try:
            first = await first_message(requests)
            # x-ttft-ms counts from the prompt, not from the stream's open: tritonclient's
            # start_stream opens the call (and gRPC runs this handler) before the caller sends
            # anything, and a prompt sent 2 s later read x-ttft-ms 2010 for a 10 ms first token.
            meter.start = router.clock()
        except StopAsyncIteration:
            # No message: a stream the caller closed empty is OK; one whose deadline ran out
            # first ends as any other stream with too little deadline left, one its caller
            # cancelled CANCELLED (``deadline.cancel_heard``). gRPC ends such a stream's requests as a
            # half-close, up to DEADLINE_SLACK_S before the edge's own deadline (counted from
            # later): through Envoy 3 to 59 ms before it, counted OK (test_hostile_round5).
            now = router.clock()
            if tries.expired(now + DEADLINE_SLACK_S):
                raise DeadlineTooShort(
                    "the stream ended without a message "
                    f"{(tries.deadline or now) - now:.3f} s before the edge's count of the "
                    "caller's deadline, within the edge's slack for the caller's own "
                    f"(router.DEADLINE_SLACK_S, {DEADLINE_SLACK_S:g} s)") from None
            await deadline.cancel_heard(context)
            return
        model, cands, ctx, profile = router.read(first, metadata, time_remaining_s, record)
        # The unary path's rule, asked once the first message is in (the caller may send it
        # late): too little of the deadline left forwards nothing (``DeadlineTooShort``).
        tries.check_time_left(router.clock())
        goals = hint_parser.parse_stream(metadata)
        gen = Generation(router, parse_request(first), goals, meter)
        router.budget.call()
        pipe = _Pipe(model, first)
        heard: float | None = None  # when the last response came
        failure: AttemptFailed | None = None
        while True:
            try:
                c, record.slo_met = gen.choose(profile, cands, ctx)
            except NoHealthyDeployment:
                # Every deployment it may use ejected: the unary path's panic rule.
                panic = router.panic(cands, ctx, functools.partial(_decide, gen, profile, cands))
                if panic is None:
                    if failure is None:
                        raise
                    raise _failed(failure) from None
                c, record.slo_met = panic.candidate, panic.slo_met
            record.chosen = c
            if tries.committed:  # only a resumable stream is retried once committed
                meter.resumed += 1
            tries.started(c)
            tries.check_time_left(router.clock())
            # No deadline on the upstream stream: the caller's own deadline ends the caller's
            # call here (gRPC cancels this handler) and the attempt is let go of, drained,
            # like a cancel. Given the caller's deadline, gRPC cancelled the stream at the
            # backend when it expired, mid-generation: Triton 2.51 dies of that (SIGSEGV,
            # server#7368), and 120 streams whose callers' deadlines ran out 1-8 tokens in
            # killed both generate backends 2 runs of 4 (tests/integration/
            # test_hostile_round4.py).
            # The latency sample for ``c`` starts with its attempt: from the stream's first
            # request, a stream resumed (or moved) after 5 s on a dying (or slow) backend
            # charged the deployment that served its last 0.35 s with 5.35 s.
            began = router.clock()
            call = router.upstreams.get(c.endpoint).stream()
            upstream = _Upstream(call, router.stalls.watch(c.backend_id), router.stalls.clock)
            try:
                await upstream.attach(pipe, c.variant)
            except BaseException:  # the caller cancelled while its requests were replayed
                router.stalls.done(upstream.watch)
                upstream.let_go(router.upstreams)
                raise
            if pump_task is None:
                pump_task = asyncio.create_task(pipe.pump(requests))
            gen.attempt_started(c)
            moved: bytes | None = None
            try:
                while (resp := await upstream.read(pump_task)) is not grpc.aio.EOF:
                    heard = router.clock()
                    gen.response(resp)  # type: ignore[arg-type]
                    if not tries.committed:
                        tries.commit()
                        pipe.committed()
                        gen.committed(c)
                        record.attempts = tries.attempts  # the head says this attempt's number
                        await context.send_initial_metadata(record.trailers())
                    yield resp  # type: ignore[misc]
                    if (moved := gen.moving(c, model, pipe.count)) is not None:
                        # its pace will miss x-tpot-ms: resume elsewhere (the call is let
                        # go of below, not cancelled)
                        pipe.resume(moved)
                        break
            except grpc.aio.AioRpcError as err:
                if (local := local_refusal(err, c)) is not None:
                    raise local from None
                failure = AttemptFailed(c, err)
                if not pipe.replayable:
                    tries.unreplayable()
                owed = await gen.owed(tries, pipe.count, c, cands)
                if owed == 0:
                    # every token of the generation was delivered: the stream is whole, but
                    # its backend failed, and is never recorded as a success
                    router.observe_failure(failure, failure.status in RETRYABLE and not (
                        tries.caller_gave_up(failure.status, router.clock())))
                    return
                verdict = tries.failed(c, failure.status, cands, router.clock(),
                                       router.budget.try_retry)
                router.observe_failure(failure, verdict.blames_backend)
                if not verdict.retry:
                    raise _failed(failure) from None
                ctx = dataclasses.replace(ctx, exclude=tries.exclude,
                                          avoid_regions=tries.avoid_regions)
                if tries.committed and owed:
                    request, refused = await gen.resume(model, c, cands, owed)
                    pipe.resume(request)
                    ctx = dataclasses.replace(ctx, exclude=ctx.exclude | refused)
                continue
            finally:
                router.stalls.done(upstream.watch)
                # a caller's cancel included; a drained attempt holds its slot until it ends
                gen.attempt_ended(c, upstream.let_go(router.upstreams))
            if moved is not None:  # on to the deployment ``gen.moving`` chose
                continue
            router.observe_success(c, stream_latency_ms(began, heard, pipe.count))
            return
    except BaseException as exc:
        record.status = status_name(exc, tries, router.clock())
        raise
    finally:
        if pump_task is not None:
            pump_task.cancel()
            pump_task.add_done_callback(_retrieve)
        if gen is not None:
            gen.close()
        record.stream = meter.trailers(goals.ttft_ms, goals.tpot_ms, record.status == "OK")
        if record.status == "OK" and (goals.ttft_ms is not None or goals.tpot_ms is not None):
            record.slo_met = all(meter.met(goals.ttft_ms, goals.tpot_ms))
        record.finish(tries, (router.clock() - start) * 1000)
        router.on_done(record)


# Longest the edge waits for a call's first message (Envoy's stream idle timeout, the
# listener's STREAM_IDLE_TIMEOUT_S: its fast path ends such a call the same way). Without it
# a caller that opened streams (or ModelInfer calls, ``service.py``) and sent nothing, with no
# deadline, held a handler each for ever, on both engines (a stream is the slow path's from
# its first message; its route turns Envoy's idle timeout off): test_hostile_round5/round6.
FIRST_MESSAGE_S = 300.0


class StreamIdle(SwitchyardError):
    """No first message within ``FIRST_MESSAGE_S``."""

    grpc_code = "UNAVAILABLE"


async def first_message(requests: AsyncIterator[bytes], what: str = "stream") -> bytes:
    """The call's first message, or ``StreamIdle`` after ``FIRST_MESSAGE_S`` without one
    (``StopAsyncIteration``: the caller half-closed it with none)."""
    try:
        async with asyncio.timeout(FIRST_MESSAGE_S):
            return await anext(requests)
    except TimeoutError:
        raise StreamIdle(f"no message on this {what} for {FIRST_MESSAGE_S:g} s (the edge's "
                         f"stream idle timeout)") from None


def stream_latency_ms(began: float, heard: float | None, requests: int) -> float | None:
    """A served stream's latency sample for its deployment (``EdgeStats``, reported to
    placement): from the start of its attempt there (its first request in, for a stream
    served by its first attempt) to its last response, the backend's work; none
    for a stream of several requests (the caller's pauses between them are in that span) or
    without a response. Not to the stream's end: a caller that held its stream open after the
    last token, or until its own deadline, taught the edge and placement that the deployment
    took that long (a 4-token generation of ~50 ms learned as a p95 of 2 s)."""
    if heard is None or requests > 1:
        return None
    return (heard - began) * 1000


def _decide(gen: Generation, profile: Profile, cands: Sequence[Candidate],
            ctx: CallContext) -> Decision:
    c, slo_met = gen.choose(profile, cands, ctx)
    return Decision(c, slo_met, 0)


def _failed(f: AttemptFailed) -> BackendFailed:
    return BackendFailed(f"{f.candidate.deployment_id} stream failed: {f.err.code().name}: "
                         f"{f.err.details()}{gone_hint(f)}", caller_code(f))
