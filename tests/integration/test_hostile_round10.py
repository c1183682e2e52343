"""A hostile caller against the edge, round 10, on both engines: one Envoy edge (placement's
config, the module where it loads) and its slow path (the co-located Python edge, called
directly as *the Python edge*); real Triton backends (``envoy_harness.hostile_fixtures``),
with ``[security] require_tenant`` and tenants known by their bearer tokens over plaintext.

- Where tenants are required, a caller without a credential is refused every RPC but the
  probes (``tenants.OPEN_RPCS``: ``ServerLive``, ``ServerReady``; ``grpc.health.v1`` is
  another service): before, ``ModelReady``, ``ModelMetadata``, ``ModelConfig``,
  ``RepositoryIndex``, ``ServerMetadata``, ``ModelStatistics`` and ``EdgeAdmin`` answered
  it (Envoy sends the control RPCs to its slow path, so both engines did). A control RPC
  checks the credential as a call does and takes none of its tenant's quotas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2

from services.api.switchyard.v1 import edge_pb2, edge_pb2_grpc
from services.config import MeshConfig
from services.security.settings import SecuritySettings, TenantSettings
from services.security.tenants import TENANTS_ONLY
from services.xds.lua import SERVICE_PATH as SERVICE
from tests.envoy_harness import hostile_fixtures
from tests.mesh_harness import mesh_config

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

_cfg, mesh, engines, records = hostile_fixtures("hostile10")

TOKEN = [("authorization", "Bearer slow-token")]  # tenant 'slow': one call a minute


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    base = mesh_config(tmp_path_factory.mktemp("hostile10"))
    sec = SecuritySettings(plaintext=True, require_tenant=True, tenants=[
        TenantSettings(name="slow", token="slow-token", rate_limit_per_s=1 / 60, burst=1)])
    return base.model_copy(update={"security": sec})


# Each control RPC with a request naming the mesh's model where it names one.
REQUESTS: dict[str, Any] = {
    "ModelReady": service_pb2.ModelReadyRequest(name="summarize"),
    "ModelMetadata": service_pb2.ModelMetadataRequest(name="summarize"),
    "ModelConfig": service_pb2.ModelConfigRequest(name="summarize"),
    "RepositoryIndex": service_pb2.RepositoryIndexRequest(),
    "ServerMetadata": service_pb2.ServerMetadataRequest(),
    "ModelStatistics": service_pb2.ModelStatisticsRequest(name="summarize"),
    "ServerLive": service_pb2.ServerLiveRequest(),
    "ServerReady": service_pb2.ServerReadyRequest(),
}
GATED = [r for r in REQUESTS if r not in ("ServerLive", "ServerReady")]


async def control(ch: grpc.aio.Channel, rpc: str, md: Sequence[tuple[str, str]] = ()
                  ) -> tuple[str, str]:
    call: Any = ch.unary_unary(
        SERVICE + rpc, request_serializer=type(REQUESTS[rpc]).SerializeToString,
        response_deserializer=getattr(service_pb2, rpc + "Response").FromString)
    try:
        await call(REQUESTS[rpc], metadata=tuple(md), timeout=10)
    except grpc.aio.AioRpcError as err:
        return err.code().name, err.details() or ""
    return "OK", ""


@pytest.mark.parametrize("rpc", GATED)
async def test_a_control_rpc_without_a_credential_is_unauthenticated_on_both_engines(
        engines: dict[str, grpc.aio.Channel], rpc: str) -> None:
    """Fails on the old edge (both engines): OK."""
    got = {e: await control(ch, rpc) for e, ch in engines.items()}
    assert got == dict.fromkeys(engines, ("UNAUTHENTICATED", TENANTS_ONLY)), got
    bad = {e: await control(ch, rpc, [("authorization", "Bearer nobody")])
           for e, ch in engines.items()}
    assert bad == dict.fromkeys(engines, ("UNAUTHENTICATED", "unknown bearer token")), bad


@pytest.mark.parametrize("rpc", GATED)
async def test_a_control_rpc_with_a_credential_is_served_and_takes_no_quota(
        engines: dict[str, grpc.aio.Channel], rpc: str) -> None:
    """Tenant 'slow' may make one call a minute: three control RPCs on each engine are all
    served (a control RPC takes none of its tenant's quotas)."""
    got = {e: [await control(ch, rpc, TOKEN) for _ in range(3)] for e, ch in engines.items()}
    assert got == {e: [("OK", "")] * 3 for e in engines}, got


@pytest.mark.parametrize("rpc", ["ServerLive", "ServerReady"])
async def test_the_probes_stay_open_on_both_engines(
        engines: dict[str, grpc.aio.Channel], rpc: str) -> None:
    got = {e: await control(ch, rpc) for e, ch in engines.items()}
    assert got == dict.fromkeys(engines, ("OK", "")), got


async def test_grpc_health_stays_open(engines: dict[str, grpc.aio.Channel]) -> None:
    stub = health_pb2_grpc.HealthStub(engines["python"])
    resp = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE.strip("/")),
                            timeout=10)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_edge_admin_without_a_credential_is_unauthenticated(
        engines: dict[str, grpc.aio.Channel]) -> None:
    """``EdgeAdmin`` is served by the Python edge only (Envoy routes no such path: not
    served there either way). Fails on the old edge: Status answered OK."""
    stub = edge_pb2_grpc.EdgeAdminStub(engines["python"])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Status(edge_pb2.EdgeStatusRequest(), timeout=10)
    assert (refused.value.code(), refused.value.details()) == (
        grpc.StatusCode.UNAUTHENTICATED, TENANTS_ONLY)
    resp = await stub.Status(edge_pb2.EdgeStatusRequest(), metadata=TOKEN, timeout=10)
    assert resp.edge_id
    envoy = edge_pb2_grpc.EdgeAdminStub(engines["envoy"])
    with pytest.raises(grpc.aio.AioRpcError) as unserved:
        await envoy.Status(edge_pb2.EdgeStatusRequest(), timeout=10)
    assert unserved.value.code() != grpc.StatusCode.OK
