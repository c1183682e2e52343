"""The same hostile input through both edge engines gives the same gRPC status (README,
"Statuses a caller can get"): a malformed or repeated hint, a bad or unknown model name, bad
request bytes, an empty stream, the mesh's own RPCs for a model it lacks.

One mesh for the module: real Triton backends, placement serving ADS, a node agent, the
co-located Python edge (``<edge>-slow``, called directly here as *the Python edge*: the same
``services.edge`` process a Python-engine mesh runs) and a real Envoy driven by placement.
Each case is sent to both and must end with the status it names on both; a hint's refusal
must also say the same thing on both (the Envoy listener's Lua words it as
``services/edge/hints.py`` does).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import pytest
import pytest_asyncio
from tritonclient.grpc import service_pb2

from placement.errors import InvalidHint
from services.backends.triton import TritonProcess
from services.config import MeshConfig
from services.edge import hints
from services.edge.tokens import llm_request
from tests.envoy_harness import EnvoyMesh, running_envoy_mesh
from tests.mesh_harness import mesh_config, padded, raw_infer, request_bytes

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

LIMIT = 1 << 16
OK, INVALID = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT
SERVICE = "/inference.GRPCInferenceService/"


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    return mesh_config(tmp_path_factory.mktemp("hostile-engines"), max_message_bytes=LIMIT)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(cfg: MeshConfig, tritons: dict[str, TritonProcess],
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EnvoyMesh]:
    async with running_envoy_mesh(cfg, tmp_path_factory.mktemp("envoy")) as m:
        yield m


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engines(mesh: EnvoyMesh) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    async with mesh.engines() as channels:
        yield channels


async def both(engines: dict[str, grpc.aio.Channel], md: Sequence[tuple[str, str]],
               raw: bytes | None = None) -> dict[str, tuple[grpc.StatusCode, str]]:
    got = {}
    for name, ch in engines.items():
        code, _, details = await raw_infer(ch, md, raw, timeout=10.0)
        got[name] = (code, details)
    return got


# (metadata, the status on both engines). The Envoy listener's Lua read x-slo-ms with Lua's
# tonumber (hex, surrounding spaces taken: served with an SLO the Python edge refuses),
# compared repeats as text ("50" and "50.0" refused) and never compared a repeated x-tenant
# (an appended one served): the cases marked "old Lua" fail on it. (A repeated x-request-id
# is README's documented exception: Envoy joins it into one, "a,b", before any filter.)
HINTS = [
    ([("x-slo-ms", "0x10")], INVALID),  # old Lua: OK (16 ms)
    ([("x-slo-ms", " 50")], INVALID),  # old Lua: OK
    ([("x-slo-ms", "50 ")], INVALID),  # old Lua: OK
    ([("x-slo-ms", "5_0")], INVALID),
    ([("x-slo-ms", "")], INVALID),
    ([("x-slo-ms", "nan")], INVALID),
    ([("x-slo-ms", "inf")], INVALID),
    ([("x-slo-ms", "-5")], INVALID),
    ([("x-slo-ms", "0")], INVALID),
    ([("x-slo-ms", "1e400")], INVALID),
    ([("x-slo-ms", "3600001")], INVALID),
    ([("x-slo-ms", "1e3")], OK),
    ([("x-slo-ms", "1e-3")], OK),  # the least SLO: a best effort on both
    ([("x-slo-ms", "0.5")], OK),  # under a whole ms: Envoy's SLO class 0
    ([("x-slo-ms", "3600000")], OK),
    ([("x-slo-ms", "+250")], OK),
    ([("x-slo-ms", "250.")], OK),
    ([("x-slo-ms", "50"), ("x-slo-ms", "60")], INVALID),
    ([("x-slo-ms", "50"), ("x-slo-ms", "50.0")], OK),  # old Lua: INVALID_ARGUMENT
    ([("x-slo-ms", "50"), ("x-slo-ms", "abc")], INVALID),
    # refused at 60, the contradiction, as Python walks them (old Lua: abc, not a number)
    ([("x-slo-ms", "50"), ("x-slo-ms", "60"), ("x-slo-ms", "abc")], INVALID),
    ([("x-tenant", "a"), ("x-tenant", "b")], INVALID),  # old Lua: OK
    ([("x-tenant", "a"), ("x-tenant", "a")], OK),
    # the value as Python's repr quotes it, percent-encoded on the wire as gRPC sends a
    # message (old Lua: 'it's', one backslash, and "5%20" read back by the caller as "5 0")
    ([("x-slo-ms", "it's")], INVALID),
    ([("x-slo-ms", "a\\b")], INVALID),
    ([("x-slo-ms", "5%20")], INVALID),
    ([("x-tenant", "a"), ("x-tenant", "it's 100%")], INVALID),
]


@pytest.mark.parametrize(("md", "code"), HINTS, ids=[repr(md) for md, _ in HINTS])
async def test_a_hint_gets_the_same_status_and_words_on_both_engines(
        engines: dict[str, grpc.aio.Channel], md: list[tuple[str, str]],
        code: grpc.StatusCode) -> None:
    got = await both(engines, md)
    assert {e: c for e, (c, _) in got.items()} == {"python": code, "envoy": code}, got
    if code is INVALID:
        assert got["envoy"][1] == got["python"][1], got
        assert got["python"][1].startswith(f"metadata {md[0][0]}="), got


# A hint sent as a -bin header (gRPC carries its bytes in base64): refused on both, the value's
# first 64 bytes quoted as services/edge/hints.py's _binary quotes them (UTF-8, each bad byte
# or cut character U+FFFD). The old Lua's words quoted no value: each case fails on it.
BINARY = [
    ("x-min-quality-bin", b"0.85"),
    ("x-slo-ms-bin", b"\x00\xff'\"\\"),
    ("x-tenant-bin", "\u00e9\u20ac it's".encode()),
    ("x-allowed-regions-bin", b"\xe2\x82" + b"a" * 10 + b"\xed\xa0\x80"),
    ("x-routing-profile-bin", b"\xc2\x85\xc2\xa0\xc2\xad\x7f\t\r\n"),
    ("x-request-id-bin", b"5%20" + b"x" * 100),  # cut at 64 bytes
]


@pytest.mark.parametrize(("key", "value"), BINARY, ids=[k for k, _ in BINARY])
async def test_a_binary_hint_gets_the_same_status_and_words_on_both_engines(
        engines: dict[str, grpc.aio.Channel], key: str, value: bytes) -> None:
    with pytest.raises(InvalidHint) as err:
        hints.parse([(key, value)], frozenset(), ())
    expected = (INVALID, str(err.value))
    got = await both(engines, [(key, value)])  # type: ignore[list-item]
    assert got == {"python": expected, "envoy": expected}, got


async def test_every_byte_and_latin1_character_is_quoted_alike_on_both_engines(
        engines: dict[str, grpc.aio.Channel]) -> None:
    """Each byte alone and each of U+0080..U+00FF in UTF-8, as an x-tenant-bin value: the
    Lua's quoted escapes what Python's repr escapes there (beyond Latin-1 it does not follow
    str.isprintable: private-use and unassigned code points are quoted as they are)."""
    values = [bytes([b]) for b in range(256)] + [chr(c).encode() for c in range(0x80, 0x100)]
    differ = []
    for value in values:
        got = await both(engines, [("x-tenant-bin", value)])  # type: ignore[list-item]
        if got["envoy"] != got["python"] or got["python"][0] is not INVALID:
            differ.append((value, got))
    assert not differ, differ[:3]


def headers(n: int, size: int = 1) -> list[tuple[str, str]]:
    return [(f"x-h{i}", "v" * size) for i in range(n)]


# (metadata, the status on both engines): [security.limits] (defaults: 8 KiB of metadata, 64
# custom entries). The Envoy listener applied neither: 70 entries and 10 or 50 KB headers
# were served, 300 entries (over its codec's 100) reset (INTERNAL): each case but the first
# fails on the old listener. (Over 64 KiB in one header Envoy's HPACK decoder still closes
# the connection, UNAVAILABLE: README.)
LIMITS = [
    (headers(60), OK),
    (headers(70), INVALID),
    (headers(300), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (headers(1, 10_000), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (headers(1, 50_000), grpc.StatusCode.RESOURCE_EXHAUSTED),
]


@pytest.mark.parametrize(("md", "code"), LIMITS,
                         ids=["60 entries", "70 entries", "300 entries", "10 KB", "50 KB"])
async def test_the_metadata_limits_hold_on_both_engines(
        engines: dict[str, grpc.aio.Channel], md: list[tuple[str, str]],
        code: grpc.StatusCode) -> None:
    got = await both(engines, md)
    assert {e: c for e, (c, _) in got.items()} == {"python": code, "envoy": code}, got
    if code is INVALID:
        assert got["envoy"][1] == got["python"][1] == "call carries 70 metadata entries " \
            "(limit 64)", got


# (request bytes, the status on both engines): read by the Python edge's wire scan and the
# Envoy listener's Lua twin; the messages differ in words, not in status.
REQUESTS = [
    ("unknown model", request_bytes("nosuch"), grpc.StatusCode.NOT_FOUND),
    # a NUL cut the name in the Lua's header: served as summarize (old Lua: OK)
    ("a NUL in the name", request_bytes("summarize\x00"), grpc.StatusCode.NOT_FOUND),
    ("a NUL inside the name", request_bytes("summ\x00arize"), grpc.StatusCode.NOT_FOUND),
    ("a newline in the name", request_bytes("summarize\n"), grpc.StatusCode.NOT_FOUND),
    ("a name past 1024 bytes", request_bytes("s" * 1025), INVALID),
    ("a non-ASCII name", request_bytes("résumé"), grpc.StatusCode.NOT_FOUND),
    # field 1 that is not UTF-8 (old Lua: NOT_FOUND): bytes, an overlong '/', a surrogate
    ("a name not UTF-8", b"\x0a\x02\xff\xfe", INVALID),
    ("an overlong name", b"\x0a\x02\xc0\xaf", INVALID),
    ("a surrogate name", b"\x0a\x03\xed\xa0\x80", INVALID),
    ("a name cut inside a character", b"\x0a\x02a\xc3", INVALID),
    ("empty model", request_bytes(""), INVALID),
    ("no bytes", b"", INVALID),
    ("truncated varint", b"\xff\xff\xff", INVALID),
    ("at the limit", padded(LIMIT), OK),
    ("one byte over", padded(LIMIT + 1), grpc.StatusCode.RESOURCE_EXHAUSTED),
]


@pytest.mark.parametrize(("raw", "code"), [(r, c) for _, r, c in REQUESTS],
                         ids=[n for n, _, _ in REQUESTS])
async def test_a_request_gets_the_same_status_on_both_engines(
        engines: dict[str, grpc.aio.Channel], raw: bytes, code: grpc.StatusCode) -> None:
    got = await both(engines, [], raw)
    assert {e: c for e, (c, _) in got.items()} == {"python": code, "envoy": code}, got



# A hostile request with a bad hint: the Python edge checks the size, then the bytes, then
# each hint entry in the caller's order (hints.parse), so the first of these that fails
# answers, on both engines, in the same words.
MIXED = [
    ("over the limit, a bad hint", [("x-slo-ms", "abc")], padded(LIMIT + 1),
     grpc.StatusCode.RESOURCE_EXHAUSTED),
    ("bad bytes, a bad hint", [("x-slo-ms", "abc")], b"\xff\xff\xff", INVALID),
    ("no model, a bad hint", [("x-tenant", "a"), ("x-tenant", "b")], request_bytes(""), INVALID),
    ("a NUL in the name, a bad hint", [("x-slo-ms", "abc")], request_bytes("summarize\x00"),
     INVALID),
    ("a bad x-slo-ms, then x-tenant a, b",
     [("x-slo-ms", "abc"), ("x-tenant", "a"), ("x-tenant", "b")], request_bytes(), INVALID),
    ("x-tenant a, b, then a bad x-slo-ms",
     [("x-tenant", "a"), ("x-tenant", "b"), ("x-slo-ms", "abc")], request_bytes(), INVALID),
    ("a bad x-slo-ms, then a -bin hint",
     [("x-slo-ms", "abc"), ("x-min-quality-bin", b"1")], request_bytes(), INVALID),
    ("a -bin hint, then a bad x-slo-ms",
     [("x-min-quality-bin", b"1"), ("x-slo-ms", "abc")], request_bytes(), INVALID),
]


@pytest.mark.parametrize(("md", "raw", "code"), [(m, r, c) for _, m, r, c in MIXED],
                         ids=[n for n, _, _, _ in MIXED])
async def test_the_first_fault_answers_on_both_engines(
        engines: dict[str, grpc.aio.Channel], md: list[tuple[str, str]], raw: bytes,
        code: grpc.StatusCode) -> None:
    got = await both(engines, md, raw)
    assert {e: c for e, (c, _) in got.items()} == {"python": code, "envoy": code}, got
    if got["python"][1].startswith("metadata "):
        assert got["envoy"][1] == got["python"][1], got


async def ended(call: Any) -> tuple[grpc.StatusCode, int]:
    """A stream call's final status and how many responses it carried before it."""
    n = 0
    try:
        async for _ in call:
            n += 1
    except grpc.aio.AioRpcError as err:
        return err.code(), n
    return await call.code(), n

async def stream_status(ch: grpc.aio.Channel, messages: Sequence[bytes]) -> tuple[
        grpc.StatusCode, int]:
    async def requests() -> AsyncIterator[bytes]:
        for m in messages:
            yield m

    stream: Any = ch.stream_stream(SERVICE + "ModelStreamInfer", request_serializer=None,
                                   response_deserializer=None)
    call = stream(requests(), timeout=10.0)
    return await ended(call)


@pytest.mark.parametrize(("messages", "code"), [
    ([], OK),  # half-closed before any message: an empty stream, at once, on both
    ([request_bytes("nosuch")], grpc.StatusCode.NOT_FOUND),
    ([request_bytes("")], INVALID),
    ([b"\xff\xff"], INVALID),
], ids=["no message", "unknown model", "no model", "bad bytes"])
async def test_a_stream_gets_the_same_status_on_both_engines(
        engines: dict[str, grpc.aio.Channel], messages: list[bytes],
        code: grpc.StatusCode) -> None:
    got = {e: await stream_status(ch, messages) for e, ch in engines.items()}
    assert got == {"python": (code, 0), "envoy": (code, 0)}


@pytest.mark.parametrize(("rpc", "message", "code"), [
    ("ModelMetadata", service_pb2.ModelMetadataRequest(name="nosuch"), grpc.StatusCode.NOT_FOUND),
    ("ModelConfig", service_pb2.ModelConfigRequest(name="nosuch"), grpc.StatusCode.NOT_FOUND),
    ("ModelStatistics", service_pb2.ModelStatisticsRequest(name="nosuch"),
     grpc.StatusCode.NOT_FOUND),
    ("RepositoryIndex", service_pb2.RepositoryIndexRequest(), OK),
    ("ServerLive", service_pb2.ServerLiveRequest(), OK),
    ("RepositoryModelLoad", service_pb2.RepositoryModelLoadRequest(model_name="summarize"),
     grpc.StatusCode.UNIMPLEMENTED),
])
async def test_the_mesh_rpcs_get_the_same_status_on_both_engines(
        engines: dict[str, grpc.aio.Channel], rpc: str, message: object,
        code: grpc.StatusCode) -> None:
    got = {}
    for e, ch in engines.items():
        try:
            await ch.unary_unary(SERVICE + rpc)(message.SerializeToString(),  # type: ignore[attr-defined]
                                                timeout=10.0)
            got[e] = OK
        except grpc.aio.AioRpcError as err:
            got[e] = err.code()
    assert got == {"python": code, "envoy": code}


async def test_a_gzip_compressed_call_is_served_on_both_engines(
        engines: dict[str, grpc.aio.Channel]) -> None:
    """Lua cannot read a compressed message's model name: the Envoy edge sends the call to
    its slow path, which decompresses it (before: UNIMPLEMENTED, where a Python edge served
    it; fails on the old Lua)."""
    got = {}
    for e, ch in engines.items():
        infer: Any = ch.unary_unary(SERVICE + "ModelInfer")
        call = infer(request_bytes(), timeout=10.0, compression=grpc.Compression.Gzip,
                     metadata=(("x-request-id", "gzip"),))
        await call
        trailers = dict(await call.trailing_metadata() or ())
        got[e] = (trailers.get("x-served-by", "") != "", trailers.get("x-request-id"),
                  trailers.get("x-switchyard-path"))
    assert got == {"python": (True, "gzip", None), "envoy": (True, "gzip", "slow")}


HOLD_S = 3.0  # how long the callers below keep their streams open after their one request


async def held_stream(ch: grpc.aio.Channel, close: bool) -> tuple[grpc.StatusCode, int]:
    """A 4-token generation whose caller keeps its stream open ``HOLD_S`` after the request,
    then half-closes it (``close``) or never does (its own deadline, ``HOLD_S``, ends it)."""
    async def requests() -> AsyncIterator[bytes]:
        yield llm_request("generate", [1, 2, 3], 4)
        await asyncio.sleep(HOLD_S if close else 10 * HOLD_S)  # the caller's own pause

    stream: Any = ch.stream_stream(SERVICE + "ModelStreamInfer", request_serializer=None,
                                   response_deserializer=None)
    call = stream(requests(), timeout=HOLD_S + 30.0 if close else HOLD_S)
    return await ended(call)


async def test_a_stream_held_open_by_its_caller_teaches_no_slowness(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel]) -> None:
    """Callers that keep their streams open after the last token (half-closing later, or
    never: their own deadline ends them) add latency samples of the generation alone, not of
    their own pause, to the deployment's statistics (what the edge reports to placement; both
    engines' streams are the Python edge's). On the old edge each sample was the stream's
    whole life (~3 s for a ~50 ms generation): fails there."""
    stats = mesh.slow.router.stats
    before = {d: list(s.latencies_ms) for d, s in stats.by_deployment.items()}
    # Never half-closed on both engines: through Envoy such a caller got INTERNAL, not
    # DEADLINE_EXCEEDED, in 3 of 18 streams while the slow-path route carried a
    # max_stream_duration from the caller's grpc-timeout (Envoy's timer fired before the
    # caller's own and reset a stream whose headers were sent; services/xds/routes.py).
    callers = [(ch, close) for close in (False, True) for ch in engines.values()] * 3
    got = await asyncio.gather(*(held_stream(ch, close) for ch, close in callers))
    assert got == [(grpc.StatusCode.DEADLINE_EXCEEDED, 4)] * 2 + [(OK, 4)] * 2 + [
        (grpc.StatusCode.DEADLINE_EXCEEDED, 4)] * 2 + [(OK, 4)] * 2 + [
        (grpc.StatusCode.DEADLINE_EXCEEDED, 4)] * 2 + [(OK, 4)] * 2, got
    new = [ms for d, s in stats.by_deployment.items() if "generate" in d
           for ms in list(s.latencies_ms)[len(before.get(d, [])):]]
    assert new and max(new) < HOLD_S * 1000 / 2, new


@pytest.mark.parametrize(("version", "ready"), [("", True), ("1", True), ("9", False)])
async def test_model_ready_for_a_version_is_the_backends_answer_on_both_engines(
        engines: dict[str, grpc.aio.Channel], version: str, ready: bool) -> None:
    """tritonclient's ``is_model_ready(model, version)``: a version the backends lack is not
    ready (the edge answered ready for any version, "9" included, whose calls then failed
    NOT_FOUND: fails on the old edge)."""
    got = {}
    for e, ch in engines.items():
        rpc: Any = ch.unary_unary(SERVICE + "ModelReady",
                                  response_deserializer=service_pb2.ModelReadyResponse.FromString)
        resp = await rpc(service_pb2.ModelReadyRequest(name="summarize", version=version)
                         .SerializeToString(), timeout=10.0)
        got[e] = resp.ready
    assert got == {"python": ready, "envoy": ready}


async def test_a_model_only_outside_the_callers_regions_is_refused_on_both_engines(
        engines: dict[str, grpc.aio.Channel]) -> None:
    """``generate`` runs in r-east and r-west only: a call or stream allowed r-central alone
    is FAILED_PRECONDITION naming the regions on offer, never served elsewhere."""
    md = [("x-allowed-regions", "r-central")]
    unary = await both(engines, md, request_bytes("generate"))
    streams = {}
    for e, ch in engines.items():
        stream: Any = ch.stream_stream(SERVICE + "ModelStreamInfer", request_serializer=None,
                                       response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stream(iter([llm_request("generate", [1, 2, 3], 4)]),
                                  metadata=tuple(md), timeout=10.0):
                pass
        streams[e] = (err.value.code(), err.value.details() or "")
    for got in (unary, streams):
        assert {e: c for e, (c, _) in got.items()} == {
            "python": grpc.StatusCode.FAILED_PRECONDITION,
            "envoy": grpc.StatusCode.FAILED_PRECONDITION}, got
        assert all("regions ['r-central']" in d for _, d in got.values()), got


# A request whose model name reads but whose tensors do not: Triton answers INTERNAL "Unable
# to parse request". The last tests of the module: through Envoy such calls eject healthy
# deployments (below), which must not touch the tests before.
UNPARSEABLE_TENSORS = request_bytes() + b"\x2a\x02\xff\xff"  # field 5 (inputs): 2 bad bytes


async def test_bytes_triton_cannot_parse_are_invalid_argument_on_both_engines(
        engines: dict[str, grpc.aio.Channel]) -> None:
    """The caller's bytes, not the backend, are at fault (old Lua: INTERNAL on Envoy)."""
    got = await both(engines, [], UNPARSEABLE_TENSORS)
    assert {e: c for e, (c, _) in got.items()} == {"python": INVALID, "envoy": INVALID}, got
    assert all(d.startswith("request bytes do not parse as a ModelInferRequest (")
               for _, d in got.values()), got


def envoy_ejections(mesh: EnvoyMesh) -> int:
    return sum(int(line.rpartition(": ")[2]) for line in mesh.envoy.admin(
        "/stats?filter=outlier_detection.ejections_enforced_total").splitlines()
        if line.startswith("cluster.dep_"))


async def test_a_callers_bad_bytes_eject_nothing_on_either_engine(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel]) -> None:
    """A backend's INTERNAL for a caller's unparseable bytes is the caller's fault: the Python
    edge holds only UNAVAILABLE-like statuses against a backend, and Envoy's outlier detection
    enforces gateway failures only (``services/xds/clusters.py``). Fails on the old clusters,
    whose consecutive_5xx counted the 500 Envoy maps INTERNAL to."""
    ejected = envoy_ejections(mesh)
    for _ in range(6):
        for ch in engines.values():
            await raw_infer(ch, [], UNPARSEABLE_TENSORS, timeout=10.0)
    assert not mesh.slow.router.blocked
    assert envoy_ejections(mesh) == ejected
