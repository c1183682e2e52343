"""Two agents reporting one backend: the first stream owns it, the other is ignored and counted."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator

import grpc
import pytest_asyncio

from services.api.switchyard.v1 import placement_pb2, placement_pb2_grpc, telemetry_pb2
from services.grpc_errors import ErrorInterceptor
from services.placement.main import build_service
from services.placement.ownership import TelemetryOwners
from tests.mesh_harness import eventually, mesh_config

NVML, SIM = telemetry_pb2.TELEMETRY_SOURCE_NVML, telemetry_pb2.TELEMETRY_SOURCE_SIMULATED


@pytest_asyncio.fixture
async def stub(tmp_path: pathlib.Path) -> AsyncIterator[placement_pb2_grpc.PlacementStub]:
    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    placement_pb2_grpc.add_PlacementServicer_to_server(
        build_service(mesh_config(tmp_path), preregister=True), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield placement_pb2_grpc.PlacementStub(ch)
    await server.stop(0)


class Agent:
    """One telemetry stream, fed report by report."""

    def __init__(self, stub: placement_pb2_grpc.PlacementStub, agent_id: str,
                 source: int) -> None:
        self.agent_id, self.source = agent_id, source
        self.queue: asyncio.Queue[telemetry_pb2.TelemetryReport | None] = asyncio.Queue()
        self.call = stub.StreamTelemetry(self._reports())

    async def _reports(self) -> AsyncIterator[telemetry_pb2.TelemetryReport]:
        while (r := await self.queue.get()) is not None:
            yield r

    def report(self, util: float) -> None:
        self.queue.put_nowait(telemetry_pb2.TelemetryReport(
            backend_id="east-fast", agent_id=self.agent_id, source=self.source,
            backend_ready=True, unix_ms=1, gpus=[telemetry_pb2.GpuReading(
                index=0, name="gpu", gpu_util_pct=util)]))

    async def close(self) -> telemetry_pb2.TelemetryAck:
        self.queue.put_nowait(None)
        return await self.call


async def status(stub: placement_pb2_grpc.PlacementStub) -> placement_pb2.BackendStatus:
    listed = await stub.ListBackends(placement_pb2.ListBackendsRequest(), timeout=5)
    return next(s for s in listed.backends if s.backend.id == "east-fast")


async def test_second_agent_is_ignored_until_the_owner_leaves(
        stub: placement_pb2_grpc.PlacementStub) -> None:
    a, b = Agent(stub, "agent-a", SIM), Agent(stub, "agent-b", NVML)
    a.report(10.0)
    st: placement_pb2.BackendStatus | None = None

    async def owned_by(who: str, util: float) -> bool:
        nonlocal st
        st = await status(stub)
        return st.telemetry_owner.startswith(who) and st.gpus[0].gpu_util_pct == util

    await eventually(lambda: owned_by("agent-a", 10.0), 10, "agent-a owns it")
    for util in (90.0, 91.0, 92.0):  # b reports, interleaved with a: never used
        b.report(util)
        a.report(11.0)
    await eventually(lambda: owned_by("agent-a", 11.0), 10, "agent-a's report is used")
    await eventually(_ignored(stub, 3), 10, "b's 3 reports ignored")
    assert st is not None and st.telemetry_source == SIM  # did not flip to b's source
    assert "@ ipv4:127.0.0.1:" in st.telemetry_owner
    ack = await a.close()
    assert ack.accepted == 4
    b.report(93.0)  # the owner's stream ended: b takes over
    await eventually(lambda: owned_by("agent-b", 93.0), 10, "agent-b took over")
    st = await status(stub)
    assert st.telemetry_source == NVML
    ack = await b.close()
    assert ack.accepted == 1 and "3 reports ignored" in ack.message


def _ignored(stub: placement_pb2_grpc.PlacementStub, n: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return (await status(stub)).telemetry_ignored == n
    return check


def test_stale_owner_is_replaced() -> None:
    owners = TelemetryOwners(stale_after_s=5.0)
    assert owners.admit("b", "s1", "agent-a @ x", now=0.0)
    assert not owners.admit("b", "s2", "agent-b @ y", now=4.0)
    assert owners.admit("b", "s1", "agent-a @ x", now=4.5)  # the owner keeps it fresh
    assert not owners.admit("b", "s2", "agent-b @ y", now=9.0)
    assert owners.admit("b", "s2", "agent-b @ y", now=9.6)  # a silent 5.1 s: stale
    assert owners.owner("b") == "agent-b @ y" and owners.ignored("b") == 2
    assert not owners.admit("b", "s1", "agent-a @ x", now=9.7)
    owners.release("s2")
    assert owners.admit("b", "s1", "agent-a @ x", now=9.8)
