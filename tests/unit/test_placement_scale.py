"""Placement at fleet scale: batched reports, rows pushed only when they change materially,
one serialised delta per region, rates by the agent's clock, no rebuild for load wobble."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from placement.fleet import FleetState, TelemetrySnapshot, VariantStats
from services.api.switchyard.v1 import placement_pb2, placement_pb2_grpc, telemetry_pb2
from services.grpc_errors import ErrorInterceptor
from services.placement.main import build_service, register
from services.placement.server import PlacementService
from tests.mesh_harness import eventually, mesh_config

DEP = "east-fast/summarize-small"


@pytest_asyncio.fixture
async def served(tmp_path: pathlib.Path
                 ) -> AsyncIterator[tuple[PlacementService, placement_pb2_grpc.PlacementStub]]:
    service = build_service(mesh_config(tmp_path), preregister=True)
    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    register(service, server)  # as main does: WatchRoutes yields serialised bytes
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield service, placement_pb2_grpc.PlacementStub(ch)
    await server.stop(0)


def _report(backend: str, count: int, unix_ms: int) -> telemetry_pb2.TelemetryReport:
    return telemetry_pb2.TelemetryReport(
        backend_id=backend, agent_id="a", unix_ms=unix_ms, backend_ready=True,
        source=telemetry_pb2.TELEMETRY_SOURCE_SIMULATED,
        models=[telemetry_pb2.ModelStats(variant="summarize-small", inference_count=count,
                                         execution_count=count, queue_ns=count * 1_000_000,
                                         compute_infer_ns=count * 40_000_000, ready=True)])


async def test_one_message_carries_an_agents_whole_round(
        served: tuple[PlacementService, placement_pb2_grpc.PlacementStub]) -> None:
    service, stub = served
    first = _report("east-fast", 10, 1000)
    first.more.extend([_report("central-cheap", 20, 1000), _report("west-cheap", 30, 1000)])

    async def one() -> AsyncIterator[telemetry_pb2.TelemetryReport]:
        yield first

    ack = await stub.StreamTelemetry(one(), timeout=5)
    assert ack.accepted == 3
    for backend, count in (("east-fast", 10), ("central-cheap", 20), ("west-cheap", 30)):
        snap = service.fleet.backends[backend].last
        assert snap is not None and snap.variants["summarize-small"].inference_count == count
    assert service.metrics.registry.get_sample_value(
        "switchyard_placement_telemetry_reports_total") == 3


async def test_watchers_get_serialised_updates_that_parse(
        served: tuple[PlacementService, placement_pb2_grpc.PlacementStub]) -> None:
    service, stub = served
    call = stub.WatchRoutes(placement_pb2.WatchRoutesRequest(edge_id="e", edge_region="r-east"))
    it = call.__aiter__()
    snap = await it.__anext__()
    assert snap.snapshot and snap.placement_id == service.placement_id
    assert any(c.deployment_id == DEP for t in snap.tables for c in t.candidates)
    await stub.SetAvailability(placement_pb2.SetAvailabilityRequest(
        scope=placement_pb2.AVAILABILITY_SCOPE_BACKEND, target="east-fast",
        availability=2), timeout=5)  # drained
    update = await it.__anext__()
    rows = [c for d in update.deltas for c in d.upserts if c.deployment_id == DEP]
    assert rows and rows[0].dropped_reason == "backend drained by operator"
    call.cancel()


def test_load_wobble_is_not_pushed_a_real_change_is(tmp_path: pathlib.Path) -> None:
    service = build_service(mesh_config(tmp_path), preregister=True)
    hub, fleet = service.hub, service.fleet
    now = [1.0]
    hub.clock = lambda: now[0]  # observations are at 0.0: fresh
    hub.publish()
    w = hub.subscribe("e", "r-east")
    fleet.observe("r-east", DEP, 100, 200.0, 0.0)
    hub.publish()
    assert w.take_push() is not None
    fleet.observe("r-east", DEP, 100, 202.0, 0.0)  # 1 %: noise
    hub.publish()
    assert w.take_push() is None
    fleet.observe("r-east", DEP, 100, 230.0, 0.0)  # 15 %: an edge may route differently
    hub.publish()
    assert w.take_push() is None  # a learned change within 5 s of the last one waits
    now[0] += hub.estimate_every_s  # for the estimate cadence (services.placement.bands)
    hub.publish()
    push = w.take_push()
    assert push is not None
    (delta,) = [d for d in push.deltas("r-east") if d.model == "summarize"]
    assert [c.latency_p95_ms for c in delta.upserts if c.deployment_id == DEP] == [230.0]


def test_one_serialised_update_per_region_and_a_slow_watcher_merges(
        tmp_path: pathlib.Path) -> None:
    service = build_service(mesh_config(tmp_path), preregister=True)
    hub, fleet = service.hub, service.fleet
    now = [1.0]
    hub.clock = lambda: now[0]  # observations are at 0.0: fresh
    hub.publish()
    a, b = hub.subscribe("a", "r-east"), hub.subscribe("b", "r-east")
    fleet.observe("r-east", DEP, 100, 200.0, 0.0)
    hub.publish()
    pa, pb = a.take_push(), b.take_push()
    assert pa is pb is not None
    assert pa.payload("r-east", "p") is pb.payload("r-east", "p")  # built once
    for p95 in (300.0, 400.0, 500.0):  # b does not read in between
        fleet.observe("r-east", DEP, 100, p95, 0.0)
        now[0] += hub.estimate_every_s  # each its own publish (the estimate cadence)
        hub.publish()
        a.take_push()
    merged = b.take_push()
    assert merged is not None and merged.version == hub.version
    update = placement_pb2.RouteUpdate.FromString(merged.payload("r-east", "p"))
    rows = [c for d in update.deltas for c in d.upserts if c.deployment_id == DEP]
    assert [c.latency_p95_ms for c in rows] == [500.0]  # the newest row, once


def _fleet() -> FleetState:
    from placement.model import Backend, Variant

    fleet = FleetState()
    fleet.register(Backend(id="b", endpoint="h:1", cloud="c", region="r", accelerator="x",
                           accelerator_count=1, price_class="on-demand", max_concurrency=4,
                           variants=(Variant("v", "m", 0.8),)))
    return fleet


def _snap(count: int, compute_ns: int, sent_ms: int) -> TelemetrySnapshot:
    return TelemetrySnapshot(True, True, (), {"v": VariantStats(
        count, count, 0, count * 1_000_000, compute_ns)}, sent_ms=sent_ms)


def test_rates_use_the_agents_clock_and_the_first_window_seeds_them() -> None:
    fleet = _fleet()
    fleet.ingest("b", _snap(0, 0, 10_000), now=5.0)
    # Two reports read 1 s apart by the agent arrive 0.1 s apart (placement was behind).
    fleet.ingest("b", _snap(20, 20 * 40_000_000, 11_000), now=5.1)
    load = fleet.backends["b"].loads["v"]
    assert load.rps == pytest.approx(20.0)  # not 200 (arrival), not 10 (half-way from 0)
    assert load.busy_fraction == pytest.approx(0.8)


def test_a_small_load_wobble_does_not_rebuild_the_backends_rows() -> None:
    fleet = _fleet()
    fleet.ingest("b", _snap(0, 0, 0), now=0.0)
    fleet.ingest("b", _snap(20, 20 * 40_000_000, 1000), now=1.0)
    fleet.take_dirty()
    # 3.8 % faster window: rate and busy fraction move a little, nothing a table shows.
    fleet.ingest("b", _snap(40, 40 * 40_000_000, 1964), now=2.0)
    assert fleet.take_dirty() == (False, set())
    # Twice the load does.
    fleet.ingest("b", _snap(80, 80 * 40_000_000, 2964), now=3.0)
    assert fleet.take_dirty() == (False, {"b"})


async def test_a_bad_report_in_a_batch_ends_the_stream_after_the_good_ones(
        served: tuple[PlacementService, placement_pb2_grpc.PlacementStub]) -> None:
    service, stub = served
    first = _report("east-fast", 10, 1000)
    first.more.extend([_report("nobody", 20, 1000), _report("west-cheap", 30, 1000)])

    async def one() -> AsyncIterator[telemetry_pb2.TelemetryReport]:
        yield first

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.StreamTelemetry(one(), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nobody" in (err.value.details() or "")
    assert service.fleet.backends["east-fast"].last is not None
    assert service.fleet.backends["west-cheap"].last is None
    assert service.metrics.registry.get_sample_value(
        "switchyard_placement_telemetry_reports_total") == 1
    await eventually(lambda: not service.fleet.dirty, 2.0, "the good report's change published")
