"""A fake placement server for agent tests: a real grpc.aio server on 127.0.0.1, port 0.

It implements ``RegisterBackend`` and ``StreamTelemetry`` only and records what it gets;
the other RPCs answer UNIMPLEMENTED as the generated servicer base does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc

from services.api.switchyard.v1 import placement_pb2, placement_pb2_grpc, telemetry_pb2
from tests.mesh_harness import eventually


class FakePlacement(placement_pb2_grpc.PlacementServicer):
    """Records registrations and every telemetry report it is streamed."""

    def __init__(self) -> None:
        self.registered: list[placement_pb2.RegisterBackendRequest] = []
        self.reports: list[telemetry_pb2.TelemetryReport] = []
        self.streams = 0

    async def RegisterBackend(self, request: placement_pb2.RegisterBackendRequest,
                              context: grpc.aio.ServicerContext
                              ) -> placement_pb2.RegisterBackendResponse:
        self.registered.append(request)
        return placement_pb2.RegisterBackendResponse(backend_id=request.backend.id, version=1)

    async def StreamTelemetry(self, request_iterator: AsyncIterator[
                                  telemetry_pb2.TelemetryReport],
                              context: grpc.aio.ServicerContext) -> telemetry_pb2.TelemetryAck:
        self.streams += 1
        n = 0
        async for report in request_iterator:
            self.reports.append(report)
            n += 1
        return telemetry_pb2.TelemetryAck(accepted=n)


async def serve_placement(servicer: FakePlacement, port: int = 0) -> tuple[grpc.aio.Server, int]:
    """Start ``servicer`` on 127.0.0.1 (``port`` 0 = any free one); return (server, port)."""
    server = grpc.aio.server()
    placement_pb2_grpc.add_PlacementServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


async def wait_until(cond: Callable[[], bool], limit_s: float = 5.0) -> None:
    """Poll a condition owned by the agent or the fake server, failing after ``limit_s``
    (:func:`tests.mesh_harness.eventually`, polled every 10 ms)."""
    await eventually(cond, limit_s, poll_s=0.01)
