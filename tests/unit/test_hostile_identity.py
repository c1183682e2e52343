"""Identities on placement's inputs against a hostile peer (real gRPC servers on 127.0.0.1, a
real mTLS one for certificates): a backend id stays with its live registrant, an edge id with
its region, and one report cannot claim more than an edge sends
(``services/placement/identity.py``, ``validate.py``)."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from services.api.switchyard.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc, telemetry_pb2
from services.convert import stream_seen_to_pb
from services.edge.stats import EdgeStats
from services.edge.token_stats import StreamStats
from services.grpc_errors import ErrorInterceptor
from services.placement.identity import AlreadyHeld
from services.placement.main import build_service
from services.placement.server import PlacementService
from services.placement.validate import MAX_SAMPLES, MAX_STREAM_WEIGHT, MIN_OBSERVATIONS_CAP
from services.security import transport
from services.security.authz import interceptors
from services.security.certs import create_dev_pki
from services.security.settings import AgentIdentity, SecuritySettings
from tests.mesh_harness import mesh_config, serving_placement

LEASE_S = 5.0  # placement.stale_after_s of mesh_config


class Clock:
    """Placement's clock, moved by the test (a lease is time without a word from a holder)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Placed:
    service: PlacementService
    stub: placement_pb2_grpc.PlacementStub
    clock: Clock


@pytest_asyncio.fixture
async def placed(tmp_path: pathlib.Path) -> AsyncIterator[Placed]:
    service = build_service(mesh_config(tmp_path), preregister=True)
    assert service.builder.settings.stale_after_s == LEASE_S
    clock = Clock()
    service.clock = clock
    async with serving_placement(service) as stub:
        yield Placed(service, stub, clock)


async def new_backend(stub: placement_pb2_grpc.PlacementStub, endpoint: str,
                      backend_id: str = "east-new") -> fleet_pb2.Backend:
    listed = await stub.ListBackends(placement_pb2.ListBackendsRequest(), timeout=5)
    b = fleet_pb2.Backend()
    b.CopyFrom(next(s.backend for s in listed.backends if s.backend.id == "east-fast"))
    b.id, b.endpoint = backend_id, endpoint
    return b


async def register(stub: placement_pb2_grpc.PlacementStub, b: fleet_pb2.Backend) -> None:
    resp = await stub.RegisterBackend(placement_pb2.RegisterBackendRequest(backend=b), timeout=5)
    assert resp.backend_id == b.id


async def refused(stub: placement_pb2_grpc.PlacementStub, b: fleet_pb2.Backend
                  ) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RegisterBackend(placement_pb2.RegisterBackendRequest(backend=b), timeout=5)
    return err.value


async def endpoint_of(stub: placement_pb2_grpc.PlacementStub, backend_id: str) -> str:
    listed = await stub.ListBackends(placement_pb2.ListBackendsRequest(), timeout=5)
    return str(next(s.backend.endpoint for s in listed.backends if s.backend.id == backend_id))


# -- a backend id and its registrant ----------------------------------------------------------


async def test_a_second_agent_cannot_take_over_a_live_backend_id(placed: Placed) -> None:
    """Fails on the old code: the impostor's registration was accepted and moved the id."""
    stub = placed.stub
    await register(stub, await new_backend(stub, "10.0.0.7:8001"))
    err = await refused(stub, await new_backend(stub, "10.0.0.66:8001"))
    assert err.code() is grpc.StatusCode.ALREADY_EXISTS
    says = err.details() or ""
    assert "'east-new' is held by" in says and "'10.0.0.7:8001'" in says
    assert "'10.0.0.66:8001'" in says and "deregister 'east-new' first" in says
    assert f"silent {LEASE_S:g} s" in says
    assert await endpoint_of(stub, "east-new") == "10.0.0.7:8001"
    # the holder restarting (same endpoint, changed variants alike) re-registers at once
    again = await new_backend(stub, "10.0.0.7:8001")
    again.max_concurrency += 1
    await register(stub, again)
    assert placed.service.fleet.backends["east-new"].backend.max_concurrency == \
        again.max_concurrency


async def test_telemetry_keeps_the_lease_and_silence_ends_it(placed: Placed) -> None:
    stub, clock = placed.stub, placed.clock
    await register(stub, await new_backend(stub, "10.0.0.7:8001"))
    clock.t += LEASE_S - 1
    ack = await stub.StreamTelemetry(iter([telemetry_pb2.TelemetryReport(
        backend_id="east-new", backend_ready=True)]), timeout=5)
    assert ack.accepted == 1
    clock.t += LEASE_S - 1  # past a lease since the registration, not since the report
    impostor = await new_backend(stub, "10.0.0.66:8001")
    assert (await refused(stub, impostor)).code() is grpc.StatusCode.ALREADY_EXISTS
    clock.t += 1.5  # now silent for longer than the lease: the next registrant takes it
    with capture_logs() as logs:
        await register(stub, impostor)
    assert await endpoint_of(stub, "east-new") == "10.0.0.66:8001"
    changed = [e for e in logs if e["event"] == "backend_registrant_changed"]
    assert changed and changed[0]["backend"] == "east-new"
    assert "10.0.0.7:8001" in changed[0]["old"]


async def test_deregistering_frees_the_id_at_once(placed: Placed) -> None:
    stub = placed.stub
    await register(stub, await new_backend(stub, "10.0.0.7:8001"))
    await stub.DeregisterBackend(placement_pb2.DeregisterBackendRequest(backend_id="east-new"),
                                 timeout=5)
    await register(stub, await new_backend(stub, "10.0.0.8:8001"))
    assert await endpoint_of(stub, "east-new") == "10.0.0.8:8001"


async def test_a_preregistered_backend_with_fresh_telemetry_is_held_by_its_endpoint(
        placed: Placed) -> None:
    """The config's (or a restored) backend, its telemetry flowing, no registration since
    this placement started (as after a restart): another endpoint for its id is refused,
    its agent re-registering the same data is not."""
    stub = placed.stub
    await stub.StreamTelemetry(iter([telemetry_pb2.TelemetryReport(
        backend_id="east-fast", backend_ready=True)]), timeout=5)
    err = await refused(stub, await new_backend(stub, "10.9.9.9:8001", "east-fast"))
    assert err.code() is grpc.StatusCode.ALREADY_EXISTS
    assert "registered without RegisterBackend" in (err.details() or "")
    await register(stub, await new_backend(stub, await endpoint_of(stub, "east-fast"),
                                           "east-fast"))


@dataclass
class Secured:
    port: int
    pki: pathlib.Path

    def stub_as(self, name: str) -> placement_pb2_grpc.PlacementStub:
        creds = grpc.ssl_channel_credentials((self.pki / "ca.pem").read_bytes(),
                                             (self.pki / f"{name}.key").read_bytes(),
                                             (self.pki / f"{name}.pem").read_bytes())
        return placement_pb2_grpc.PlacementStub(
            grpc.aio.secure_channel(f"localhost:{self.port}", creds))


@pytest_asyncio.fixture
async def secured(tmp_path: pathlib.Path) -> AsyncIterator[Secured]:
    """mTLS placement where two agent certificates may both speak for ``shared`` (a copied
    config): the first to register it holds it."""
    pki = tmp_path / "pki"
    create_dev_pki(pki, clients={"agent-a": ["agent-a.example"],
                                 "agent-b": ["agent-b.example"]})
    sec = SecuritySettings(plaintext=False, ca_file=str(pki / "ca.pem"),
                           cert_file=str(pki / "{role}.pem"), key_file=str(pki / "{role}.key"),
                           agents=[AgentIdentity(identity="agent-a.example",
                                                 backends=["shared", "east-fast"]),
                                   AgentIdentity(identity="agent-b.example",
                                                 backends=["shared", "east-fast"])])
    service = build_service(mesh_config(tmp_path), preregister=True)
    server = grpc.aio.server(interceptors=[*interceptors(sec), ErrorInterceptor()])
    placement_pb2_grpc.add_PlacementServicer_to_server(service, server)
    port = transport.bind(server, "127.0.0.1", 0, sec, "placement")
    await server.start()
    try:
        yield Secured(port, pki)
    finally:
        await server.stop(0)


async def test_another_certificate_cannot_take_a_held_backend_id(secured: Secured) -> None:
    """Fails on the old code: agent-b's registration was accepted."""
    a, b = secured.stub_as("agent-a"), secured.stub_as("agent-b")
    shared = await new_backend(a, "10.0.0.7:8001", "shared")
    await register(a, shared)
    err = await refused(b, shared)  # same endpoint, another certificate
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    says = err.details() or ""
    assert "'shared' is held by" in says and "agent-a.example" in says
    assert "agent-b.example" in says and "deregister 'shared' first" in says
    await register(a, shared)  # agent-a restarting: its certificate, its endpoint
    await register(b, await new_backend(b, await endpoint_of(b, "east-fast"), "east-fast"))


# -- an edge id and its region ------------------------------------------------------------------


def _dep(service: PlacementService) -> str:
    state = service.fleet.backends["east-fast"]
    return f"east-fast/{state.backend.variants[0].name}"


def _regions(service: PlacementService) -> tuple[str, str]:
    """An edge region with tables, and another region of the catalog."""
    home = service.hub.regions[0]
    return home, next(r for r in sorted(service.builder.catalog.regions) if r != home)


def _report(edge_id: str, region: str, *obs: telemetry_pb2.Observation
            ) -> telemetry_pb2.ObservationReport:
    return telemetry_pb2.ObservationReport(edge_id=edge_id, edge_region=region,
                                           observations=list(obs))


async def test_an_edge_id_cannot_report_for_another_region(placed: Placed) -> None:
    """Fails on the old code: the second region's report was learned."""
    service, stub, clock = placed.service, placed.stub, placed.clock
    home, other = _regions(service)
    dep = _dep(service)
    seen = telemetry_pb2.Observation(deployment_id=dep, samples=50, p95_ms=40.0,
                                     calls_per_s=3.0)
    await stub.ReportObservations(_report("edge-1", home, seen), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReportObservations(_report("edge-1", other, seen), timeout=5)
    assert err.value.code() is grpc.StatusCode.ALREADY_EXISTS
    says = err.value.details() or ""
    assert f"edge_id 'edge-1' reports for edge region {home!r}" in says
    assert f"edge_region {other!r}" in says and "its own edge_id" in says
    assert (other, dep) not in service.fleet.observed
    assert (other, "edge-1") not in service.fleet.edges_seen
    # placement keeps serving: the edge in its region, another edge in the other region
    await stub.ReportObservations(_report("edge-1", home, seen), timeout=5)
    await stub.ReportObservations(_report("edge-2", other, seen), timeout=5)
    assert (other, dep) in service.fleet.observed
    # an edge moved to another region, silent for what it taught to expire, may report there
    clock.t += service.edge_regions.ttl_s + 1
    await stub.ReportObservations(_report("edge-1", other, seen), timeout=5)
    assert (other, "edge-1") in service.fleet.edges_seen


async def test_an_envoy_edges_reports_are_held_to_the_same_binding(placed: Placed) -> None:
    """Envoy's access log reaches ``ReportObservations`` in process, with no gRPC context
    (``services/xds/server.py``, ``serve_ads``): the same rule, the same status."""
    service, stub = placed.service, placed.stub
    home, other = _regions(service)
    seen = telemetry_pb2.Observation(deployment_id=_dep(service), samples=50, p95_ms=40.0)
    await service.ReportObservations(_report("envoy-1", home, seen), None)  # type: ignore[arg-type]
    with pytest.raises(AlreadyHeld) as err:
        await service.ReportObservations(_report("envoy-1", other, seen),
                                         None)  # type: ignore[arg-type]
    assert err.value.grpc_code == "ALREADY_EXISTS"
    with pytest.raises(grpc.aio.AioRpcError) as rpc:  # and a Python edge under that id
        await stub.ReportObservations(_report("envoy-1", other, seen), timeout=5)
    assert rpc.value.code() is grpc.StatusCode.ALREADY_EXISTS


async def test_an_observation_naming_another_region_than_its_report_is_refused(
        placed: Placed) -> None:
    service, stub = placed.service, placed.stub
    home, other = _regions(service)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReportObservations(_report("edge-1", home, telemetry_pb2.Observation(
            deployment_id=_dep(service), edge_region=other, samples=50, p95_ms=40.0)),
            timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f"observations[0].edge_region {other!r}" in (err.value.details() or "")


# -- what one report may carry ------------------------------------------------------------------


async def test_a_real_edges_fullest_report_is_accepted(placed: Placed) -> None:
    """The limits come from what an edge sends: its latency window full, its TPOT fit as
    heavy as its decay lets it get."""
    service, stub = placed.service, placed.stub
    dep, region = _dep(service), service.hub.regions[0]
    stats = EdgeStats()
    for i in range(3 * MAX_SAMPLES):
        stats.record(dep, 20.0 + i % 7, ok=True)
    ((n, f, p50, p95, calls),) = stats.refresh().values()
    streams = StreamStats()
    for i in range(500):
        streams.observe(dep, prefill_ms=30.0, uncached_tokens=100, tpot_ms=8.0 + i % 3,
                        load=i % 4, tokens_out=50)
    seen = streams.report()[dep]
    assert n == MAX_SAMPLES and 0.99 * MAX_STREAM_WEIGHT < seen.weight <= MAX_STREAM_WEIGHT
    await stub.ReportObservations(_report("edge-1", region, telemetry_pb2.Observation(
        deployment_id=dep, edge_region=region, samples=n, failures=f, p50_ms=p50,
        p95_ms=p95, calls_per_s=calls / 2.0, streams=stream_seen_to_pb(seen))), timeout=5)
    assert service.fleet.observed[(region, dep)].samples == MAX_SAMPLES


@pytest.mark.parametrize(("change", "says"), [
    ("samples", "observations[0].samples 1000000000000 ('east-fast/"),
    ("weight", "observations[0].streams.weight 1000000000000.0 ('east-fast/"),
])
async def test_a_claim_over_what_an_edge_holds_is_refused_naming_the_limit(
        placed: Placed, change: str, says: str) -> None:
    """Fails on the old code: a trillion samples was learned and outweighed every region."""
    service, stub = placed.service, placed.stub
    dep, region = _dep(service), service.hub.regions[0]
    o = telemetry_pb2.Observation(deployment_id=dep, samples=50, p95_ms=1.0, calls_per_s=1.0)
    if change == "samples":
        o.samples = 10**12
    else:
        o.streams.CopyFrom(telemetry_pb2.StreamObservation(
            prefill_ms_per_token=0.01, tpot_base_ms=0.1, weight=1e12))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReportObservations(_report("edge-1", region, o), timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details() or ""
    assert says in details
    assert (f"over {MAX_SAMPLES}" if change == "samples" else "over 10,") in details
    assert (region, dep) not in service.fleet.observed
    assert service.fleet.tokens.speed(dep, placed.clock()) is None


async def test_a_report_cannot_repeat_a_deployment_or_carry_more_than_the_fleet(
        placed: Placed) -> None:
    service, stub = placed.service, placed.stub
    dep, region = _dep(service), service.hub.regions[0]
    one = telemetry_pb2.Observation(deployment_id=dep, samples=50, p95_ms=40.0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReportObservations(_report("edge-1", region, one, one), timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f"observations[1].deployment_id {dep!r} is in the report twice" in (
        err.value.details() or "")
    many = [telemetry_pb2.Observation(deployment_id=f"ghost-{i}/v", samples=1)
            for i in range(MIN_OBSERVATIONS_CAP + 1)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReportObservations(_report("edge-1", region, *many), timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (f"observations has {MIN_OBSERVATIONS_CAP + 1} entries; at most "
            f"{MIN_OBSERVATIONS_CAP}") in (err.value.details() or "")
    assert (region, dep) not in service.fleet.observed
    await stub.ReportObservations(_report("edge-1", region, *many[:-1]), timeout=5)
