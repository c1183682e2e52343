"""Authorisation on a real placement server over mTLS: admin role, agents' own backends, audit."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from services.api.switchyard.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc, telemetry_pb2
from services.grpc_errors import ErrorInterceptor
from services.placement.main import build_service
from services.security import transport
from services.security.authz import (
    PLACEMENT,
    AuditInterceptor,
    AuthzInterceptor,
    AuthzPolicy,
    interceptors,
)
from services.security.certs import create_dev_pki
from services.security.settings import AgentIdentity, SecuritySettings
from tests.mesh_harness import mesh_config


@dataclass
class Secured:
    port: int
    pki: pathlib.Path
    sec: SecuritySettings
    authz: AuthzInterceptor

    def stub(self, role: str) -> placement_pb2_grpc.PlacementStub:
        return placement_pb2_grpc.PlacementStub(
            transport.channel(f"localhost:{self.port}", self.sec, role))

    def stub_as(self, name: str) -> placement_pb2_grpc.PlacementStub:
        creds = grpc.ssl_channel_credentials((self.pki / "ca.pem").read_bytes(),
                                             (self.pki / f"{name}.key").read_bytes(),
                                             (self.pki / f"{name}.pem").read_bytes())
        return placement_pb2_grpc.PlacementStub(
            grpc.aio.secure_channel(f"localhost:{self.port}", creds))


@pytest_asyncio.fixture
async def placement(tmp_path: pathlib.Path) -> AsyncIterator[Secured]:
    pki = tmp_path / "pki"
    create_dev_pki(pki, clients={"stranger": ["stranger.example"]})
    sec = SecuritySettings(plaintext=False, ca_file=str(pki / "ca.pem"),
                           cert_file=str(pki / "{role}.pem"), key_file=str(pki / "{role}.key"),
                           admin_identities=["admin.switchyard.local"],
                           agents=[AgentIdentity(identity="agent.switchyard.local",
                                                 backends=["east-fast"])])
    cfg = mesh_config(tmp_path)
    service = build_service(cfg, preregister=True)
    guards = interceptors(sec)
    server = grpc.aio.server(interceptors=[*guards, ErrorInterceptor()])
    placement_pb2_grpc.add_PlacementServicer_to_server(service, server)
    port = transport.bind(server, "127.0.0.1", 0, sec, "placement")
    await server.start()
    assert isinstance(guards[0], AuthzInterceptor)
    yield Secured(port, pki, sec, guards[0])
    await server.stop(0)


DRAIN = placement_pb2.SetAvailabilityRequest(scope=placement_pb2.AVAILABILITY_SCOPE_BACKEND,
                                             target="west-cheap",
                                             availability=fleet_pb2.AVAILABILITY_DRAINED)


async def test_admin_rpc_allowed_for_admin_and_audited(placement: Secured) -> None:
    with capture_logs() as logs:
        resp = await placement.stub("admin").SetAvailability(DRAIN, timeout=5)
    assert list(resp.backend_ids) == ["west-cheap"]
    assert any(e["event"] == "allowed" and e["identity"] == ["admin.switchyard.local"]
               for e in logs)


@pytest.mark.parametrize("who", ["agent", "edge", "stranger"])
async def test_admin_rpc_denied_for_non_admin_and_audited(placement: Secured, who: str) -> None:
    stub = placement.stub_as(who) if who == "stranger" else placement.stub(who)
    with capture_logs() as logs, pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UpdatePrices(placement_pb2.UpdatePricesRequest(), timeout=5)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    denied = [e for e in logs if e["event"] == "denied"]
    assert denied and denied[0]["method"] == PLACEMENT + "UpdatePrices"
    assert denied[0]["reason"] == "admin role required" and denied[0]["peer"]
    assert denied[0]["identity"]


async def test_agent_registers_only_its_own_backends(placement: Secured) -> None:
    stub = placement.stub("agent")
    listed = await stub.ListBackends(placement_pb2.ListBackendsRequest(), timeout=5)
    own = next(s.backend for s in listed.backends if s.backend.id == "east-fast")
    foreign = next(s.backend for s in listed.backends if s.backend.id == "west-cheap")
    ok = await stub.RegisterBackend(placement_pb2.RegisterBackendRequest(backend=own), timeout=5)
    assert ok.backend_id == "east-fast"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RegisterBackend(placement_pb2.RegisterBackendRequest(backend=foreign),
                                   timeout=5)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.DeregisterBackend(placement_pb2.DeregisterBackendRequest(
            backend_id="west-cheap"), timeout=5)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_telemetry_for_own_backend_accepted_foreign_denied(placement: Secured) -> None:
    stub = placement.stub("agent")
    ack = await stub.StreamTelemetry(iter([telemetry_pb2.TelemetryReport(
        backend_id="east-fast", backend_ready=True)]), timeout=5)
    assert ack.accepted == 1
    with capture_logs() as logs, pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.StreamTelemetry(iter([
            telemetry_pb2.TelemetryReport(backend_id="east-fast", backend_ready=True),
            telemetry_pb2.TelemetryReport(backend_id="west-cheap", backend_ready=True)]),
            timeout=5)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "west-cheap" in (err.value.details() or "")
    assert any(e["event"] == "denied" and e.get("backend") == "west-cheap" for e in logs)


async def test_telemetry_only_from_agents(placement: Secured) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await placement.stub("admin").StreamTelemetry(iter([telemetry_pb2.TelemetryReport(
            backend_id="east-fast")]), timeout=5)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_read_rpcs_open_to_any_authenticated_peer(placement: Secured) -> None:
    resp = await placement.stub_as("stranger").GetRouteTables(
        placement_pb2.GetRouteTablesRequest(), timeout=5)
    assert resp.version >= 0


async def test_reload_grants_the_role(placement: Secured) -> None:
    placement.authz.reload(placement.sec.model_copy(
        update={"admin_identities": ["stranger.example"]}))
    resp = await placement.stub_as("stranger").SetAvailability(DRAIN, timeout=5)
    assert list(resp.backend_ids) == ["west-cheap"]


def test_no_identity_is_unauthenticated() -> None:
    policy = AuthzPolicy(frozenset({"admin"}), {}, frozenset())
    denied = policy.check(PLACEMENT + "SetAvailability", ())
    assert denied is not None and denied.code is grpc.StatusCode.UNAUTHENTICATED
    assert policy.check(PLACEMENT + "GetRouteTables", ()) is not None
    assert policy.check(PLACEMENT + "SetAvailability", ("admin",)) is None


def test_plaintext_installs_no_authorisation() -> None:
    assert [type(i) for i in interceptors(SecuritySettings(plaintext=True))] == [
        AuditInterceptor]  # audit only: nothing is refused
