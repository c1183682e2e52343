"""A hostile caller against the edge, round 8: what round 7 left open (the slow path's header
bytes, a stream Envoy refuses, the engines' parity on odd calls) and what rounds 1-7 did not
probe.

One mesh for the module, both engines (``envoy_harness.hostile_fixtures``), with tenants known
by their bearer tokens over plaintext: real Triton backends, placement serving ADS, a node
agent, the co-located Python edge (``<edge>-slow``, called directly as *the Python edge*) and
a real Envoy driven by placement, whose listener sends a stream and a call carrying
``authorization`` to that slow path.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import urllib.parse
from collections.abc import Sequence
from typing import Any

import grpc
import h2.events
import pytest

from services.config import MeshConfig
from services.edge.tokens import llm_request
from services.edge.upstream import STREAM
from services.security.settings import SecuritySettings, TenantSettings
from tests.envoy_harness import EnvoyMesh, hostile_fixtures
from tests.h2_client import h2_open
from tests.integration.test_hostile_round7 import calls
from tests.mesh_harness import INFER_PATH, eventually, mesh_config, raw_infer, request_bytes

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

_cfg, mesh, engines, records = hostile_fixtures("hostile8")

OPEN = "Bearer open-token"  # tenant open: anywhere
LIMITED = "Bearer limited-token"  # tenant limited: one call or stream at a time


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    base = mesh_config(tmp_path_factory.mktemp("hostile8"))
    sec = SecuritySettings(plaintext=True, tenants=[
        TenantSettings(name="open", token="open-token"),
        TenantSettings(name="limited", token="limited-token", max_concurrency=1),
    ])
    return base.model_copy(update={"security": sec})


async def stream_status(ch: grpc.aio.Channel, md: Sequence[tuple[str, str]],
                        timeout: float | None = 20.0) -> tuple[str, str]:
    """(status, details) of a short generation on ``ch``."""
    st: Any = ch.stream_stream(STREAM, request_serializer=None, response_deserializer=None)
    call = st(iter([llm_request("generate", [1, 2, 3], 2)]), timeout=timeout, metadata=md)
    with contextlib.suppress(grpc.aio.AioRpcError):
        async for _ in call:
            pass
    return (await call.code()).name, await call.details() or ""


def listener_size(details: str) -> int:
    """The header list's size in the Envoy listener's refusal ('metadata of N bytes is ...')."""
    assert details.startswith("metadata of "), details
    return int(details.split(" ", 3)[2])


async def test_a_header_list_the_listener_lets_through_is_not_refused_by_the_slow_path(
        mesh: EnvoyMesh, cfg: MeshConfig, engines: dict[str, grpc.aio.Channel]) -> None:
    """A stream (always the slow path) and a tenant's ModelInfer whose header list is exactly
    ``max_metadata_bytes`` as Envoy's listener counts it (name + value + 32 per entry,
    native/rules.c) are served; a tenant's call one byte over is the listener's
    RESOURCE_EXHAUSTED naming its size. The slow path's gRPC server held the list with what
    Envoy adds (x-request-id, x-forwarded-proto, the deadline headers) to the same number and
    refused calls within ~200 bytes of it: 'received metadata size exceeds hard limit (8225
    vs. 8192)'. Fails on the old code. (hostile7's pending test, finished.)"""
    limit = cfg.security.limits.max_metadata_bytes
    ch = engines["envoy"]
    pad = limit - 600  # over the limit once the call's other headers are counted

    # No deadline: a grpc-timeout's digits, and so the list's size, change from call to call.
    # A plain ModelInfer over the limit is the listener's answer on the fast path, whose size
    # the other two follow: a longer :path, or one more entry.
    async def infer(n: int, *md: tuple[str, str]) -> tuple[str, str]:
        code, _, details = await raw_infer(ch, [*md, ("x-pad", "p" * n)], timeout=None)
        return code.name, details

    code, details = await infer(pad)
    assert (code, details.startswith("metadata of ")) == ("RESOURCE_EXHAUSTED", True), details
    fits = pad - (listener_size(details) - limit)
    stream_fits = fits - (len(STREAM) - len(INFER_PATH))
    auth = ("authorization", OPEN)
    tenant_fits = fits - (len(auth[0]) + len(auth[1]) + 32)
    assert await stream_status(ch, [("x-pad", "p" * stream_fits)], timeout=None) == ("OK", "")
    assert await infer(tenant_fits, auth) == ("OK", "")
    code, details = await infer(tenant_fits + 1, auth)
    assert (code, listener_size(details)) == ("RESOURCE_EXHAUSTED", limit + 1), details


async def h2_frames(address: str, path: str, extra: Sequence[tuple[str, str]],
                    body: bytes | None = None, content_type: str = "application/grpc"
                    ) -> list[Any]:
    """What a raw HTTP/2 caller gets for a call sent as headers (and ``body``, a whole gRPC
    frame, with END_STREAM) or, without ``body``, as headers alone on a stream it keeps open:
    [(grpc-status, grpc-message)] for each header block with a grpc-status, ``"end"``,
    ``("reset", code)``, until the stream is over (``"closed"``: the connection) or 3 s of
    silence (``"silence"``)."""
    reader, writer, conn, sid = await h2_open(address)
    conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path),
                            (":authority", address), ("content-type", content_type),
                            ("te", "trailers"), *extra], end_stream=False)
    if body is not None:
        conn.send_data(sid, b"\x00" + len(body).to_bytes(4, "big") + body, end_stream=True)
    writer.write(conn.data_to_send())
    got: list[Any] = []
    try:
        while not (body is not None and "end" in got):
            data = await asyncio.wait_for(reader.read(65536), 3)
            if not data:
                got.append("closed")
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    hs = {str(k): str(v) for k, v in ev.headers or ()}
                    if "grpc-status" in hs:
                        message = urllib.parse.unquote(hs.get("grpc-message", ""))
                        got.append((hs["grpc-status"], message))
                elif isinstance(ev, h2.events.StreamEnded):
                    got.append("end")
                elif isinstance(ev, h2.events.StreamReset):
                    got.append(("reset", int(ev.error_code)))
                    return got
            writer.write(conn.data_to_send())
    except TimeoutError:
        got.append("silence")
    finally:
        writer.close()
    return got


def addresses(mesh: EnvoyMesh) -> dict[str, str]:
    return {"python": f"127.0.0.1:{mesh.slow.port}", "envoy": mesh.envoy.address}


async def test_a_stream_refused_on_its_headers_gets_the_refusal_on_the_wire_on_both(
        mesh: EnvoyMesh, cfg: MeshConfig) -> None:
    """A ModelStreamInfer over ``max_metadata_count`` or ``max_metadata_bytes``, refused
    before its first message: both engines answer with the refusal's own status and words,
    trailers-only, then RST_STREAM(NO_ERROR), as RFC 9113 8.1 lets a server end a stream its
    caller has not finished. Pinned, found right: the INTERNAL 'Internal error from Core' a
    grpcio asyncio caller now and then reports instead (round 7; 4 and 3 of 30 through Envoy,
    0 of 30 from the slower Python edge) is that client's own status for the write of its
    first message failing on the reset stream, which overwrites the status it already has
    (grpc/grpc#36066), not what either engine sent."""
    limit = cfg.security.limits.max_metadata_count
    cases = {
        "count": ([(f"x-k{i}", "v") for i in range(limit + 1)], "3",
                  f"call carries {limit + 1} metadata entries (limit {limit})"),
        "bytes": ([("x-pad", "p" * 9000)], "8", "metadata of "),
    }
    for name, address in addresses(mesh).items():
        for what, (md, status, words) in cases.items():
            got = await h2_frames(address, STREAM, md)
            assert len(got) == 3 and got[0][0] == status and got[1:] == [
                "end", ("reset", 0)], (name, what, got)
            assert got[0][1].startswith(words), (name, what, got)


# (path, request): an RPC neither engine serves. Envoy's listener names no model for a path
# outside its NAMED_RPCS, so no model route matches it (Triton's own control RPCs, such as
# RepositoryModelUnload, never reach a backend through an edge).
UNSERVED = [
    ("/inference.GRPCInferenceService/NoSuch", request_bytes()),
    ("/nosuch.Service/ModelInfer", request_bytes()),
    ("/inference.GRPCInferenceService/RepositoryModelUnload", b"\x12\x0fsummarize-small"),
    ("/inference.GRPCInferenceService/RepositoryModelLoad", b"\x12\x0fsummarize-small"),
]


def forwarded(mesh: EnvoyMesh) -> int:
    """Requests Envoy sent to a deployment or its slow path (not placement's access-log and
    ADS streams)."""
    return sum(int(line.rpartition(": ")[2]) for line in
               mesh.envoy.admin("/stats?filter=upstream_rq_total$").splitlines()
               if line.startswith(("cluster.dep_", "cluster.slow-path.")))


@pytest.mark.parametrize(("path", "body"), UNSERVED,
                         ids=["unknown-method", "unknown-service", "unload", "load"])
async def test_an_rpc_the_edge_does_not_serve_is_unimplemented_and_reaches_no_backend(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel], path: str, body: bytes) -> None:
    """gRPC's UNIMPLEMENTED on both engines (the Python edge's gRPC says 'Method not found!',
    Envoy's route-not-found nothing, as Triton itself says nothing), and nothing is sent to
    any cluster. Pinned: found right on both."""
    sent = forwarded(mesh)
    for name, address in addresses(mesh).items():
        got = await h2_frames(address, path, [], body)
        assert got[0] == ("12", "Method not found!" if name == "python" else ""), (
            name, got)
    assert forwarded(mesh) == sent
    code, _, details = await raw_infer(engines["envoy"], [])  # the count sees a served call
    assert code == grpc.StatusCode.OK, details
    assert forwarded(mesh) > sent


def inflight(mesh: EnvoyMesh) -> dict[str, float]:
    assert mesh.slow.metrics is not None
    return {s.labels["kind"]: s.value for fam in mesh.slow.metrics.registry.collect()
            for s in fam.samples if s.name == "switchyard_edge_inflight"}


async def test_a_tenant_at_its_quota_mid_stream_is_counted_as_its_callers_saw_it(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel]) -> None:
    """Tenant ``limited`` (one call at a time) holds a stream through Envoy; meanwhile a
    stream and a ModelInfer of its own, through Envoy and to the Python edge, are each
    RESOURCE_EXHAUSTED with a retry hint, another tenant's call is served, and the held
    stream ends OK. The slow path's status counters move by exactly what the callers saw,
    and its in-flight gauges are back to 0 after. Pinned: found right."""
    before = {s: calls(mesh, s) for s in ("OK", "RESOURCE_EXHAUSTED")}
    st: Any = engines["envoy"].stream_stream(STREAM, request_serializer=None,
                                             response_deserializer=None)
    held = st(iter([llm_request("generate", [1, 2, 3], 40)]), timeout=20,
              metadata=[("authorization", LIMITED)])
    responses = held.__aiter__()
    await anext(responses)  # the stream holds the tenant's one slot from here
    seen: list[str] = []
    for ch in engines.values():
        code, _ = await stream_status(ch, [("authorization", LIMITED)])
        seen.append(code)
        code, trailers, details = await raw_infer(ch, [("authorization", LIMITED)])
        seen.append(code.name)
        assert "retry-after-ms" in trailers, (code, details)
        code, _, details = await raw_infer(ch, [("authorization", OPEN)])
        assert code == grpc.StatusCode.OK, details
    assert seen == ["RESOURCE_EXHAUSTED"] * 4
    async for _ in responses:
        pass
    assert await held.code() == grpc.StatusCode.OK
    await eventually(lambda: calls(mesh, "OK") - before["OK"] >= 3, 5, "the OK calls counted")
    assert calls(mesh, "RESOURCE_EXHAUSTED") - before["RESOURCE_EXHAUSTED"] == 4
    assert calls(mesh, "OK") - before["OK"] == 3  # the held stream and both open calls
    await eventually(lambda: set(inflight(mesh).values()) == {0.0}, 5,
                     "the slow path's in-flight gauges back to 0")


def cancelled_since(mesh: EnvoyMesh, before: float) -> bool:
    return calls(mesh, "CANCELLED") > before


async def test_a_tenants_stream_cancelled_mid_generation_frees_its_slot(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel]) -> None:
    """Tenant ``limited``'s stream, cancelled by its caller after its first token, on each
    engine: its one slot is free for its next call at once (the slot is the tenant's, not the
    drained upstream's) once the cancel is counted, CANCELLED once, and the in-flight gauges
    go back to 0. Pinned: found right."""
    for name, ch in engines.items():
        before = calls(mesh, "CANCELLED")
        st: Any = ch.stream_stream(STREAM, request_serializer=None, response_deserializer=None)
        held = st(iter([llm_request("generate", [1, 2, 3], 200)]), timeout=20,
                  metadata=[("authorization", LIMITED)])
        await anext(held.__aiter__())
        held.cancel()
        await eventually(functools.partial(cancelled_since, mesh, before), 5,
                         f"{name}: the cancel counted")
        code, _, details = await raw_infer(ch, [("authorization", LIMITED)])
        assert code == grpc.StatusCode.OK, (name, details)
        assert calls(mesh, "CANCELLED") - before == 1, name
        await eventually(lambda: set(inflight(mesh).values()) == {0.0}, 5,
                         f"{name}: the slow path's in-flight gauges back to 0")


async def test_grpc_web_is_served_by_the_python_edge_and_refused_by_envoy(
        mesh: EnvoyMesh) -> None:
    """``content-type: application/grpc-web`` on a ModelInfer: the Python edge's gRPC server
    takes any ``application/grpc*`` content-type and its handlers never see it (answered as
    gRPC, HTTP/2 trailers a gRPC-Web client cannot read), while Envoy's listener refuses
    it (154fb07), as Triton itself does (it resets the stream). README's Envoy section said
    the Python edge's gRPC refuses every content-type the listener does; pinned as the one
    engine difference it is (README). ``application/grpc+proto`` is served by both."""
    got = {name: await h2_frames(address, INFER_PATH, [], request_bytes(),
                                 content_type="application/grpc-web")
           for name, address in addresses(mesh).items()}
    assert got["python"][0] == ("0", ""), got
    assert got["envoy"][0] == ("3", "content-type application/grpc-web is not gRPC's: send "
                                    "application/grpc"), got
    for name, address in addresses(mesh).items():
        proto = await h2_frames(address, INFER_PATH, [], request_bytes(),
                                content_type="application/grpc+proto")
        assert proto[0] == ("0", ""), (name, proto)


async def unread_streams(address: str, n: int, tokens: int) -> int:
    """``n`` generations of ``tokens`` on one HTTP/2 connection whose caller never reads (no
    WINDOW_UPDATE: once 64 KiB of answers are in, the connection's window is shut) and, after
    3 s, resets each stream still open; the number it reset."""
    reader, writer, conn, _ = await h2_open(address)  # each stream below takes the next id
    body = llm_request("generate", [1, 2, 3], tokens)
    ids = []
    for _ in range(n):
        sid = conn.get_next_available_stream_id()
        ids.append(sid)
        conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", STREAM),
                                (":authority", address), ("content-type", "application/grpc"),
                                ("te", "trailers")])
        conn.send_data(sid, b"\x00" + len(body).to_bytes(4, "big") + body, end_stream=True)
    writer.write(conn.data_to_send())
    ended: set[int] = set()
    loop = asyncio.get_running_loop()
    until = loop.time() + 3.0
    with contextlib.suppress(TimeoutError):
        while loop.time() < until:
            data = await asyncio.wait_for(reader.read(65536), until - loop.time())
            if not data:
                break
            for ev in conn.receive_data(data):  # never acknowledged: the window stays shut
                if isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset):
                    ended.add(ev.stream_id)
            writer.write(conn.data_to_send())
    reset = [sid for sid in ids if sid not in ended]
    for sid in reset:
        conn.reset_stream(sid, 8)  # CANCEL
    writer.write(conn.data_to_send())
    await writer.drain()
    writer.close()
    return len(reset)


async def test_streams_a_caller_never_reads_end_when_it_cancels_and_leave_nothing(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel]) -> None:
    """30 generations of 400 tokens on one connection whose caller never reads, then cancels
    those still open after 3 s (all 30 in the runs seen), on each engine: every stream is
    counted once, the cancelled ones CANCELLED (30 of 30 on both), the in-flight gauges go
    back to 0 and the next stream is served. Pinned: found right. The edge's memory is not
    measured here: the demo LLM's answers are small and slow, so what the shut window holds
    back is less than any buffer would show."""
    for name, address in addresses(mesh).items():
        before = {s: calls(mesh, s) for s in ("OK", "CANCELLED")}
        reset = await unread_streams(address, 30, 400)
        assert reset > 0, name  # the window shut before every stream ended

        def counted(b: dict[str, float] = before) -> float:
            return sum(calls(mesh, s) - b[s] for s in b)

        await eventually(lambda: counted() >= 30, 20, f"{name}: all 30 counted")
        assert counted() == 30, name
        assert calls(mesh, "CANCELLED") - before["CANCELLED"] >= reset, name
        await eventually(lambda: set(inflight(mesh).values()) == {0.0}, 10,
                         f"{name}: the slow path's in-flight gauges back to 0")
        assert await stream_status(engines[name], []) == ("OK", ""), name
