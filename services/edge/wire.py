"""Reading and rewriting ``ModelInferRequest`` bytes without a full protobuf parse.

The edge only needs the model name (field 1). ``scan_model_name`` walks the top-level fields
(skipping each by its wire type and length, never touching tensor payloads) and returns the
*last* field-1 value, as a protobuf parser would. A truncated or malformed message raises
``InvalidRequest``. ``rewrite_model_name`` appends ``0x0a len name``: the parser keeps the
last value of a singular field, so the backend sees the variant's name.
"""

from __future__ import annotations

from placement.errors import InvalidRequest

_MAX_NAME = 1024
# Triton's INTERNAL for bytes whose tensors do not parse (an edge reads only the model name):
# the caller's error, INVALID_ARGUMENT on both engines (router._failed, the listener Lua).
UNPARSEABLE = "Unable to parse request"
# What ``rewrite_model_name`` may add to a request: a variant name of up to this many bytes
# less its 1-byte tag and length varint. The upstream channel's send limit is the caller's
# limit plus this, so a request at exactly ``max_message_bytes`` still reaches the backend.
REWRITE_HEADROOM_BYTES = 4096


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise InvalidRequest("request bytes are truncated inside a varint; "
                                 "not a ModelInferRequest")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise InvalidRequest("request bytes hold a varint longer than 10 bytes; "
                                 "not a ModelInferRequest")


def scan_model_name(buf: bytes) -> str:
    """The model name a protobuf parser would see in a serialized ModelInferRequest."""
    pos, end = 0, len(buf)
    name: bytes | None = None
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise InvalidRequest("request bytes contain field number 0; not a protobuf message")
        if wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise InvalidRequest(f"request bytes are truncated: field {field} declares "
                                     f"{length} bytes, {end - pos} remain")
            if field == 1:
                name = buf[pos:pos + length]
            pos += length
        elif wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise InvalidRequest(f"request bytes use wire type {wire} (field {field}); "
                                 "not a ModelInferRequest")
        if pos > end:
            raise InvalidRequest("request bytes are truncated inside a fixed-width field")
    if not name:
        raise InvalidRequest("ModelInferRequest.model_name is empty; set the model to call")
    if len(name) > _MAX_NAME:
        raise InvalidRequest(f"model_name is {len(name)} bytes (limit {_MAX_NAME})")
    try:
        return name.decode()
    except UnicodeDecodeError:
        raise InvalidRequest("model_name is not valid UTF-8") from None


def encode_name_field(name: str) -> bytes:
    """``0x0a len name``: field 1, wire type 2, to append to a serialized request."""
    raw = name.encode()
    n, out = len(raw), bytearray(b"\x0a")
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + raw


def rewrite_model_name(buf: bytes, logical: str, variant: str) -> bytes:
    """The request as the backend must see it: unchanged when the names agree."""
    return buf if logical == variant else buf + encode_name_field(variant)
