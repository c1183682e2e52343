"""The edge's backend channels reach a backend whose HTTP/2 handshake takes longer than 100 ms.

A real gRPC server behind the EMULATED WAN relay (services/backends/wan.py) at 150 ms one
way: its SETTINGS frame reaches the edge 150 ms after the TCP connect. With
``grpc.min_reconnect_backoff_ms=100`` in the edge's channel options (gRPC core also takes it
as the minimum connection-attempt time) every attempt failed with "connection attempt timed
out before receiving SETTINGS frame", and every call and health check with UNAVAILABLE; a
fresh-clone CI run saw that on a loaded host through the relay's 20 ms (test_security's
west-only tenant got UNAVAILABLE: both remote backends failed their first health checks).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.backends.wan import RelayRoute, WanRelay
from services.edge.upstream import Upstreams

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CHECK = "/grpc.health.v1.Health/Check"


@pytest_asyncio.fixture(loop_scope="module")
async def far_backend() -> AsyncIterator[str]:
    """A gRPC server 150 ms away (emulated): the address the edge dials."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    relay = WanRelay([RelayRoute("r-far", "far", 0, f"127.0.0.1:{port}", 150.0)])
    await relay.start()
    try:
        yield f"127.0.0.1:{relay.port_of(relay.routes[0])}"
    finally:
        await relay.stop()
        await server.stop(0)


async def test_a_backend_whose_handshake_takes_150_ms_is_reached(far_backend: str) -> None:
    ups = Upstreams(lambda endpoint: endpoint, 1 << 20)
    try:
        check = ups.get(far_backend).channel.unary_unary(
            CHECK, request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        # The deadline is generous on purpose (a loaded host): what is tested is that the
        # connection attempt is not cut at 100 ms, which failed within ~130 ms.
        resp = await check(health_pb2.HealthCheckRequest(), timeout=20.0)
    finally:
        await ups.close()
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_backend_that_accepts_and_never_answers_still_fails_a_check_in_its_timeout(
        ) -> None:
    """Without the 100 ms cap a connection attempt may take gRPC's 20 s; a health check
    (``control.HealthChecker``: 0.5 s) must still fail within its own timeout, so a silent
    backend is blocked as fast as before."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.append(w)  # kept open, never a byte back: no SETTINGS, no answer

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ups = Upstreams(lambda endpoint: endpoint, 1 << 20)
    try:
        check = ups.get(f"127.0.0.1:{port}").channel.unary_unary(
            CHECK, request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await check(health_pb2.HealthCheckRequest(), timeout=0.5)
        took = loop.time() - t0
    finally:
        await ups.close()
        for w in accepted:
            w.close()
        server.close()
    assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED, err.value
    assert accepted  # the connection was made: the check waited on the silent server
    assert took < 10.0, f"took {took:.1f} s: the connection attempt's time, not the check's"
