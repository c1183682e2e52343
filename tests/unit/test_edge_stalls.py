"""Streams stuck on a backend that stopped answering (``services/edge/stalls.py``): given up
only when silent *and* the backend fails its health checks unreachable; fake upstreams and
an injected clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest

from placement.errors import BackendFailed
from services.edge.router import CallRecord
from services.edge.stalls import SILENT_S, StallWatch
from services.edge.stream import route_stream
from tests.mesh_harness import eventually
from tests.unit.test_edge_hostile_limits import Context, StreamUpstream, big_messages
from tests.unit.test_edge_resilience import Clock, cand, make_router


class Now:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def test_only_attempts_silent_long_enough_are_given_up() -> None:
    now = Now()
    stalls = StallWatch(now)
    quiet, talking, elsewhere = stalls.watch("b0"), stalls.watch("b0"), stalls.watch("b1")
    now.t = SILENT_S
    talking.heard(now.t - 0.1)  # a response 100 ms ago: the backend is alive
    assert stalls.sweep("b0", "DEADLINE_EXCEEDED") == 1
    assert quiet.aborted.done() and "b0 sent nothing for 2.0 s" in quiet.aborted.result()
    assert "DEADLINE_EXCEEDED" in quiet.aborted.result()
    assert not talking.aborted.done() and not elsewhere.aborted.done()
    assert stalls.sweep("b0", "again") == 0 and stalls.aborted == 1  # once each
    for w in (quiet, talking, elsewhere):
        stalls.done(w)
    assert stalls.watching("b0") == stalls.watching("b1") == 0
    assert talking.aborted.cancelled()  # nothing waits on a finished attempt's watch


async def one_request_then_wait(opened: asyncio.Event) -> AsyncIterator[bytes]:
    """A caller that sends one request and keeps its stream open (no half-close)."""
    async for r in big_messages(1, 1024):
        yield r
    opened.set()
    await asyncio.Event().wait()


async def test_a_stream_whose_backend_falls_silent_and_fails_checks_ends_unavailable() -> None:
    """The backend answered once, then went silent (stopped, hung): the stream's read waited
    for the caller's deadline. Once the checks find the backend unreachable, the attempt is
    given up: a stream that cannot move ends UNAVAILABLE saying why, its upstream drained."""
    clock = Clock()
    router, _, done = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)], {}, clock)
    up = StreamUpstream(answer=True)  # one response per request: then silent
    router.upstreams = up  # type: ignore[assignment]
    opened, got = asyncio.Event(), list[bytes]()

    async def caller() -> None:
        responses = route_stream(router, one_request_then_wait(opened), [("x-slo-ms", "100")],
                                 None, CallRecord("", ""), Context())  # type: ignore[arg-type]
        async with contextlib.aclosing(responses):
            async for r in responses:
                got.append(r)

    task = asyncio.create_task(caller())
    await eventually(lambda: got and router.stalls.watching("b0") == 1, 10,
                     "the stream's first response, its attempt watched", poll_s=0)  # turns
    clock.t += SILENT_S - 0.5
    assert router.stalls.sweep("b0", "DEADLINE_EXCEEDED") == 0  # not silent long enough
    clock.t += 0.5
    assert router.stalls.sweep("b0", "DEADLINE_EXCEEDED") == 1
    with pytest.raises(BackendFailed) as err:
        await task
    assert err.value.grpc_code == "UNAVAILABLE"
    assert "b0 sent nothing for 2.0 s and fails its health checks" in err.value.message
    assert got == [b"resp"] and [e for e, _ in up.streams] == ["ep0"]  # committed: not moved
    assert up.let_go == [up.streams[0][1]] and router.stalls.watching("b0") == 0
    assert [r.status for r in done] == ["UNAVAILABLE"]


async def test_a_stream_still_receiving_is_not_given_up() -> None:
    clock = Clock()
    router, _, _ = make_router([cand(0, 1e-6, 5)], {}, clock)
    up = StreamUpstream(answer=True)
    router.upstreams = up  # type: ignore[assignment]
    sent = asyncio.Queue[bytes]()
    got = list[bytes]()

    async def requests() -> AsyncIterator[bytes]:
        while True:
            yield await sent.get()

    async def caller() -> None:
        responses = route_stream(router, requests(), [("x-slo-ms", "100")], None,
                                 CallRecord("", ""), Context())  # type: ignore[arg-type]
        async with contextlib.aclosing(responses):
            async for r in responses:
                got.append(r)

    task = asyncio.create_task(caller())
    for i in range(1, 4):  # a response every 1.5 s of the edge's clock
        async for r in big_messages(1, 1024):
            await sent.put(r)
        await eventually(lambda: len(got) >= i, 10, f"response {i} read",  # noqa: B023
                         poll_s=0)  # loop turns (awaited in this iteration: ``i`` is its own)
        clock.t += 1.5
        assert router.stalls.sweep("b0", "DEADLINE_EXCEEDED") == 0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert got == [b"resp"] * 3 and router.stalls.aborted == 0


async def test_the_health_checker_gives_up_only_on_a_backend_it_counts_failing() -> None:
    """One unreachable check does not make a backend failing (``unhealthy_after`` = 2): its
    silent streams wait; the second does, and they are given up. A backend that answers
    "not ready" (shutting down, finishing what it has) never is."""
    from services.edge.control import HealthChecker

    clock = Clock()
    router, _, _ = make_router([cand(0, 1e-6, 5), cand(1, 2e-6, 5)], {}, clock)
    answers: dict[str, object] = {"ep0": grpc.StatusCode.DEADLINE_EXCEEDED, "ep1": False}

    class Checks:
        def __init__(self, endpoint: str) -> None:
            self.endpoint = endpoint
            self.checks = self

        async def ServerReady(self, _req: object, timeout: float) -> object:
            a = answers[self.endpoint]
            if isinstance(a, grpc.StatusCode):
                raise grpc.aio.AioRpcError(a, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                           details="Deadline Exceeded")
            return type("Ready", (), {"ready": a})()

    class Ups:
        def get(self, endpoint: str) -> Checks:
            return Checks(endpoint)

    class Link:
        def __init__(self) -> None:
            self.rtt_ms: dict[str, float] = {}

    given_up: list[tuple[str, int]] = []
    checker = HealthChecker(router.store, Ups(), router.health, Link(),  # type: ignore[arg-type]
                            stalls=router.stalls,
                            given_up=lambda b, n: given_up.append((b, n)))
    dead, shutting = router.stalls.watch("b0"), router.stalls.watch("b1")
    clock.t += SILENT_S
    await checker.check("b0", "ep0")
    await checker.check("b1", "ep1")
    assert not dead.aborted.done()  # one failed check is not yet failing
    await checker.check("b0", "ep0")
    await checker.check("b1", "ep1")
    assert router.health.failing("b0") and router.health.failing("b1")
    assert dead.aborted.done() and not shutting.aborted.done()
    assert given_up == [("b0", 1)]  # the metric's increment
