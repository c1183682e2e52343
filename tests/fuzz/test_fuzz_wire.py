"""Property-based fuzzing of the edge's request-bytes reader against the real protobuf parser.

Properties: arbitrary bytes give a name or ``InvalidRequest`` (nothing else, no hang);
on well-formed requests the name is what ``ModelInferRequest`` parses; a rewrite is read
back as the variant by both the scanner and the parser; where the parser accepts arbitrary
bytes and the scanner does too, they agree.
"""

from __future__ import annotations

import os

from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from placement.errors import InvalidRequest
from services.edge.wire import rewrite_model_name, scan_model_name
from tests.fuzz.strategies import infer_requests

EXAMPLES = int(os.environ.get("SWITCHYARD_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=1000,
                suppress_health_check=[HealthCheck.too_slow])


def scan_or_error(buf: bytes) -> str | InvalidRequest:
    try:
        return scan_model_name(buf)
    except InvalidRequest as exc:
        return exc


def parsed(buf: bytes) -> service_pb2.ModelInferRequest | None:
    try:
        return service_pb2.ModelInferRequest.FromString(buf)
    except DecodeError:
        return None


@FUZZ
@given(st.binary(max_size=2048))
@example(b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01")  # 11-byte length varint
@example(b"\x0a\xff\xff\xff\xff\x0f")  # length 2^32-1, nothing follows
@example(b"\x0b\x0a\x01a\x0c")  # a group around a name
@example(b"\x0a\x02\xc3\x28")  # invalid UTF-8
def test_arbitrary_bytes_give_a_name_or_invalid_request(buf: bytes) -> None:
    out = scan_or_error(buf)
    msg = parsed(buf)
    if isinstance(out, str) and msg is not None:
        assert out == msg.model_name  # both accept: they must agree
    if msg is not None and msg.model_name and isinstance(out, InvalidRequest):
        # the scanner may be stricter than protobuf only for groups and over-long names
        assert ("wire type" in out.message or "limit" in out.message), (buf, out)


@FUZZ
@given(infer_requests())
def test_well_formed_requests_scan_like_the_parser(req: service_pb2.ModelInferRequest) -> None:
    buf = req.SerializeToString()
    out = scan_or_error(buf)
    if len(req.model_name.encode()) <= 1024:
        assert out == req.model_name


@FUZZ
@given(infer_requests(), st.text(min_size=1, max_size=300))
def test_rewrite_then_scan_gives_the_variant(req: service_pb2.ModelInferRequest,
                                             variant: str) -> None:
    buf = req.SerializeToString()
    out = rewrite_model_name(buf, req.model_name, variant)
    assert scan_model_name(out) == variant
    back = service_pb2.ModelInferRequest.FromString(out)
    assert back.model_name == variant
    back.model_name = req.model_name
    assert back == req  # nothing else changed


@FUZZ
@given(st.binary(max_size=512), st.text(min_size=1, max_size=64))
def test_rewrite_of_garbage_never_makes_it_valid_elsewhere(buf: bytes, variant: str) -> None:
    """Appending field 1 to bytes the scanner rejects must not be needed: the edge scans
    first; but when the scan succeeds the rewritten bytes must scan as the variant."""
    if isinstance(scan_or_error(buf), str):
        assert scan_model_name(rewrite_model_name(buf, "", variant)) == variant
