"""The edge against callers that misbehave: bad stream messages, their own tiny deadlines,
cancellation. Real Triton backends, real placement, agent and edge; raw grpc and tritonclient.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import pytest_asyncio
import tritonclient.grpc as tc
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from services.api.switchyard.v1 import edge_pb2, edge_pb2_grpc
from services.config import MeshConfig
from services.edge.router import CallRecord
from services.edge.tokens import llm_request
from services.edge.upstream import INFER, STREAM
from tests.mesh_harness import (
    Mesh,
    call,
    eventually,
    mesh_config,
    padded,
    raw_infer,
    request_bytes,
    summarize_input,
    why,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    # Tight-SLO calls are hedged: the hedge path must not leak tasks either. Ejections last a
    # minute: the panic test's must not expire before its call on a loaded host.
    return mesh_config(tmp_path_factory.mktemp("hostile"), hedge_max_slo_ms=50,
                       eject_base_s=60)


@pytest.fixture
def records(mesh: Mesh) -> Iterator[list[CallRecord]]:
    """Every CallRecord the edge finishes during the test (what is logged and counted)."""
    got: list[CallRecord] = []
    router = mesh.edge.router
    original = router.on_done

    def done(rec: CallRecord) -> None:
        got.append(rec)
        original(rec)

    router.on_done = done
    yield got
    router.on_done = original


@pytest_asyncio.fixture(loop_scope="module")
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What asyncio reports to the loop's exception handler (e.g. "Task exception was never
    retrieved") during the test."""
    loop = asyncio.get_running_loop()
    got: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: got.append(context))
    yield got
    loop.set_exception_handler(previous)


def generate_request(model: str = "generate") -> bytes:
    req = service_pb2.ModelInferRequest(model_name=model)
    x = req.inputs.add()
    x.name, x.datatype = "INPUT0", "FP32"
    x.shape.extend([1, 16])
    req.raw_input_contents.append(np.ones((1, 16), np.float32).tobytes())
    return req.SerializeToString()


async def ejected(mesh: Mesh) -> list[str]:
    """Deployments the edge says it will not use, through its admin RPC."""
    async with grpc.aio.insecure_channel(mesh.edge_address) as ch:
        status = await edge_pb2_grpc.EdgeAdminStub(ch).Status(edge_pb2.EdgeStatusRequest())
    return [d.deployment_id for d in status.deployments if d.ejected]


BAD_STREAM_DEADLINE_S = 20.0


@pytest.mark.parametrize(("second", "says"), [
    (b"\xff\xff\xff", "stream message 2: request bytes are truncated"),
    (b"", "stream message 2: ModelInferRequest.model_name is empty"),
    (generate_request("summarize"), "stream message 2 names model 'summarize'"),
])
async def test_a_bad_later_stream_message_ends_the_stream_at_once(
        mesh: Mesh, records: list[CallRecord], second: bytes, says: str) -> None:
    async with grpc.aio.insecure_channel(mesh.edge_address) as ch:
        stream = ch.stream_stream(STREAM, request_serializer=None, response_deserializer=None)
        t0 = time.monotonic()
        call = stream(iter([generate_request(), second]), timeout=BAD_STREAM_DEADLINE_S,
                      metadata=(("x-request-id", "bad-stream"),))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
        elapsed = time.monotonic() - t0
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, err.value
    assert says in (err.value.details() or "")
    # Ended by the edge, not by the deadline: half the deadline leaves a loaded host room.
    assert elapsed < BAD_STREAM_DEADLINE_S / 2, (
        f"took {elapsed:.1f} s: the stream waited for its deadline")
    await eventually(lambda: any(r.request_id == "bad-stream" for r in records), 5)
    rec = next(r for r in records if r.request_id == "bad-stream")
    assert rec.status == "INVALID_ARGUMENT"


async def test_a_stream_is_recorded_with_its_real_final_status(
        mesh: Mesh, records: list[CallRecord]) -> None:
    async with grpc.aio.insecure_channel(mesh.edge_address) as ch:
        stream = ch.stream_stream(STREAM, request_serializer=None, response_deserializer=None)
        ok = stream(iter([generate_request()]), timeout=20,
                    metadata=(("x-request-id", "stream-ok"),))
        assert len([r async for r in ok]) == 4  # the decoupled model's 4 tokens
        # A long generation (500 tokens, >= 2 ms each): the cancel lands while it runs.
        # (A 4-token stream could end OK at the edge before the cancel reached it.)
        cancelled = stream(iter([llm_request("generate", list(range(100, 120)), 500)]),
                           timeout=20, metadata=(("x-request-id", "stream-cancel"),))
        await cancelled.read()  # the first token: the stream is under way
        cancelled.cancel()
    await eventually(lambda: {"stream-ok", "stream-cancel"}
                     <= {r.request_id for r in records}, 5)
    status = {r.request_id: r.status for r in records}
    assert status["stream-ok"] == "OK"
    assert status["stream-cancel"] == "CANCELLED"


async def test_callers_own_tiny_deadlines_eject_nothing_and_leak_no_task(
        mesh: Mesh, records: list[CallRecord], loop_errors: list[dict[str, Any]]) -> None:
    def tiny_deadline_calls() -> list[str]:
        codes = []
        client = mesh.client()
        for slo in ("20", "400") * 10:  # would be hedged and not
            try:
                client.infer("summarize", [summarize_input()], client_timeout=0.001,
                             headers={"x-slo-ms": slo})
                codes.append("OK")
            except InferenceServerException as exc:
                codes.append(str(exc.status()))
        client.close()
        return codes

    codes = await asyncio.to_thread(tiny_deadline_calls)
    assert "StatusCode.DEADLINE_EXCEEDED" in codes, codes
    # Under 2 ms left (attempts.MIN_REMAINING_S): stopped at the edge, nothing forwarded.
    # Forwarded, such calls crashed the real tritonserver east-fast (SIGSEGV; Triton 2.51,
    # triton-inference-server/server#7368), and this test then saw the 17 ms call below
    # go to central-cheap and the next test every east-fast deployment blocked.
    # (A call whose deadline passed before the edge's handler ran is not recorded at all.)
    tiny = [r for r in records if r.model == "summarize"]
    assert all(r.chosen is None for r in tiny), [
        (r.request_id, r.status, r.chosen and r.chosen.deployment_id) for r in tiny]
    # Let any attempt under way finish.
    await eventually(lambda: sum(mesh.edge.router.inflight.values()) == 0, 5)
    await asyncio.sleep(0)  # one loop turn: the finished attempts' done callbacks run
    gc.collect()  # an unretrieved task exception is reported when the task is collected
    assert await ejected(mesh) == [], why(mesh)
    # The healthy local backend still serves (a 17 ms call may be hedged: x-attempts may be
    # 2, both on east-fast). (Asked in its own region:
    # which deployment a 17 ms call picks among all depends on the host's load, which moves
    # every p95; the call is about east-fast being alive and not blocked.)
    local = [("x-slo-ms", "17"), ("x-allowed-regions", "r-east")]
    before = why(mesh, local)
    tr = await asyncio.to_thread(call, mesh, local)
    assert tr["x-served-by"].startswith("east-fast/"), (
        f"{tr}\nbefore the call: {before}\nafter: {why(mesh, local)}")
    assert mesh.tritons["east-fast"].alive
    leaked = [c for c in loop_errors if "never retrieved" in str(c.get("message"))]
    assert leaked == [], leaked
    assert {r.status for r in records if r.model == "summarize"} <= {"OK", "DEADLINE_EXCEEDED"}


async def test_cancelled_calls_eject_nothing(mesh: Mesh, records: list[CallRecord]) -> None:
    raw = service_pb2.ModelInferRequest(model_name="summarize")
    x = raw.inputs.add()
    x.name, x.datatype = "INPUT0", "FP32"
    x.shape.extend([1, 16])
    raw.raw_input_contents.append(np.ones((1, 16), np.float32).tobytes())
    body = raw.SerializeToString()
    router = mesh.edge.router
    async with grpc.aio.insecure_channel(mesh.edge_address) as ch:
        infer = ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)
        for i in range(6):
            c = infer(body, timeout=10, metadata=(("x-slo-ms", "400"), ("x-min-quality", "0.85"),
                                                  ("x-request-id", f"cancel-{i}")))
            await eventually(lambda: sum(router.inflight.values()) > 0, 5, poll_s=0.0005)
            c.cancel()  # while the edge's attempt is under way
            await eventually(lambda i=i: any(r.request_id == f"cancel-{i}" for r in records), 5)
    await eventually(lambda: sum(router.inflight.values()) == 0, 5)
    assert await ejected(mesh) == [], why(mesh)
    statuses = [r.status for r in records if r.request_id.startswith("cancel-")]
    assert statuses == ["CANCELLED"] * 6, statuses
    before = why(mesh, [("x-slo-ms", "400")])
    tr = await asyncio.to_thread(call, mesh, [("x-slo-ms", "400")])
    assert tr["x-served-by"] == "central-cheap/summarize-small", (
        f"{tr}\nbefore the call: {before}\nafter: {why(mesh, [('x-slo-ms', '400')])}")



def triton_counts(mesh: Mesh) -> dict[str, int]:
    """Requests each backend's Triton has seen (succeeded or failed), from its own inference
    statistics. (The decoupled ``generate`` model's python backend reports none, so streams
    here call ``summarize``: Triton serves a non-decoupled model on ModelStreamInfer too.)"""
    counts = {}
    for b in mesh.cfg.backends:
        client = tc.InferenceServerClient(mesh.tritons[b.id].endpoint)
        try:
            stats = client.get_inference_statistics("", as_json=True)
        finally:
            client.close()
        counts[b.id] = sum(int(m.get("inference_stats", {}).get(k, {}).get("count", 0))
                           for m in stats.get("model_stats", []) for k in ("success", "fail"))
    return counts


async def settled_counts(mesh: Mesh) -> dict[str, int]:
    """``triton_counts`` once two reads 0.5 s apart agree: a call an earlier test cancelled
    may still be running in Triton and be counted after this test's first read."""
    last: dict[str, int] | None = None

    async def settled() -> bool:
        nonlocal last
        now = await asyncio.to_thread(triton_counts, mesh)
        same, last = now == last, now
        return same

    await eventually(settled, 20, "Triton's request counts settle", poll_s=0.5)
    assert last is not None
    return last


async def test_a_stream_with_a_tiny_deadline_reaches_no_backend(
        mesh: Mesh, records: list[CallRecord]) -> None:
    """Streams follow the unary path's rule (``attempts.MIN_REMAINING_S``): a tritonclient
    stream with a 1 ms deadline ends DEADLINE_EXCEEDED and nothing reaches Triton (forwarded,
    such streams are what crashes Triton 2.51: server#7368)."""
    before = await settled_counts(mesh)

    def tiny_streams() -> list[str]:
        codes: list[str] = []
        for i in range(20):
            client = mesh.client()
            got: list[str] = []
            client.start_stream(lambda result, error, got=got: got.append(
                "OK" if error is None else str(error.status())), stream_timeout=0.001,
                headers={"x-request-id": f"tiny-stream-{i}"})
            # The 1 ms may run out before the request is written: the callback has the error.
            with contextlib.suppress(InferenceServerException):
                client.async_stream_infer("summarize", [summarize_input()])
            client.stop_stream()  # waits for the stream to end
            client.close()
            codes.extend(got)
        return codes

    codes = await asyncio.to_thread(tiny_streams)
    assert codes and set(codes) == {"StatusCode.DEADLINE_EXCEEDED"}, codes
    tiny = [r for r in records if r.request_id.startswith("tiny-stream-")]
    # A stream whose deadline passed before the edge's handler ran is not recorded at all;
    # every one the edge saw stopped there.
    assert all(r.chosen is None and r.status == "DEADLINE_EXCEEDED" for r in tiny), [
        (r.request_id, r.status, r.chosen and r.chosen.deployment_id) for r in tiny]
    assert await asyncio.to_thread(triton_counts, mesh) == before
    # A stream with its deadline to spare is still served (and counted by Triton).
    async with grpc.aio.insecure_channel(mesh.edge_address) as ch:
        stream = ch.stream_stream(STREAM, request_serializer=None, response_deserializer=None)
        assert len([r async for r in stream(iter([request_bytes()]), timeout=20)]) == 1
    after = await asyncio.to_thread(triton_counts, mesh)
    assert sum(after.values()) > sum(before.values()), (before, after)



async def test_a_request_at_exactly_the_size_limit_is_served_and_ejects_nothing(
        mesh: Mesh, records: list[CallRecord]) -> None:
    """``max_message_bytes`` is the documented limit: a request of exactly that size is served.
    (It grew by the variant rewrite past the edge's own upstream send limit: every attempt was
    refused locally, retried, and counted against the backend; four such calls ejected three
    healthy deployments.) One byte more is refused at the edge, naming the limit."""
    limit = mesh.cfg.edge.max_message_bytes
    # In the edge's own region only (east-fast, no emulated WAN relay): every deployment the
    # call may use is on one server, so its attempt gets the whole deadline and a 16 MiB
    # transfer slowed by a loaded host is not cut by the per-attempt timeout.
    md = [("x-allowed-regions", "r-east")]
    async with grpc.aio.insecure_channel(mesh.edge_address) as ch:
        for _ in range(4):  # more than eject_consecutive_failures
            code, tr, details = await raw_infer(ch, md, raw=padded(limit), timeout=30)
            assert code is grpc.StatusCode.OK, (code, details)
            assert tr["x-served-by"].startswith("east-fast/") and tr["x-attempts"] == "1", tr
        code, tr, details = await raw_infer(ch, md, raw=padded(limit + 1), timeout=30)
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
    assert str(limit) in details and "x-request-id" in tr
    assert await ejected(mesh) == [], why(mesh)


@pytest.mark.parametrize("key", ["x-min-quality-bin", "x-allowed-regions-bin"])
async def test_a_hint_in_a_binary_header_is_refused_not_dropped(mesh: Mesh, key: str) -> None:
    """gRPC delivers a ``-bin`` header as bytes; the edge skipped it, so a caller's quality floor
    or regions sent that way were silently dropped (the call went to the cheapest 0.7 variant)."""
    async with grpc.aio.insecure_channel(mesh.edge_address) as ch:
        code, tr, details = await raw_infer(ch, [(key, b"0.85")])  # type: ignore[list-item]
    assert code is grpc.StatusCode.INVALID_ARGUMENT, (code, tr)
    assert key in details and "text header" in details, details
    assert "x-served-by" not in tr


MID_GENERATION_CANCELS = 120


async def test_streams_cancelled_mid_generation_leave_every_backend_alive(
        mesh: Mesh, records: list[CallRecord]) -> None:
    """Callers stop LLM streams mid-generation (a chat UI's stop button). Triton 2.51 can die
    of SIGSEGV when a client cancels a decoupled stream while it is sending responses
    (server#7368, fixed in 24.12): the edge passed each caller's cancel on, and a few hundred
    such streams killed the backends serving them. The edge now lets the upstream stream run
    to its end in the background (half-closed, responses discarded) instead."""
    async with grpc.aio.insecure_channel(mesh.edge_address) as ch:
        stream = ch.stream_stream(STREAM, request_serializer=None, response_deserializer=None)
        for i in range(MID_GENERATION_CANCELS):
            c = stream(iter([llm_request("generate", list(range(100, 120)), 60)]), timeout=20,
                       metadata=(("x-request-id", f"stop-{i}"),))
            for _ in range(1 + i % 8):  # stopped after 1 to 8 tokens
                await c.read()
            c.cancel()
    upstreams = mesh.edge.router.upstreams
    await eventually(lambda: not upstreams.draining, 60, "every let-go stream ran to its end")
    dead = [b for b, p in mesh.tritons.items() if not p.alive]
    assert dead == [], "\n".join(mesh.tritons[b].log_tail(20) for b in dead)
    await eventually(lambda: sum(r.request_id.startswith("stop-") for r in records)
                     == MID_GENERATION_CANCELS, 10)
    assert {r.status for r in records if r.request_id.startswith("stop-")} == {"CANCELLED"}
    assert await ejected(mesh) == [], why(mesh)


async def test_every_deployment_ejected_is_panic_routed_within_the_hints(mesh: Mesh) -> None:
    """Outlier detection has ejected every deployment meeting the call's quality floor (the
    failures are fed to the edge's health view in-process, as failed calls feed it): the call
    is still served, by one of them, never by the lower-quality deployments that remain
    usable. Last in the module: the ejections outlive the test."""
    router = mesh.edge.router
    large = [c for c in router.store.candidates["summarize"] if c.variant == "summarize-large"]
    assert len(large) >= 2, large
    for c in large:
        for _ in range(mesh.cfg.edge.eject_consecutive_failures):
            router.health.failure(c, server_failure=False)
    unusable = router.health.view().unusable
    assert {c.deployment_id for c in large} <= set(unusable), unusable
    panics = router.panics
    tr = await asyncio.to_thread(call, mesh, [("x-slo-ms", "400"), ("x-min-quality", "0.85")])
    assert tr["x-served-by"] in {c.deployment_id for c in large}, tr
    assert router.panics == panics + 1
