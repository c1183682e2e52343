"""A backend id held by its agent's lease token in plaintext (``services/placement/identity.py``,
``services/agent/agent.py``), against a real placement service on 127.0.0.1 and a real agent
(Triton is ``test_agent.py``'s FakeStats stand-in). Another process can neither deregister,
re-register nor report the id while the agent reports; the agent deregisters cleanly with its
token, re-registers after a placement restart, and a restarted agent gets in once the old
lease lapses; a client that sends no token works as before. On the code before tokens the
stranger's deregistration succeeded (the first test fails there)."""

from __future__ import annotations

import asyncio
import pathlib
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest

from services.agent.agent import NodeAgent, backend_message
from services.api.switchyard.v1 import placement_pb2, placement_pb2_grpc, telemetry_pb2
from services.config import MeshConfig
from services.grpc_errors import ErrorInterceptor
from services.placement.identity import LEASE_KEY
from services.placement.main import build_service
from services.placement.server import PlacementService
from services.ports import free_port
from services.security.authz import interceptors
from services.security.settings import SecuritySettings
from tests.mesh_harness import eventually, mesh_config
from tests.unit.test_agent import FakeStats

pytestmark = pytest.mark.asyncio
LEASE_S = 5.0  # placement.stale_after_s of mesh_config


@asynccontextmanager
async def _placement(cfg: MeshConfig, port: int) -> AsyncIterator[PlacementService]:
    service = build_service(cfg, preregister=False)
    server = grpc.aio.server(interceptors=[*interceptors(SecuritySettings(plaintext=True)),
                                           ErrorInterceptor()])
    placement_pb2_grpc.add_PlacementServicer_to_server(service, server)
    assert server.add_insecure_port(f"127.0.0.1:{port}") == port
    await server.start()
    try:
        yield service
    finally:
        await server.stop(0)


def _agent(cfg: MeshConfig, port: int, ids: list[str], **kw: object) -> NodeAgent:
    return NodeAgent(cfg, ids, placement=[f"127.0.0.1:{port}"],
                     stats_factory=lambda b: FakeStats(b.variants), interval_s=0.1,
                     rng=random.Random(5), initial_backoff_s=0.05, max_backoff_s=0.5,
                     nvml_retry_s=(3600.0, 3600.0), **kw)  # type: ignore[arg-type]


def _reported(service: PlacementService, bid: str, agent: NodeAgent) -> bool:
    return bid in service.fleet.backends and agent.agent_id in service.ingest.owners.owner(bid)


async def test_a_stranger_cannot_deregister_reregister_or_report_a_leased_id(
        tmp_path: pathlib.Path) -> None:
    cfg = mesh_config(tmp_path)
    port = free_port()
    bid = cfg.backends[0].id
    async with _placement(cfg, port) as service:
        agent = _agent(cfg, port, [bid], agent_id="agent-real")
        await agent.start()
        try:
            await eventually(lambda: _reported(service, bid, agent), 15, "the agent reports")
            message = backend_message(cfg, cfg.backends[0])  # same endpoint: no secret
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = placement_pb2_grpc.PlacementStub(ch)
                for token in ((), ((LEASE_KEY, "s" * 32),)):
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await stub.DeregisterBackend(placement_pb2.DeregisterBackendRequest(
                            backend_id=bid), timeout=5, metadata=token)
                    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
                    assert "lease token" in (err.value.details() or "")
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await stub.RegisterBackend(placement_pb2.RegisterBackendRequest(
                            backend=message), timeout=5, metadata=token)
                    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
                forged = telemetry_pb2.TelemetryReport(backend_id=bid, agent_id="agent-forged",
                                                       backend_ready=False, unix_ms=1)
                ack = await stub.StreamTelemetry(iter([forged]), timeout=5)
                assert ack.accepted == 0 and "lease token" in ack.message
                with pytest.raises(grpc.aio.AioRpcError) as err:  # not a token placement keeps
                    await stub.DeregisterBackend(placement_pb2.DeregisterBackendRequest(
                        backend_id=bid), timeout=5, metadata=((LEASE_KEY, "short"),))
                assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert bid in service.fleet.backends
            last = service.fleet.backends[bid].last
            assert last is not None and last.ready  # the forged not-ready one never used
            assert "agent-real" in service.ingest.owners.owner(bid)
        finally:
            await agent.stop()


async def test_the_agent_deregisters_with_its_token_and_survives_a_placement_restart(
        tmp_path: pathlib.Path) -> None:
    cfg = mesh_config(tmp_path)
    port = free_port()
    ids = [b.id for b in cfg.backends][:2]
    agent = _agent(cfg, port, ids, deregister_on_stop=True, agent_id="agent-a")
    try:
        async with _placement(cfg, port) as first:
            await agent.start()
            await eventually(lambda: all(_reported(first, b, agent) for b in ids), 15,
                             "the agent reports to the first placement")
        # placement restarted on the same port (no state kept): the agent re-registers
        async with _placement(cfg, port) as second:
            await eventually(lambda: all(_reported(second, b, agent) for b in ids), 20,
                             "the agent re-registered with the restarted placement")
            await agent.stop()  # deregisters every backend, with its token
            assert not set(ids) & set(second.fleet.backends)
            fresh = _agent(cfg, port, ids, agent_id="agent-b")  # a new token: in at once
            await fresh.start()
            try:
                await eventually(lambda: all(_reported(second, b, fresh) for b in ids), 15,
                                 "the next agent registered at once")
                assert fresh.counts.registrations["refused"] == 0
            finally:
                await fresh.stop()
    finally:
        await agent.stop()


async def test_an_agent_restarted_without_deregistering_gets_in_when_the_lease_lapses(
        tmp_path: pathlib.Path) -> None:
    cfg = mesh_config(tmp_path)
    port = free_port()
    bid = cfg.backends[0].id
    async with _placement(cfg, port) as service:
        assert service.builder.settings.stale_after_s == LEASE_S
        old = _agent(cfg, port, [bid], agent_id="agent-old")
        await old.start()
        await eventually(lambda: _reported(service, bid, old), 15, "the first agent reports")
        await old.stop()  # crashed, in effect: no deregistration
        new = _agent(cfg, port, [bid], agent_id="agent-new")
        loop_time = asyncio.get_running_loop().time
        t0 = loop_time()
        await new.start()
        try:
            await eventually(lambda: new.counts.registrations["refused"] >= 1, 5,
                             "refused while the old lease lasts")
            await eventually(lambda: _reported(service, bid, new), 20,
                             "accepted once the old lease lapsed")
            assert loop_time() - t0 >= LEASE_S - 1.0  # not before the lease could lapse
        finally:
            await new.stop()


async def test_a_client_without_a_token_registers_and_deregisters_as_before(
        tmp_path: pathlib.Path) -> None:
    cfg = mesh_config(tmp_path)
    port = free_port()
    async with _placement(cfg, port) as service:
        message = backend_message(cfg, cfg.backends[0])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = placement_pb2_grpc.PlacementStub(ch)
            await stub.RegisterBackend(placement_pb2.RegisterBackendRequest(backend=message),
                                       timeout=5)
            await stub.RegisterBackend(placement_pb2.RegisterBackendRequest(backend=message),
                                       timeout=5)
            ack = await stub.StreamTelemetry(iter([telemetry_pb2.TelemetryReport(
                backend_id=message.id, agent_id="old", backend_ready=True, unix_ms=1)]),
                timeout=5)
            assert ack.accepted == 1
            resp = await stub.DeregisterBackend(placement_pb2.DeregisterBackendRequest(
                backend_id=message.id), timeout=5)
            assert resp.existed and message.id not in service.fleet.backends
