"""Registration input on a real plaintext placement server: refusals name the field, audit."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from services.api.switchyard.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc
from services.placement.main import build_service
from services.security.authz import PLACEMENT
from tests.mesh_harness import mesh_config, serving_placement


@pytest_asyncio.fixture
async def stub(tmp_path: pathlib.Path) -> AsyncIterator[placement_pb2_grpc.PlacementStub]:
    service = build_service(mesh_config(tmp_path), preregister=True)
    async with serving_placement(service) as stub:
        yield stub


async def a_backend(stub: placement_pb2_grpc.PlacementStub) -> fleet_pb2.Backend:
    listed = await stub.ListBackends(placement_pb2.ListBackendsRequest(), timeout=5)
    b = fleet_pb2.Backend()
    b.CopyFrom(next(s.backend for s in listed.backends if s.backend.id == "east-fast"))
    b.id = "east-new"
    return b


BAD = [
    ("endpoint", "localhost", "backend.endpoint 'localhost'"),
    ("endpoint", "localhost:0", "backend.endpoint 'localhost:0'"),
    ("endpoint", "localhost:65536", "port in 1..65535"),
    ("endpoint", "localhost:http", "backend.endpoint 'localhost:http'"),
    ("endpoint", "a b:80", "backend.endpoint 'a b:80'"),
    ("id", "has space", "backend.id 'has space'"),
    ("id", "../../etc", "backend.id '../../etc'"),
    ("id", "x" * 129, "1..128 characters"),
    ("accelerator", "tpu-v9", "backend.accelerator 'tpu-v9' is not in the price list"),
    ("price_class", "reserved-3y", "backend.price_class 'reserved-3y'"),
    ("max_concurrency", 0, "backend.max_concurrency 0 must be >= 1"),
    ("accelerator_count", 0, "backend.accelerator_count 0 must be >= 1"),
]


@pytest.mark.parametrize(("field", "value", "says"), BAD)
async def test_bad_registration_is_invalid_argument_naming_field(
        stub: placement_pb2_grpc.PlacementStub, field: str, value: object, says: str) -> None:
    b = await a_backend(stub)
    setattr(b, field, value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RegisterBackend(placement_pb2.RegisterBackendRequest(backend=b), timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert says in (err.value.details() or "")
    listed = await stub.ListBackends(placement_pb2.ListBackendsRequest(), timeout=5)
    assert "east-new" not in {s.backend.id for s in listed.backends}


@pytest.mark.parametrize("endpoint", ["10.0.0.7:8001", "[::1]:8001", "triton-0.svc:1"])
async def test_good_registration_accepted(stub: placement_pb2_grpc.PlacementStub,
                                          endpoint: str) -> None:
    b = await a_backend(stub)
    b.endpoint = endpoint
    b.id = "Node_1.gpu-0"
    resp = await stub.RegisterBackend(placement_pb2.RegisterBackendRequest(backend=b), timeout=5)
    assert resp.backend_id == "Node_1.gpu-0"


async def test_deregistering_unknown_id_is_not_found(
        stub: placement_pb2_grpc.PlacementStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.DeregisterBackend(placement_pb2.DeregisterBackendRequest(
            backend_id="no-such"), timeout=5)
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    assert "'no-such' is not registered" in (err.value.details() or "")
    ok = await stub.DeregisterBackend(placement_pb2.DeregisterBackendRequest(
        backend_id="west-cheap"), timeout=5)
    assert ok.existed


async def test_plaintext_audits_every_admin_call_with_its_peer(
        stub: placement_pb2_grpc.PlacementStub) -> None:
    b = await a_backend(stub)
    with capture_logs() as logs:
        await stub.RegisterBackend(placement_pb2.RegisterBackendRequest(backend=b), timeout=5)
        await stub.SetAvailability(placement_pb2.SetAvailabilityRequest(
            scope=placement_pb2.AVAILABILITY_SCOPE_BACKEND, target="west-cheap",
            availability=fleet_pb2.AVAILABILITY_DRAINED), timeout=5)
        await stub.UpdatePrices(placement_pb2.UpdatePricesRequest(), timeout=5)
        await stub.DeregisterBackend(placement_pb2.DeregisterBackendRequest(
            backend_id="east-new"), timeout=5)
        await stub.ListBackends(placement_pb2.ListBackendsRequest(), timeout=5)  # not admin
    audited = [e for e in logs if e["event"] == "allowed"]
    assert [e["method"].removeprefix(PLACEMENT) for e in audited] == [
        "RegisterBackend", "SetAvailability", "UpdatePrices", "DeregisterBackend"]
    assert all(e["peer"].startswith("ipv4:127.0.0.1:") and e["authenticated"] is False
               for e in audited)
    assert [e["target"] for e in audited] == ["east-new", "", "", "east-new"]
