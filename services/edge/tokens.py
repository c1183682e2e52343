"""LLM streams on the wire: the prompt a stream's request carries, the token each response
carries, and the request that resumes a generation elsewhere.

The edge forwards stream bytes untouched; it parses them only for a stream whose first
request carries a ``PROMPT`` input (the demo LLM's contract, ``services.backends.demo_model``:
``PROMPT`` INT32 token ids ``[1, n]``, or ``TEXT`` (one BYTES string, a token per UTF-8 byte;
a resumed request carries it as ``PROMPT``), optional ``MAX_TOKENS`` INT32 ``[1, 1]``, one ``TOKEN``
INT32 per response). Those are the streams that get token trailers, token-based choice and
resumption. Token ids travel as little-endian int32, in ``raw_input_contents`` (what
tritonclient sends) or ``contents.int_contents``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

PROMPT = "PROMPT"
MAX_TOKENS = "MAX_TOKENS"
TEXT = "TEXT"
TOKEN = "TOKEN"  # noqa: S105 -- a tensor name, not a secret


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """A parsed demo-LLM request: its prompt and how many tokens it asks for."""

    message: service_pb2.ModelInferRequest
    prompt: tuple[int, ...]
    max_tokens: int | None  # None: the model's default


def _ints(req: service_pb2.ModelInferRequest, name: str) -> tuple[int, ...] | None:
    for i, inp in enumerate(req.inputs):
        if inp.name != name:
            continue
        if i < len(req.raw_input_contents):
            raw = req.raw_input_contents[i]
            return struct.unpack(f"<{len(raw) // 4}i", raw[: len(raw) // 4 * 4])
        return tuple(inp.contents.int_contents)
    return None


def parse_request(raw: bytes) -> LlmRequest | None:
    """The prompt of a stream's first request, or None when it is not a demo-LLM request."""
    req = service_pb2.ModelInferRequest()
    try:
        req.ParseFromString(raw)
    except DecodeError:
        return None
    prompt = _ints(req, PROMPT)
    if prompt is None:
        prompt = _text(req)
    if prompt is None:
        return None
    limit = _ints(req, MAX_TOKENS)
    return LlmRequest(req, prompt, limit[0] if limit else None)


def _text(req: service_pb2.ModelInferRequest) -> tuple[int, ...] | None:
    """``TEXT`` tokenised as the demo LLM does: one token per UTF-8 byte."""
    for i, inp in enumerate(req.inputs):
        if inp.name != TEXT:
            continue
        if i < len(req.raw_input_contents):
            raw = req.raw_input_contents[i]
            if len(raw) < 4:
                return None
            (n,) = struct.unpack_from("<I", raw)
            return tuple(raw[4:4 + n])
        contents = inp.contents.bytes_contents
        return tuple(contents[0]) if contents else None
    return None


def _drop(req: service_pb2.ModelInferRequest, name: str) -> None:
    i = next((k for k, x in enumerate(req.inputs) if x.name == name), None)
    if i is None:
        return
    del req.inputs[i]
    if i < len(req.raw_input_contents):
        del req.raw_input_contents[i]


def _set_ints(req: service_pb2.ModelInferRequest, name: str, values: tuple[int, ...]) -> None:
    """Replace input ``name`` with ``values`` ([1, n] INT32), in the request's own encoding."""
    i = next((k for k, x in enumerate(req.inputs) if x.name == name), len(req.inputs))
    if i == len(req.inputs):
        req.inputs.add(name=name, datatype="INT32")
        if req.raw_input_contents:
            req.raw_input_contents.append(b"")
    inp = req.inputs[i]
    del inp.shape[:]
    inp.shape.extend([1, len(values)])
    if req.raw_input_contents:
        req.raw_input_contents[i] = struct.pack(f"<{len(values)}i", *values)
    else:
        inp.contents.ClearField("int_contents")
        inp.contents.int_contents.extend(values)


def resume_request(llm: LlmRequest, delivered: list[int], model: str, owed: int) -> bytes:
    """The request that continues ``llm`` after ``delivered`` tokens: the prompt plus them,
    and ``owed`` (the tokens still owed) as ``MAX_TOKENS``, addressed to ``model``."""
    req = service_pb2.ModelInferRequest()
    req.CopyFrom(llm.message)
    req.model_name = model
    _drop(req, TEXT)  # the prompt travels as token ids from now on
    _set_ints(req, PROMPT, llm.prompt + tuple(delivered))
    _set_ints(req, MAX_TOKENS, (owed,))
    data: bytes = req.SerializeToString()
    return data


def parse_token(raw: bytes) -> int | None:
    """The token a stream response carries; None for an error or the empty final response."""
    resp = service_pb2.ModelStreamInferResponse()
    try:
        resp.ParseFromString(raw)
    except DecodeError:
        return None
    if resp.error_message:
        return None
    out = resp.infer_response
    for i, o in enumerate(out.outputs):
        if o.name != TOKEN:
            continue
        if i < len(out.raw_output_contents) and len(out.raw_output_contents[i]) >= 4:
            return int(struct.unpack_from("<i", out.raw_output_contents[i])[0])
        if o.contents.int_contents:
            return int(o.contents.int_contents[0])
    return None


def llm_request(model: str, prompt: list[int] | tuple[int, ...] | str, max_tokens: int | None,
                request_id: str = "") -> bytes:
    """A demo-LLM request as a client would send it (tests, the demo); a ``str`` prompt
    travels as ``TEXT``."""
    req = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    if isinstance(prompt, str):
        text = prompt.encode()
        req.inputs.add(name=TEXT, datatype="BYTES", shape=[1, 1])
        req.raw_input_contents.append(struct.pack("<I", len(text)) + text)
    else:
        inp = req.inputs.add(name=PROMPT, datatype="INT32")
        inp.shape.extend([1, len(prompt)])
        req.raw_input_contents.append(struct.pack(f"<{len(prompt)}i", *prompt))
    if max_tokens is not None:
        m = req.inputs.add(name=MAX_TOKENS, datatype="INT32")
        m.shape.extend([1, 1])
        req.raw_input_contents.append(struct.pack("<i", max_tokens))
    data: bytes = req.SerializeToString()
    return data
