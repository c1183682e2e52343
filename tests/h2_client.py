"""A raw HTTP/2 gRPC caller (the ``h2`` package) for what grpcio never sends as written: an
unknown ``grpc-encoding``, a ``-bin`` value that is not base64, gRPC's reserved request
headers. One ModelInfer per connection, its answer as (grpc-status, grpc-message)."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Sequence
from typing import Any

import h2.config
import h2.connection
import h2.events

from tests.mesh_harness import INFER_PATH


async def h2_open(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                         h2.connection.H2Connection, int]:
    """A connection to ``address`` whose client sends headers as written (no validation),
    its preface queued, and the id of its first stream."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8", validate_outbound_headers=False))
    conn.initiate_connection()
    return reader, writer, conn, conn.get_next_available_stream_id()


async def h2_infer(address: str, extra: Sequence[tuple[str, str]], body: bytes,
                   timeout_s: float = 10.0) -> tuple[str, str]:
    """(grpc-status, grpc-message percent-decoded) of one ModelInfer sent with the headers
    ``extra`` after gRPC's own (content-type, te: those ``extra`` names are its); ``reset N``
    for a stream reset with code N, ``none`` when the connection closed without an answer."""
    reader, writer, conn, sid = await h2_open(address)
    own = [("content-type", "application/grpc"), ("te", "trailers")]
    given = {k for k, _ in extra}
    conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", INFER_PATH),
                            (":authority", address), *(h for h in own if h[0] not in given),
                            *extra])
    conn.send_data(sid, b"\x00" + len(body).to_bytes(4, "big") + body, end_stream=True)
    writer.write(conn.data_to_send())
    got: dict[str, Any] = {}
    try:
        while "grpc-status" not in got:
            data = await asyncio.wait_for(reader.read(65536), timeout_s)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    got.update((str(k), v) for k, v in ev.headers or ())
                elif isinstance(ev, h2.events.StreamReset):
                    got["grpc-status"] = f"reset {ev.error_code}"
            writer.write(conn.data_to_send())
    finally:
        writer.close()
    return (str(got.get("grpc-status", "none")),
            urllib.parse.unquote(str(got.get("grpc-message", ""))))
