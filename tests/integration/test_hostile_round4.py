"""A hostile caller against the edge, round 4: what earlier rounds (test_edge_hostile,
test_hostile_engines, test_envoy_stream_hostile, test_envoy_hostile) left.

One mesh for the module, both engines: real Triton backends, placement serving ADS, a node
agent, the co-located Python edge (``<edge>-slow``, called directly as *the Python edge*, the
same ``services.edge`` a Python-engine mesh runs) and a real Envoy driven by placement (a
stream is its slow path's from its first message: README, "Envoy edges").
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest

from services.backends.triton import TritonProcess
from services.edge.router import CALL_SILENT_S, CallRecord
from services.edge.tokens import llm_request
from services.edge.upstream import STREAM
from tests.envoy_harness import EnvoyMesh, dead, hostile_fixtures
from tests.mesh_harness import INFER_PATH as INFER
from tests.mesh_harness import eventually, raw_infer, request_bytes

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


cfg, mesh, engines, records = hostile_fixtures("hostile4")


def envoy_ejections(mesh: EnvoyMesh) -> int:
    """Envoy's outlier ejections so far, every deployment cluster."""
    return sum(int(line.rpartition(": ")[2]) for line in mesh.envoy.admin(
        "/stats?filter=outlier_detection.ejections_enforced_total").splitlines()
        if line.startswith("cluster.dep_"))


DEADLINE_STREAMS = 120
# Generations longer than any deadline below, on the fastest backend too: a stream that
# finished just at its deadline could be OK at the edge and DEADLINE_EXCEEDED at its caller.
TOKENS = 120


async def test_streams_whose_callers_deadline_expires_mid_generation_leave_backends_alive(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel], tritons: dict[str, TritonProcess],
        records: list[CallRecord]) -> None:
    """Callers whose own deadlines run out mid-generation (50-190 ms into a 120-token
    stream, ~500 ms on west-cheap), half on each engine, get DEADLINE_EXCEEDED at their
    deadline, and the backends serving them live on. The Python edge (an Envoy's slow path
    too) gave the upstream stream the caller's deadline, so gRPC cancelled it at Triton when
    it expired, mid-generation: Triton 2.51 dies of such cancels (SIGSEGV, server#7368); on
    the old edge a generate backend died in 2 runs of 3 (the rest of the streams then
    UNAVAILABLE). The attempt is now let go of as a caller's cancel is: drained to its end,
    not cancelled."""
    statuses: list[tuple[str, float]] = []
    ejected = envoy_ejections(mesh)
    calls: dict[str, Any] = {
        e: ch.stream_stream(STREAM, request_serializer=None, response_deserializer=None)
        for e, ch in engines.items()}
    for i in range(DEADLINE_STREAMS):
        stream = calls["python" if i % 2 else "envoy"]
        deadline = 0.05 + (i // 2 % 8) * 0.02
        t0 = time.monotonic()
        c = stream(iter([llm_request("generate", list(range(100, 120)), TOKENS)]),
                   timeout=deadline, metadata=(("x-request-id", f"deadline-{i}"),))
        try:
            async for _ in c:
                pass
            statuses.append(("OK", 0.0))
        except grpc.aio.AioRpcError as err:
            statuses.append((err.code().name, time.monotonic() - t0 - deadline))
    router = mesh.slow.router
    await eventually(lambda: not router.upstreams.draining, 60,
                     "every let-go stream ran to its end")
    assert dead(tritons) == ""
    assert {s for s, _ in statuses} <= {"DEADLINE_EXCEEDED", "OK"}, statuses
    assert sum(s == "DEADLINE_EXCEEDED" for s, _ in statuses) > DEADLINE_STREAMS // 2, statuses
    assert max(late for _, late in statuses) < 2.0, statuses  # ended at the deadline
    # What the edge counts: each stream once, with the status its caller got (a stream
    # whose deadline ran out before the edge's handler ran is not recorded at all); nothing
    # left in flight, no backend held against the callers' deadlines, on either engine.
    await eventually(lambda: sum(r.request_id.startswith("deadline-") for r in records)
                     >= DEADLINE_STREAMS - 4, 10, "the streams recorded")
    mine = {r.request_id: r.status for r in records if r.request_id.startswith("deadline-")}
    differ = {k: (v, statuses[int(k.rpartition("-")[2])]) for k, v in mine.items()
              if statuses[int(k.rpartition("-")[2])][0] != v}
    assert not differ, differ
    await eventually(lambda: sum(router.streams.inflight.values()) == 0, 10,
                     f"no stream in flight: {router.streams.inflight}")
    assert sum(router.inflight.values()) == 0, router.inflight
    assert not router.blocked and envoy_ejections(mesh) == ejected
    for stream in calls.values():  # still served, on both engines
        got = [r async for r in stream(iter([llm_request("generate", [1, 2, 3], 4)]),
                                       timeout=20)]
        assert len(got) == 4


HELD_S = 60.0  # past the 30-50 s after which Triton sent the edge's pinging connection away


async def test_a_stream_its_caller_holds_open_lives_until_its_deadline(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel], records: list[CallRecord]) -> None:
    """A caller that gets its 4 tokens and keeps the stream open without a word (it may send
    another request) sees the stream end at its own deadline, DEADLINE_EXCEEDED, on both
    engines. The edge pinged its connection to the backend every 10 s while a call was in
    flight; Triton's default policy sends a client that pings more often than every 5 min
    without data away (GOAWAY too_many_pings, 2 strikes), so 30-50 s into the silence the
    connection closed under every call on it: both streams ended OK ~30 s in, their callers
    never having closed them (a silent unary call there ended UNAVAILABLE, held against the
    backend). Fails on the old edge (OK after ~30 s)."""
    async def held(ch: grpc.aio.Channel, request_id: str) -> tuple[str, int, float]:
        stream: Any = ch.stream_stream(STREAM, request_serializer=None,
                                       response_deserializer=None)
        quiet: asyncio.Event = asyncio.Event()

        async def requests() -> AsyncIterator[bytes]:
            yield llm_request("generate", [1, 2, 3], 4)
            await quiet.wait()  # never set: the caller neither sends more nor half-closes

        t0 = time.monotonic()
        call = stream(requests(), timeout=HELD_S, metadata=(("x-request-id", request_id),))
        n = 0
        try:
            async for _ in call:
                n += 1
        except grpc.aio.AioRpcError:
            pass
        return (await call.code()).name, n, time.monotonic() - t0

    router = mesh.slow.router
    got = await asyncio.gather(*(held(ch, f"held-{e}") for e, ch in engines.items()))
    assert [(code, n) for code, n, _ in got] == [("DEADLINE_EXCEEDED", 4)] * 2, got
    assert all(HELD_S - 1 < took < HELD_S + 5 for _, _, took in got), got
    await eventually(lambda: sum(r.request_id.startswith("held-") for r in records) == 2, 10,
                     "both streams recorded")
    assert {r.status for r in records if r.request_id.startswith("held-")} == {
        "DEADLINE_EXCEEDED"}
    assert not router.blocked


UNCLOSED_S = 5.0


async def test_a_model_infer_never_half_closed_is_answered_by_python_and_waits_on_envoy(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel]) -> None:
    """A ModelInfer whose caller sends its message and never half-closes the call (no gRPC
    library does; a hand-made HTTP/2 client can): a Python edge reads the one message and
    answers at once; Envoy's fast path reads the request to its end (the listener Lua's
    buffered body) and waits for an end that never comes, until the caller's deadline
    (README, "Envoy edges"). Pinned so the README stays true; with a slow-path hint the
    Envoy edge answers at once, as the Python edge does."""
    async def unclosed(ch: grpc.aio.Channel, md: tuple[tuple[str, str], ...]
                       ) -> tuple[str, float]:
        quiet: asyncio.Event = asyncio.Event()

        async def requests() -> AsyncIterator[bytes]:
            yield request_bytes()
            await quiet.wait()  # never set: no half-close

        infer: Any = ch.stream_stream(INFER, request_serializer=None,
                                      response_deserializer=None)
        t0 = time.monotonic()
        call = infer(requests(), timeout=UNCLOSED_S, metadata=md)
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for _ in call:
                pass
        return (await call.code()).name, time.monotonic() - t0

    slow = (("x-min-quality", "0.85"),)
    got = {(e, bool(md)): await unclosed(ch, md) for e, ch in engines.items()
           for md in ((), slow)}
    codes = {k: code for k, (code, _) in got.items()}
    assert codes == {("python", False): "OK", ("python", True): "OK",
                     ("envoy", False): "DEADLINE_EXCEEDED", ("envoy", True): "OK"}, got
    assert got[("envoy", False)][1] > UNCLOSED_S - 0.5, got
    assert all(took < UNCLOSED_S / 2 for k, (code, took) in got.items() if code == "OK"), got


@contextlib.contextmanager
def stopped(triton: TritonProcess) -> Iterator[None]:
    """``triton`` stopped (SIGSTOP: its connections stay open, nothing answers) for the
    block; continued and ready again after it, whatever the block raised."""
    triton.kill(signal.SIGSTOP)
    try:
        yield
    finally:
        triton.kill(signal.SIGCONT)
        triton.wait_ready(90)


GIVE_UP_S = 30.0  # CALL_SILENT_S, the checks finding the backend unreachable, a loaded host


async def test_a_call_without_deadline_on_a_stopped_backend_is_given_up(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel],
        tritons: dict[str, TritonProcess], records: list[CallRecord]) -> None:
    """Last (it stops a backend). A ModelInfer without a deadline whose only deployment is
    on a stopped Triton (SIGSTOP: its connection open, nothing answering), on both engines
    (x-allowed-regions takes Envoy's call to its slow path): once the edge's health checks
    find the backend unreachable and the attempt has waited CALL_SILENT_S, it is given up,
    UNAVAILABLE saying why. The 10 s keepalive pings found such a backend (~12 s); at
    every 5.5 min (test_a_stream_its_caller_holds_open_...) nothing else did, and the call
    waited ~6 min: fails at ccb64b4 (not given up within 30 s)."""
    md = [("x-allowed-regions", "r-west"), ("x-request-id", "stopped")]
    for ch in engines.values():  # the connection to west-cheap is up when it stops
        code, tr, _ = await raw_infer(ch, md[:1], timeout=20)
        assert code is grpc.StatusCode.OK and tr["x-served-by"].startswith("west-cheap/"), tr
    with stopped(tritons["west-cheap"]):
        t0 = time.monotonic()
        got = await asyncio.wait_for(asyncio.gather(*(
            raw_infer(ch, md, timeout=None) for ch in engines.values())), GIVE_UP_S)
        took = time.monotonic() - t0
    assert [code.name for code, _, _ in got] == ["UNAVAILABLE"] * 2, got
    assert all("sent nothing for" in details and "given up" in details
               for _, _, details in got), got
    assert took > CALL_SILENT_S, took  # the attempt waited that long first
    assert [r.status for r in records if r.request_id == "stopped"] == ["UNAVAILABLE"] * 2
