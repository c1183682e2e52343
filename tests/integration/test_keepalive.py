"""Keepalive over a real connection: a server built with ``transport.server_options`` accepts
the pings a client with ``transport.CLIENT_KEEPALIVE`` sends, for longer than gRPC's ping
strike limit would allow if the two disagreed (issue 10: "Too many pings")."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.security import transport
from services.security.settings import LimitsSettings

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

STRIKES = 2  # gRPC's default grpc.http2.max_ping_strikes: the third bad ping is a GOAWAY


async def test_an_idle_client_pinging_at_the_shared_interval_is_never_sent_away() -> None:
    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    server = grpc.aio.server(options=transport.server_options(LimitsSettings()))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "t.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(unary)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    # Unlimited pings without data, so the client keeps pinging at its keepalive interval on
    # an idle connection (the strictest case for the server's ping policy).
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
        *transport.CLIENT_KEEPALIVE, ("grpc.http2.max_pings_without_data", 0)])
    try:
        assert await ch.unary_unary("/t.Echo/Echo")(b"x", timeout=5) == b"x"
        loop = asyncio.get_running_loop()
        # Absence over a period, not a condition to wait for: watch the connection through
        # STRIKES + 1 ping intervals and fail the moment it is closed.
        until = loop.time() + (STRIKES + 1.5) * transport.KEEPALIVE_TIME_MS / 1000
        while loop.time() < until:
            state = ch.get_state()
            assert state is grpc.ChannelConnectivity.READY, (
                f"connection closed after {until - loop.time():.1f} s left: {state}")
            await asyncio.sleep(0.2)
    finally:
        await ch.close()
        await server.stop(0)
