"""Connections to backends: one keepalive gRPC channel per endpoint, raw-bytes calls.

``dial`` maps a backend's endpoint to the address actually dialled (the WAN relay when
inter-region latency is emulated). Requests and responses stay bytes: nothing on this path
parses tensors.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from tritonclient.grpc import service_pb2_grpc

from services.edge.wire import REWRITE_HEADROOM_BYTES

log = structlog.get_logger("switchyard.edge")

# What grpc.aio raises writing to a call its core already finished (not an AioRpcError).
_CALL_ENDED: type[Exception] = getattr(importlib.import_module("grpc._cython.cygrpc"),
                                      "InternalError", RuntimeError)

INFER = "/inference.GRPCInferenceService/ModelInfer"
# Keepalive that Triton's default server policy accepts (its gRPC keepalive flags: no pings
# without a call in flight, and, while the server sends nothing, none closer than 5 min apart
# (--grpc-http2-min-recv-ping-interval-without-data=300000) past 2 strikes): ping only while
# calls are in flight, and only every 5.5 min. At every 10 s, any 30-50 s in which Triton
# sent nothing while a call was in flight (a caller holding its stream open after its last
# token, a long prefill or inference) got the whole connection GOAWAY "too_many_pings":
# every call on it ended at once, a held-open stream OK as if its caller had closed it, a
# unary call UNAVAILABLE held against the backend (tests/integration/
# test_hostile_round4.py). A backend that stops answering is found by the active health
# checks (their own channel) and ``stalls`` for streams, and by the attempt timeouts.
# Pinging idle channels got the same GOAWAY after 30 s without calls. (Pings without data
# stay unlimited, as before: with gRPC's default limit of 2, calls through the emulated WAN
# relay failed in tests/integration/test_security.py; the cause is not pinned down.)
# The ack gets 20 s: a loaded host (load 10+) must not close a healthy connection itself.
TRITON_KEEPALIVE: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 330_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
)
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
# How long a stream the edge let go of is read before it may be cancelled (``Upstreams.drain``;
# the edge sends a backend no deadline of its caller's, README). Past it the stream is
# cancelled only once it has sent nothing for ``DRAIN_SILENT_S`` (a backend stopped or hung:
# nothing is being sent then); a stream still answering runs to its end, the tokens its caller
# asked for (the work is bounded by that and MAX_DRAINING). Cancelling every drain at 60 s:
# 128 drains cut mid-generation at once killed west-cheap (SIGSEGV, server#7368) in 1 run
# of 5 (tests/integration/test_hostile_round6.py).
DRAIN_MAX_S = 60.0
DRAIN_SILENT_S = 2.0  # the silence past DRAIN_MAX_S after which a drain is cancelled
# Streams drained at once past which the edge says so in its log (``drain_backlog``, each
# time the count crosses it); they are still drained, not cancelled. It was the limit (past
# 128 the rest were cancelled at once, to bound the work a caller cancelling many long
# streams buys): 128 long streams cancelled by their callers, then 120 short ones whose
# callers' deadlines ran out, got those cancelled mid-generation and killed east-fast
# (SIGSEGV) (tests/integration/test_hostile_round5.py). A drained stream stays counted on
# its deployment until it ends (``Generation.attempt_ended``), so the next choices see that
# work; what it costs the backend is the generation its caller asked for.
DRAIN_BACKLOG = 128
# Most streams drained at once; past it a stream let go of is cancelled (logged
# ``drains_refused``). Only the edge's memory: drains on a stopped backend last DRAIN_MAX_S
# each, and callers with short deadlines could pile up a task and a call object apiece.
MAX_DRAINING = 4096

@dataclass(slots=True)
class Upstream:
    address: str
    channel: grpc.aio.Channel
    infer: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
    stream: grpc.aio.StreamStreamMultiCallable[bytes, bytes]
    stub: service_pb2_grpc.GRPCInferenceServiceStub
    # Active health checks on a connection of their own: on the calls' connection a check
    # waited behind megabytes of request bytes (8 callers sending 16 MiB requests had every
    # remote backend's check time out and its deployments blocked).
    check_channel: grpc.aio.Channel
    checks: service_pb2_grpc.GRPCInferenceServiceStub


class Upstreams:
    def __init__(self, dial: Callable[[str], str], max_message_bytes: int) -> None:
        self.dial = dial
        self.options = [
            # A request the edge accepted (up to ``max_message_bytes``) grows by the variant
            # name the rewrite appends: at the caller's limit exactly, the channel refused it
            # ("CLIENT: Sent message larger than max") on every attempt.
            ("grpc.max_send_message_length", max_message_bytes + REWRITE_HEADROOM_BYTES),
            ("grpc.max_receive_message_length", max_message_bytes),
            *TRITON_KEEPALIVE,
            # Reconnect soon after a backend restarts. Not grpc.min_reconnect_backoff_ms: in
            # gRPC core that is also the minimum time a connection attempt gets (TCP and
            # the server's HTTP/2 SETTINGS; default 20 s). At 100 ms a backend whose
            # SETTINGS took longer (> ~100 ms away, or a loaded host) could not be reached
            # at all, and its health checks failed at once (tests/integration/
            # test_upstream_connect.py).
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2_000),
            ("grpc.enable_retries", 0),
        ]
        self._by_endpoint: dict[str, Upstream] = {}
        self.draining: set[asyncio.Task[None]] = set()  # streams let go of, still running
        self.drains_refused = 0  # let go of past MAX_DRAINING: cancelled instead

    def get(self, endpoint: str) -> Upstream:
        up = self._by_endpoint.get(endpoint)
        if up is None:
            address = self.dial(endpoint)
            ch = grpc.aio.insecure_channel(address, options=self.options)
            # A channel argument of its own: gRPC shares a connection between channels whose
            # target and arguments are the same.
            checks = grpc.aio.insecure_channel(
                address, options=[*self.options, ("switchyard.purpose", "health-checks")])
            up = Upstream(address, ch,
                          ch.unary_unary(INFER, request_serializer=None,
                                         response_deserializer=None),
                          ch.stream_stream(STREAM, request_serializer=None,
                                           response_deserializer=None),
                          service_pb2_grpc.GRPCInferenceServiceStub(ch), checks,
                          service_pb2_grpc.GRPCInferenceServiceStub(checks))
            self._by_endpoint[endpoint] = up
        return up

    def drain(self, call: grpc.aio.StreamStreamCall[bytes, bytes],
              pending: asyncio.Future[Any] | None,
              max_s: float | None = None) -> asyncio.Task[None] | None:
        """Let go of a stream the edge no longer reads (its caller cancelled or sent a bad
        message, or it moved elsewhere) without cancelling it: half-closed, it is read to its
        end in the background, responses discarded (``pending``: a read already in flight on
        it), and cancelled only past ``max_s`` (``DRAIN_MAX_S`` unless given) once silent for
        ``DRAIN_SILENT_S``. Triton 2.51, the pinned wheel's, can die of SIGSEGV when a client
        cancels a decoupled stream while responses are being sent
        (triton-inference-server/server#7368, fixed in 24.12): through the edge, callers
        cancelling 300-token streams 25-30 ms in killed it within a few hundred streams.
        Past ``DRAIN_BACKLOG`` at once the edge logs it and still drains; past ``MAX_DRAINING``
        (the edge's memory) the call is cancelled.
        Returns the drain's task (the backend still works on the stream until it ends), None
        when nothing runs."""
        if call.done():
            return None
        if len(self.draining) >= MAX_DRAINING:
            if self.drains_refused == 0:
                log.warning("drains_refused", draining=len(self.draining),
                            note="past MAX_DRAINING a stream let go of is cancelled")
            self.drains_refused += 1
            call.cancel()
            return None
        if len(self.draining) == DRAIN_BACKLOG:
            log.warning("drain_backlog", draining=DRAIN_BACKLOG + 1,
                        note="streams let go of are still drained, not cancelled")
        task = asyncio.create_task(_drain(call, pending,
                                          DRAIN_MAX_S if max_s is None else max_s))
        self.draining.add(task)
        task.add_done_callback(self.draining.discard)
        return task

    async def close(self, drain_s: float = 0.0) -> None:
        """Close every channel; the streams still draining first get up to ``drain_s`` to
        end (the edge's shutdown grace): on stop every drain was cancelled at once, the burst
        of mid-stream cancels Triton 2.51 can die of (server#7368;
        tests/integration/test_hostile_round6.py). Those still running then are cancelled."""
        if self.draining and drain_s > 0:
            await asyncio.wait(set(self.draining), timeout=drain_s)
        for task in list(self.draining):
            task.cancel()
        for up in self._by_endpoint.values():
            await up.channel.close()
            await up.check_channel.close()
        self._by_endpoint.clear()


async def _drain(call: grpc.aio.StreamStreamCall[bytes, bytes],
                 pending: asyncio.Future[Any] | None, max_s: float) -> None:
    """Read ``call`` to its end; past ``max_s`` each read gets ``DRAIN_SILENT_S``, and a
    stream silent that long is cancelled (one still answering is not: see ``DRAIN_MAX_S``)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + max_s

    def budget() -> float:
        return max(until - loop.time(), DRAIN_SILENT_S)

    try:
        if pending is not None:
            await asyncio.wait({pending}, timeout=budget())
            if not pending.done():
                return  # silent: cancelled below
            if pending.cancelled() or pending.exception() is not None or (
                    pending.result() is grpc.aio.EOF):
                return
        # a call that already ended (its deadline, a reset) refuses the half-close with
        # grpc's internal ExecuteBatchError: the drain's task died unretrieved, logged
        # as an asyncio error on every stream given up on a stopped backend
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError,
                                 _CALL_ENDED):
            async with asyncio.timeout(budget()):
                await call.done_writing()
        while True:
            async with asyncio.timeout(budget()):
                if await call.read() is grpc.aio.EOF:
                    return
    except (grpc.aio.AioRpcError, TimeoutError):
        pass
    finally:
        if not call.done():
            call.cancel()
