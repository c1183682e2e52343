"""The C dynamic module (native/switchyard_edge.c) answers the hostile input of
tests/integration/test_hostile_engines.py as the Python edge and the listener Lua do: x-slo-ms
read as services/edge/hints.py reads it (a plain decimal within SLO_RANGE, repeats agreeing as
numbers, refused in its words, percent-encoded as gRPC sends a message), a repeated x-tenant
that disagrees refused, a hint sent as a -bin header refused (its value quoted as Python's
_binary quotes it), [security.limits] on the metadata, a model name with a NUL, CR or LF sent
to the unknown-model route, one not UTF-8 refused, a message over max_message_bytes refused,
a compressed one sent to the slow path; on the way back, a variant gone from every
deployment UNAVAILABLE with the Python edge's hint and a backend's INTERNAL for unparseable
bytes INVALID_ARGUMENT. Against the FAKE Envoy host
(tests/native/fake_envoy_host.c); the module inside the real Envoy:
tests/integration/test_envoy_dynmod.py. Every case here that the old module answered
differently fails on it (its tonumber-like strtod took '0x10', ' 50'; it refused '50' repeated
as '50.0'; it had none of the other rules)."""

from __future__ import annotations

import base64
import math
import re
import urllib.parse
from collections.abc import Sequence

import grpc
import pytest

from placement.attempts import (
    GONE_HINT,
    TRITON_UNKNOWN_MODEL,
    VARIANT_GONE_ENDINGS,
    VARIANT_GONE_PATTERN,
)
from placement.errors import InvalidHint, InvalidRequest
from services.edge import hints, wire
from services.security import xfcc
from services.xds import lua, native
from tests.integration.test_hostile_engines import (
    BINARY,
    HINTS,
    LIMIT,
    LIMITS,
    MIXED,
    REQUESTS,
)
from tests.mesh_harness import request_bytes
from tests.native.envoy_host import (
    REQUEST_HEADER,
    RESPONSE_HEADER,
    RESPONSE_TRAILER,
    FakeEnvoyHost,
    build,
)

INFER, STREAM = lua.INFER_PATH, lua.STREAM_PATH
CONTINUE, STOP = 0, 1
CONFIG = "margin=5.0;slow=0"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> FakeEnvoyHost:
    return FakeEnvoyHost(build(tmp_path_factory.mktemp("dm-parity")))


def _frame(message: bytes, compressed: bool = False) -> bytes:
    return bytes([1 if compressed else 0]) + len(message).to_bytes(4, "big") + message


def _grouped(md: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """The caller's metadata as the fake host takes it (each key's values in their order)."""
    out: dict[str, list[str]] = {}
    for k, v in md:
        out.setdefault(k, []).append(v)
    return out


def _python(md: Sequence[tuple[str, str | bytes]]) -> tuple[int, str] | None:
    """What the Python edge's hint parser answers: None (served) or INVALID_ARGUMENT's words."""
    try:
        hints.parse(md, frozenset({"east"}), ())
    except InvalidHint as err:
        return 3, str(err)
    return None


@pytest.mark.parametrize(("md", "code"), HINTS, ids=[repr(md) for md, _ in HINTS])
def test_a_hint_gets_the_python_edges_status_and_words(
        host: FakeEnvoyHost, md: list[tuple[str, str]], code: grpc.StatusCode) -> None:
    expected = _python(md)
    assert (expected is None) is (code is grpc.StatusCode.OK)  # the case says what Python does
    assert host.new_config("listener", CONFIG)
    host.start({":path": INFER, **_grouped(md)}, _frame(wire.encode_name_field("m")))
    assert host.request_headers() == STOP  # waits for the body: its bytes come first
    assert host.reply() is None
    host.request_body()
    assert _reply(host) == expected
    if expected is None:
        slo = [v for k, v in md if k == "x-slo-ms"]
        assert host.header(lua.SLO_HEADER) == (
            str(math.floor(float(slo[0]))) if slo else None)


@pytest.mark.parametrize("values", [
    ["50", "60", "abc"],  # the contradiction comes first, as Python reads them
    ["abc", "50"],
    ["1e400"],
    ["-0"],
    ["it's"],  # Python's repr picks double quotes
    ["a\\b"],
    ["1" * 300],  # longer than the old 256-byte message: the whole value, as Python quotes it
    ["5%20"],  # percent-encoded on the wire, as gRPC sends it (the old module: read as "5 0")
    ["\u00e9t\u00e9"],  # UTF-8, quoted as it is
])
def test_more_slo_values_get_the_python_edges_words(host: FakeEnvoyHost,
                                                    values: list[str]) -> None:
    md = [("x-slo-ms", v) for v in values]
    assert host.new_config("listener", CONFIG)
    host.start({":path": INFER, "x-slo-ms": values}, _frame(wire.encode_name_field("m")))
    assert host.request_headers() == STOP and host.reply() is None
    host.request_body()
    assert _reply(host) == _python(md) is not None


def _reply(host: FakeEnvoyHost) -> tuple[int, str] | None:
    """The module's answer as the caller reads it (gRPC percent-decodes grpc-message)."""
    reply = host.reply()
    return None if reply is None else (reply[0], urllib.parse.unquote(reply[1], errors="strict"))


@pytest.mark.parametrize("path", [INFER, STREAM])
@pytest.mark.parametrize("hint", sorted(hints.HINTS))
def test_a_hint_sent_as_a_binary_header_is_refused_in_the_python_edges_words(
        host: FakeEnvoyHost, path: str, hint: str) -> None:
    """The old module's words (the Lua's) quoted no value: fails on it. A stream is refused
    at its headers, a ModelInfer once its bytes are read (as the Python edge checks them
    before its hints)."""
    assert host.new_config("listener", "margin=5.0;slow=1")
    host.start({":path": path, f"{hint}-bin": "AAAA"}, _frame(wire.encode_name_field("m")))
    assert host.request_headers() == STOP
    if path == INFER:
        assert host.reply() is None
        host.request_body()
    assert _reply(host) == _python([(f"{hint}-bin", b"\0\0\0")]) == (
        3, f"metadata {hint}-bin='\\x00\\x00\\x00': {hint} is a text header; a binary one "
           "is not read as the hint")
    assert host.header(lua.PATH_HEADER) is None  # not sent to the slow path either


@pytest.mark.parametrize(("key", "value"), BINARY, ids=[k for k, _ in BINARY])
@pytest.mark.parametrize("padded", [True, False])
def test_a_binary_hints_value_is_quoted_as_the_python_edge_quotes_it(
        host: FakeEnvoyHost, key: str, value: bytes, padded: bool) -> None:
    """test_hostile_engines' -bin cases, as gRPC carries them (base64, padded or not)."""
    sent = base64.b64encode(value).decode()
    assert host.new_config("listener", CONFIG)
    host.start({":path": INFER, key: sent if padded else sent.rstrip("=")},
               _frame(wire.encode_name_field("m")))
    assert host.request_headers() == STOP
    host.request_body()  # a ModelInfer's hints are answered after its bytes
    assert _reply(host) == _python([(key, value)]) is not None


@pytest.mark.parametrize("value", [
    b"\xff" * 100,  # each byte U+FFFD: 9 bytes on the wire (%EF%BF%BD), the most there is
    b"\x00" * 100,  # each \\x00
    "\u20ac".encode() * 30,  # cut at 64 bytes inside the 22nd character
    b"'\"\\" * 30,  # both quotes: each escaped
], ids=["0xff", "NUL", "euro", "quotes"])
def test_a_binary_hints_worst_case_value_is_quoted_whole(host: FakeEnvoyHost,
                                                         value: bytes) -> None:
    """Its first 64 bytes, every one escaped, as Python quotes them: the old module cut the
    message at 256 bytes (fails on it: 0xff, NUL and euro)."""
    assert host.new_config("listener", CONFIG)
    host.start({":path": STREAM, "x-tenant-bin": base64.b64encode(value).decode()})
    assert host.request_headers() == STOP
    expected = _python([("x-tenant-bin", value)])
    assert expected is not None and _reply(host) == expected


def test_every_byte_and_latin1_character_is_quoted_as_python_quotes_it(
        host: FakeEnvoyHost) -> None:
    """Each byte alone (ASCII's controls escaped, the rest U+FFFD) and each of U+0080..U+00FF
    in UTF-8 (\\x80..\\xa0 and \\xad escaped), in a -bin value. (Beyond Latin-1, Python also
    escapes what str.isprintable refuses, private-use and unassigned code points among them:
    7915 in the BMP on Python 3.11; the module and the Lua quote those as they are.)"""
    values = [bytes([b]) for b in range(256)] + [chr(c).encode() for c in range(0x80, 0x100)]
    got, want = [], []
    for value in values:
        assert host.new_config("listener", CONFIG)
        host.start({":path": INFER, "x-tenant-bin": base64.b64encode(value).decode()},
                   _frame(wire.encode_name_field("m")))
        host.request_headers()
        host.request_body()
        got.append(_reply(host))
        want.append(_python([("x-tenant-bin", value)]))
    assert got == want


def _in_order(host: FakeEnvoyHost, path: str, md: Sequence[tuple[str, str | bytes]],
              body: bytes | None = None) -> None:
    """A new stream with the caller's metadata in its order (a -bin value as gRPC carries
    it, base64), not grouped by key."""
    host.start({":path": path}, body)
    for k, v in md:
        sent = base64.b64encode(v).decode() if isinstance(v, bytes) else v
        host.lib.fh_add_header(REQUEST_HEADER, k.encode(), sent.encode())


def _python_call(md: Sequence[tuple[str, str | bytes]], raw: bytes) -> tuple[int, str | None]:
    """What the Python edge answers a ModelInfer: its size, then its bytes (wire's words: the
    module's differ, None), then its hints (hints.parse, entry by entry)."""
    if len(raw) > LIMIT:
        return 8, f"request of {len(raw)} bytes is larger than max_message_bytes " \
                  f"({len(raw)} vs. {LIMIT})"
    try:
        wire.scan_model_name(raw)
    except InvalidRequest:
        return 3, None
    said = _python(md)
    assert said is not None  # every case here has a bad hint
    return said


ORDERED = [
    ("x-tenant a, a bad x-slo-ms, x-tenant b",
     [("x-tenant", "a"), ("x-slo-ms", "abc"), ("x-tenant", "b")]),
    ("x-slo-ms 50, x-tenant a, x-slo-ms 60, x-tenant b",
     [("x-slo-ms", "50"), ("x-tenant", "a"), ("x-slo-ms", "60"), ("x-tenant", "b")]),
    ("x-tenant a, x-tenant-bin, x-tenant b",
     [("x-tenant", "a"), ("x-tenant-bin", b"\x01"), ("x-tenant", "b")]),
]


@pytest.mark.parametrize(("md", "raw"),
                         [(m, r) for _, m, r, _ in MIXED]
                         + [(m, request_bytes()) for _, m in ORDERED],
                         ids=[n for n, _, _, _ in MIXED] + [n for n, _ in ORDERED])
def test_the_first_fault_answers_as_on_the_python_edge(
        host: FakeEnvoyHost, md: list[tuple[str, str | bytes]], raw: bytes) -> None:
    """test_hostile_engines' MIXED cases (and keys interleaved): a ModelInfer's size, then its
    bytes, then its first refused hint in the caller's order. The old module refused a hint
    at the headers, -bin first, then a disagreeing x-tenant, then x-slo-ms: all 11 fail on it
    (answered before the bytes), 7 also by what it answered (over the limit, bad bytes, no
    model, a bad x-slo-ms before x-tenant a, b or a -bin hint, the first two interleaved)."""
    assert host.new_config("listener", f"margin=5.0;slow=0;max_message_bytes={LIMIT}")
    _in_order(host, INFER, md, _frame(raw))
    assert host.request_headers() == STOP
    assert host.reply() is None  # nothing answered before the bytes are in
    host.request_body()
    code, words = _python_call(md, raw)
    got = _reply(host)
    assert got is not None and got[0] == code, got
    if words is None:
        assert not got[1].startswith("metadata "), got
    else:
        assert got[1] == words


@pytest.mark.parametrize(("path", "slow", "md", "answer"), [
    # a stream: a -bin hint refused at its headers, unless a hint only the slow path reads
    # came first (the slow path answers, in the caller's order; the old module refused it)
    (STREAM, 1, [("x-min-quality", "0.9"), ("x-slo-ms-bin", b"1")], "slow"),
    (STREAM, 1, [("x-slo-ms-bin", b"1"), ("x-min-quality", "0.9")], "refused"),
    (STREAM, 0, [("x-min-quality", "0.9"), ("x-slo-ms-bin", b"1")], "refused"),
    # a ModelInfer the slow path would take: without one, its bad hint is INVALID_ARGUMENT,
    # as on Python (the old module: UNIMPLEMENTED); with one, the slow path answers
    (INFER, 0, [("x-slo-ms", "abc"), ("x-min-quality", "0.9")], "refused"),
    (INFER, 0, [("x-min-quality", "0.9"), ("x-tenant", "a"), ("x-tenant", "b")], "refused"),
    (INFER, 1, [("x-slo-ms", "abc"), ("x-min-quality", "0.9")], "slow"),
    (INFER, 1, [("x-min-quality", "0.9"), ("x-slo-ms-bin", b"1")], "slow"),
])
def test_a_bad_hint_beside_a_slow_paths_hint(host: FakeEnvoyHost, path: str, slow: int,
                                            md: list[tuple[str, str | bytes]],
                                            answer: str) -> None:
    """lua.py's listener since 689c929. 4 of these 7 fail on the old module (the first, the
    two refused ModelInfers and the last: it refused a -bin hint at the headers)."""
    assert host.new_config("listener", f"margin=5.0;slow={slow}")
    _in_order(host, path, md, _frame(wire.encode_name_field("m")))
    said = host.request_headers()
    if answer == "slow":
        assert said == CONTINUE and host.reply() is None
        assert host.header(lua.PATH_HEADER) == "slow"
    else:
        assert said == STOP and _reply(host) == _python(md) is not None
        assert host.header(lua.PATH_HEADER) is None


def test_a_binary_header_that_names_no_hint_is_not_refused(host: FakeEnvoyHost) -> None:
    assert host.new_config("listener", CONFIG)
    host.start({":path": INFER, "x-trace-bin": "AAAA"}, _frame(wire.encode_name_field("m")))
    host.request_headers()
    host.request_body()
    assert host.reply() is None and host.header(lua.MODEL_HEADER) == "m"


LIMITED = "margin=5.0;slow=0;max_metadata_bytes=8192;max_metadata_count=64"


@pytest.mark.parametrize(("md", "code"), LIMITS,
                         ids=["60 entries", "70 entries", "300 entries", "10 KB", "50 KB"])
def test_the_metadata_limits_hold(host: FakeEnvoyHost, md: list[tuple[str, str]],
                                  code: grpc.StatusCode) -> None:
    assert host.new_config("listener", LIMITED)
    host.start({":path": INFER, **_grouped(md)}, _frame(wire.encode_name_field("m")))
    host.request_headers()
    reply = host.reply()
    if code is grpc.StatusCode.OK:
        assert reply is None
    elif code is grpc.StatusCode.INVALID_ARGUMENT:  # the tenant gate's words
        assert reply == (3, "call carries 70 metadata entries (limit 64)")
    else:
        assert reply is not None and reply[0] == 8, reply
        assert re.fullmatch(r"metadata of (\d+) bytes is larger than max_metadata_bytes "
                            r"\(\1 vs\. 8192\)", reply[1]), reply


def test_the_entry_count_holds_on_calls_and_streams_only(host: FakeEnvoyHost) -> None:
    many = {f"x-h{i}": "v" for i in range(70)}
    assert host.new_config("listener", LIMITED)
    host.start({":path": lua.SERVICE_PATH + "ServerLive", **many})
    assert host.request_headers() == CONTINUE and host.reply() is None
    host.start({":path": STREAM, **many})
    assert host.request_headers() == STOP
    assert host.reply() == (3, "call carries 70 metadata entries (limit 64)")


def test_no_limits_configured_none_checked(host: FakeEnvoyHost) -> None:
    assert host.new_config("listener", CONFIG)
    host.start({":path": INFER, **{f"x-h{i}": "v" * 100 for i in range(300)}},
               _frame(wire.encode_name_field("m")))
    assert host.request_headers() == STOP and host.reply() is None


@pytest.mark.parametrize(("raw", "code"), [(r, c) for _, r, c in REQUESTS],
                         ids=[n for n, _, _ in REQUESTS])
def test_a_request_gets_the_python_edges_status(host: FakeEnvoyHost, raw: bytes,
                                                code: grpc.StatusCode) -> None:
    assert host.new_config("listener", f"margin=5.0;slow=0;max_message_bytes={LIMIT}")
    host.start({":path": INFER}, _frame(raw))
    assert host.request_headers() == STOP
    host.request_body()
    reply = host.reply()
    if code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND):
        # routed by the model header; none (the unknown-model route) for a name no header
        # can carry
        assert reply is None
        name = wire.scan_model_name(raw)
        carried = not any(c in name for c in "\0\r\n")
        assert host.header(lua.MODEL_HEADER) == (name if carried else None)
        assert host.cleared() == 1
    elif code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        assert reply == (8, f"request of {LIMIT + 1} bytes is larger than max_message_bytes "
                            f"({LIMIT + 1} vs. {LIMIT})")
    else:
        assert reply is not None and reply[0] == 3, reply
        assert host.header(lua.MODEL_HEADER) is None


@pytest.mark.parametrize("raw", [b"\x0a\x02\xff\xfe", b"\x0a\x02\xc0\xaf", b"\x0a\x03\xed\xa0\x80",
                                 b"\x0a\x02a\xc3", b"\x0a\x04\xf4\x90\x80\x80"])
def test_a_name_not_utf8_is_refused_in_wires_words(host: FakeEnvoyHost, raw: bytes) -> None:
    with pytest.raises(Exception, match="model_name is not valid UTF-8"):
        wire.scan_model_name(raw)
    assert host.new_config("listener", CONFIG)
    host.start({":path": INFER}, _frame(raw))
    host.request_headers()
    host.request_body()
    assert host.reply() == (3, "model_name is not valid UTF-8")


def test_a_compressed_call_takes_the_slow_path_where_there_is_one(host: FakeEnvoyHost) -> None:
    body = _frame(b"\x1f\x8b", compressed=True)
    assert host.new_config("listener", "margin=5.0;slow=1")
    host.start({":path": INFER}, body)
    host.request_headers()
    assert host.request_body() == CONTINUE
    assert host.reply() is None and host.header(lua.PATH_HEADER) == "slow"
    assert host.body() == body  # sent on as the caller sent it


def test_the_limits_reach_the_modules_config() -> None:
    value = native.listener_filter(5.0, True, max_message_bytes=LIMIT, max_metadata_bytes=8192,
                                   max_metadata_count=64)["typed_config"]["filter_config"]["value"]
    assert value.endswith(f";max_message_bytes={LIMIT};max_metadata_bytes=8192;"
                          "max_metadata_count=64")
    assert "max_" not in native.listener_filter(5.0)["typed_config"]["filter_config"]["value"]
    with pytest.raises(ValueError, match="max_metadata_count=-1"):
        native.listener_filter(5.0, max_metadata_count=-1)


GONE = [f"{TRITON_UNKNOWN_MODEL}tiny-v1' {ending}" for ending in VARIANT_GONE_ENDINGS]


def _answered(host: FakeEnvoyHost, headers: dict[str, str], trailers: dict[str, str]) -> None:
    """A fast-path ModelInfer routed on the route placement pushes, answered so."""
    assert host.new_config("listener", CONFIG)
    host.start({":path": INFER}, _frame(wire.encode_name_field("tiny")))
    host.metadata(lua.LISTENER_FILTER, "path", "envoy")
    host.request_headers()
    host.request_body()
    host.response(headers, trailers)


@pytest.mark.parametrize("message", GONE)
def test_a_variant_gone_everywhere_is_unavailable_with_the_python_edges_hint(
        host: FakeEnvoyHost, message: str) -> None:
    assert re.fullmatch(VARIANT_GONE_PATTERN, message)
    _answered(host, {":status": "200", "grpc-status": "5", "grpc-message": message}, {})
    assert host.header("grpc-status", RESPONSE_HEADER) == "14"
    assert host.header("grpc-message", RESPONSE_HEADER) == message + GONE_HINT
    assert host.header(lua.PATH_TRAILER, RESPONSE_HEADER) == "envoy"


@pytest.mark.parametrize("message", [
    "Request for unknown model: 'nosuch' is not found, really",
    "Request for unknown model: 'a'b' is not found",  # [^']* holds no quote
    "unknown model 'tiny-v1' is not found"])
def test_another_not_found_is_passed_as_it_is(host: FakeEnvoyHost, message: str) -> None:
    assert not re.fullmatch(VARIANT_GONE_PATTERN, message)
    _answered(host, {":status": "200", "grpc-status": "5", "grpc-message": message}, {})
    assert host.header("grpc-status", RESPONSE_HEADER) == "5"
    assert host.header("grpc-message", RESPONSE_HEADER) == message


@pytest.mark.parametrize("where", ["headers", "trailers"])
def test_a_backends_unparseable_request_is_invalid_argument(host: FakeEnvoyHost,
                                                            where: str) -> None:
    message = wire.UNPARSEABLE + ": unexpected end of input"
    status = {"grpc-status": "13", "grpc-message": message}
    if where == "headers":  # trailers-only
        _answered(host, {":status": "200", **status}, {})
    else:
        _answered(host, {":status": "200"}, status)
    kind = RESPONSE_HEADER if where == "headers" else RESPONSE_TRAILER
    assert host.header("grpc-status", kind) == "3"
    assert host.header("grpc-message", kind) == (
        "request bytes do not parse as a ModelInferRequest (the deployment answered: "
        f"{message})")


@pytest.mark.parametrize(("cert", "slow"), [
    ('Hash=ab;Subject="CN=acme-client";URI=spiffe://acme/client', True),
    ("Hash=ab;DNS=gateway.acme.example", True),
    ('Hash=ab;Subject="CN=someone-else"', False),
    (None, False),
])
def test_a_client_certificate_that_may_name_a_tenant_takes_the_slow_path(
        host: FakeEnvoyHost, cert: str | None, slow: bool) -> None:
    """lua.py's cert_tenant: with tenants=credential, a call whose forwarded certificate holds
    a tenant's client_san is a tenant's call (the old module read authorization and x-tenant
    only, so a certificate's tenant was served anonymously on the fast path)."""
    value = native.listener_filter(5.0, True, tenants="credential", tenant_sans=[
        "spiffe://acme/client", "gateway.acme.example"])["typed_config"]["filter_config"]["value"]
    assert host.new_config("listener", value)
    host.start({":path": INFER, **({xfcc.HEADER: cert} if cert else {})},
               _frame(wire.encode_name_field("m")))
    assert host.request_headers() == (CONTINUE if slow else STOP)
    assert (host.header(lua.PATH_HEADER) == "slow") is slow
