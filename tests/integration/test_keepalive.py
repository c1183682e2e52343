"""Keepalive over real connections (issue 10: "Too many pings"): a server built with
``transport.server_options`` accepts the pings a client with ``transport.CLIENT_KEEPALIVE``
sends, and a Triton with its default policy accepts the edge's upstream channels, each for
longer than gRPC's ping strike limit would allow if the two ends disagreed."""

from __future__ import annotations

import asyncio
import pathlib

import grpc
import pytest
from tritonclient.grpc import service_pb2

from services.edge.upstream import Upstreams
from services.security import transport
from services.security.settings import LimitsSettings
from tests.fixtures_backends import StartBackend
from tests.mesh_harness import mesh_config

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
            await asyncio.sleep(0.2)  # pacing: the watch's sampling interval
    finally:
        await ch.close()
        await server.stop(0)


async def test_the_edge_keeps_its_idle_channel_to_a_default_triton(
        triton_backend: StartBackend, tmp_path: pathlib.Path) -> None:
    """Triton's default keepalive policy accepts what the edge's upstream channels send: an
    idle channel outlives the 30 s after which pings every 10 s got GOAWAY too_many_pings."""
    proc = triton_backend(mesh_config(tmp_path), "west-cheap")
    ups = Upstreams(lambda endpoint: endpoint, 1 << 20)
    try:
        up = ups.get(proc.endpoint)
        ready = await up.stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=5)
        assert ready.ready
        loop = asyncio.get_running_loop()
        # Absence over a period: 3 strikes of 10 s pings, plus margin.
        until = loop.time() + 36
        while loop.time() < until:
            state = up.channel.get_state()
            assert state is grpc.ChannelConnectivity.READY, (
                f"channel to Triton closed with {until - loop.time():.1f} s left: {state}")
            await asyncio.sleep(0.5)  # pacing: the watch's sampling interval
    finally:
        await ups.close()
