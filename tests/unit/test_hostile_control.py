"""A hostile peer against placement's own gRPC service (real server on 127.0.0.1): each bad
input is a clear INVALID_ARGUMENT naming the field, nothing of it is learned, and a
well-behaved edge's route tables are the same after it."""

from __future__ import annotations

import math
import pathlib
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import pytest_asyncio

from services.api.switchyard.v1 import placement_pb2, placement_pb2_grpc, telemetry_pb2
from services.placement.main import build_service
from services.placement.server import PlacementService
from tests.mesh_harness import mesh_config, serving_placement

Placement = tuple[PlacementService, placement_pb2_grpc.PlacementStub]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def placement(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Placement]:
    cfg = mesh_config(pathlib.Path(tmp_path_factory.mktemp("hostile")))
    service = build_service(cfg, preregister=True)
    async with serving_placement(service) as stub:
        yield service, stub


def _region(service: PlacementService) -> str:
    return service.hub.regions[0]  # an edge's region: its tables are built


def _deployment(service: PlacementService) -> str:
    state = next(iter(service.fleet.backends.values()))
    return f"{state.backend.id}/{state.backend.variants[0].name}"


async def _tables(stub: placement_pb2_grpc.PlacementStub, region: str) -> bytes:
    got = await stub.GetRouteTables(placement_pb2.GetRouteTablesRequest(edge_region=region),
                                    timeout=5)
    return b"".join(t.SerializeToString(deterministic=True)
                    for t in sorted(got.tables, key=lambda t: t.model))


def _finite_learned(service: PlacementService) -> Iterator[float]:
    fleet = service.fleet
    for o in fleet.observed.values():
        yield float(o.p95_ms)
    yield from fleet.rtt_observed.values()
    for by_edge in fleet.use.values():
        yield from (rate for rate, _ in by_edge.values())


BAD_OBSERVATIONS = [
    ("p95_ms", math.nan), ("p95_ms", -5.0), ("p95_ms", math.inf), ("p50_ms", math.nan),
    ("rtt_ms", math.inf), ("calls_per_s", math.nan), ("calls_per_s", math.inf),
    ("calls_per_s", -1.0),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("name", "value"), BAD_OBSERVATIONS)
async def test_a_non_finite_or_negative_observation_is_refused_and_not_learned(
        placement: Placement, name: str, value: float) -> None:
    service, stub = placement
    region, dep = _region(service), _deployment(service)
    before = await _tables(stub, region)
    good = telemetry_pb2.Observation(deployment_id=dep, samples=50, p50_ms=20.0, p95_ms=40.0,
                                     rtt_ms=2.0, calls_per_s=3.0)
    bad = telemetry_pb2.Observation()
    bad.CopyFrom(good)
    setattr(bad, name, value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReportObservations(telemetry_pb2.ObservationReport(
            edge_id="edge-x", edge_region=region, observations=[good, bad]), timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f"observations[1].{name}" in (err.value.details() or "")
    assert all(math.isfinite(x) and x >= 0 for x in _finite_learned(service))
    assert ("edge-x" not in {e for _, e in service.fleet.edges_seen})  # nothing of it taken
    assert before and await _tables(stub, region) == before


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("edge_id", "region", "says"), [
    ("", None, "edge_id ''"), ("e" * 200, None, "1..128"),
    ("edge-y", "atlantis", "edge_region 'atlantis' is not a region"),
    ("edge-y", "", "edge_region '' is not a region")])
async def test_an_observation_from_no_edge_or_no_region_is_refused(
        placement: Placement, edge_id: str, region: str | None, says: str) -> None:
    service, stub = placement
    dep = _deployment(service)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReportObservations(telemetry_pb2.ObservationReport(
            edge_id=edge_id, edge_region=_region(service) if region is None else region,
            observations=[telemetry_pb2.Observation(deployment_id=dep, samples=5,
                                                    p95_ms=10.0)]), timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert says in (err.value.details() or "")
    assert all(r in service.builder.catalog.regions for r, _ in service.fleet.edges_seen)


@pytest.mark.asyncio(loop_scope="module")
async def test_observations_of_unknown_deployments_are_not_kept(placement: Placement) -> None:
    service, stub = placement
    region = _region(service)
    await stub.ReportObservations(telemetry_pb2.ObservationReport(
        edge_id="edge-z", edge_region=region, observations=[
            telemetry_pb2.Observation(deployment_id=f"ghost-{i}/v", samples=50, p95_ms=9.0,
                                      calls_per_s=1.0) for i in range(200)]), timeout=5)
    assert not any(dep.startswith("ghost-") for _, dep in service.fleet.observed)
    assert not any(dep.startswith("ghost-") for dep in service.fleet.use)


@pytest.mark.asyncio(loop_scope="module")
async def test_watching_a_made_up_region_is_refused_and_adds_no_table_builds(
        placement: Placement) -> None:
    service, stub = placement
    regions = list(service.hub.regions)
    call = stub.WatchRoutes(placement_pb2.WatchRoutesRequest(edge_id="e",
                                                             edge_region="made-up-region"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "edge_region 'made-up-region' is not a region" in (err.value.details() or "")
    assert service.hub.regions == regions
    assert not service.hub.watchers


def _stats(variant: str, count: int, queue_ms: float, compute_ms: float
           ) -> telemetry_pb2.ModelStats:
    return telemetry_pb2.ModelStats(variant=variant, inference_count=count,
                                    execution_count=count, queue_ns=int(count * queue_ms * 1e6),
                                    compute_infer_ns=int(count * compute_ms * 1e6), ready=True)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_triton_restart_that_served_more_calls_learns_no_negative_time(
        placement: Placement) -> None:
    """Triton restarted between two reports and served more calls since than before it: the
    call count went up while its time counters restarted from 0. A window across the
    restart would be a negative compute, queue and busy time (a deployment faster than free);
    the totals since the restart are used instead. NaN and out-of-range GPU readings in the
    same reports are not a number placement learns."""
    service, stub = placement
    state = sorted(service.fleet.backends.values(), key=lambda s: s.backend.id)[-1]
    bid, variant = state.backend.id, state.backend.variants[0].name
    gpu = telemetry_pb2.GpuReading(index=0, name="L4", gpu_util_pct=math.nan,
                                   mem_util_pct=250.0, mem_used_bytes=48 << 30,
                                   mem_total_bytes=24 << 30, mem_free_bytes=16 << 30,
                                   temperature_c=math.nan, power_w=-math.inf)

    def report(k: int, stats: telemetry_pb2.ModelStats) -> telemetry_pb2.TelemetryReport:
        return telemetry_pb2.TelemetryReport(
            backend_id=bid, agent_id="agent-h", unix_ms=1_000_000 + 1_000 * k,
            source=telemetry_pb2.TELEMETRY_SOURCE_NVML, backend_ready=True, gpus=[gpu],
            models=[stats])

    async def reports() -> AsyncIterator[telemetry_pb2.TelemetryReport]:
        yield report(0, _stats(variant, 1000, 2.0, 40.0))
        yield report(1, _stats(variant, 1100, 2.0, 40.0))
        yield report(2, _stats(variant, 1500, 0.1, 1.0))  # restarted: more calls, less time

    ack = await stub.StreamTelemetry(reports(), timeout=10)
    assert ack.accepted == 3
    load = service.fleet.backends[bid].loads[variant]
    learned = [load.rps, load.busy_fraction, load.queue_ms, load.compute_ms]
    assert all(x is not None and math.isfinite(x) and x >= 0 for x in learned), learned
    region = _region(service)
    tables = await stub.GetRouteTables(
        placement_pb2.GetRouteTablesRequest(edge_region=region), timeout=5)
    rows = [c for t in tables.tables for c in t.candidates if c.backend_id == bid]
    assert rows
    assert all(math.isfinite(c.latency_p95_ms) and c.compute_ms >= 0 and c.queue_ms >= 0
               for c in rows)
    listed = await stub.ListBackends(placement_pb2.ListBackendsRequest(), timeout=5)
    assert bid in {s.backend.id for s in listed.backends}


@pytest.mark.asyncio(loop_scope="module")
async def test_route_tables_of_a_made_up_region_are_refused(placement: Placement) -> None:
    _, stub = placement
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetRouteTables(placement_pb2.GetRouteTablesRequest(edge_region="nowhere"),
                                  timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "edge_region 'nowhere' is not a region" in (err.value.details() or "")


def test_the_capacity_loop_counts_a_restarted_triton_from_its_totals(
        placement: Placement) -> None:
    """An instance the capacity loop started restarted and served more calls than its warm-up
    baseline, with less time: counting from the baseline would set a negative uint64
    (ValueError, the loop's poll lost); its totals are used, as a restart's."""
    from services.placement.capacity_telemetry import InstanceTelemetry

    service, _ = placement
    base = _stats("v", 100, 2.0, 40.0)
    reader = InstanceTelemetry(service, dict, baselines={("i-1", "v"): base})
    restarted = _stats("v", 150, 0.1, 1.0)
    assert reader._since_baseline("i-1", restarted) == restarted
    later = _stats("v", 300, 2.0, 40.0)
    counted = reader._since_baseline("i-1", later)
    assert counted.inference_count == 200 and counted.compute_infer_ns == 200 * 40_000_000


@pytest.mark.asyncio(loop_scope="module")
async def test_a_gpu_reading_with_more_memory_used_than_total_is_no_footprint_sample(
        placement: Placement) -> None:
    """A broken NVML read (used > total) measured no variant's footprint: the capacity
    loop's reading of that GPU is None, as for a GPU without NVML, until a sane one comes."""
    from services.placement.capacity_service import gpu_memory

    service, stub = placement
    state = sorted(service.fleet.backends.values(), key=lambda s: s.backend.id)[0]
    bid = state.backend.id

    def report(k: int, used: int, total: int) -> telemetry_pb2.TelemetryReport:
        return telemetry_pb2.TelemetryReport(
            backend_id=bid, agent_id="agent-m", unix_ms=2_000_000 + 1_000 * k,
            source=telemetry_pb2.TELEMETRY_SOURCE_NVML, backend_ready=True,
            gpus=[telemetry_pb2.GpuReading(index=0, mem_used_bytes=used,
                                           mem_total_bytes=total)])

    for k, (used, total, sane) in enumerate([(10 << 30, 24 << 30, True),
                                             (2**64 - 1, 24 << 30, False),
                                             (1 << 30, 0, False)]):
        ack = await stub.StreamTelemetry(iter([report(k, used, total)]), timeout=10)
        assert ack.accepted == 1
        got = gpu_memory(service, bid)
        assert (got is not None) is sane, (used, total, got)
        assert got is None or got.used_bytes <= got.total_bytes


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("field", "char"), [("endpoint", "9"), ("region", "r"),
                                             ("accelerator", "\U0001F600"),
                                             ("price_class", "\u00e9")])
async def test_a_huge_field_is_invalid_argument_naming_it_not_an_oversized_status(
        placement: Placement, field: str, char: str) -> None:
    """A refusal echoing a 100,000-character field was a status message over the client's
    16 KiB trailer limit: RESOURCE_EXHAUSTED 'Stream removed', the field never named."""
    from services.api.switchyard.v1 import fleet_pb2
    from services.convert import backend_to_pb

    service, stub = placement
    b: fleet_pb2.Backend = backend_to_pb(next(iter(service.fleet.backends.values())).backend)
    b.id = "huge"
    setattr(b, field, (("h:" if field == "endpoint" else "") + char * 100_000))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RegisterBackend(placement_pb2.RegisterBackendRequest(backend=b), timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert (err.value.details() or "").startswith(f"backend.{field} ")
    b.CopyFrom(backend_to_pb(next(iter(service.fleet.backends.values())).backend))
    b.id, b.variants[0].variant = "huge", "v" * 100_000
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RegisterBackend(placement_pb2.RegisterBackendRequest(backend=b), timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "backend.variants[0]" in (err.value.details() or "")
    assert "huge" not in service.fleet.backends


@pytest.mark.asyncio(loop_scope="module")
async def test_a_watch_that_never_reads_holds_bounded_pushes_and_others_keep_theirs(
        placement: Placement) -> None:
    """Clean (a regression check): a stalled edge's pending pushes are merged past
    MAX_PENDING_PUSHES, and a reading edge gets every publish meanwhile."""
    import asyncio

    from services.placement.watchers import MAX_PENDING_PUSHES
    from tests.mesh_harness import eventually

    service, stub = placement
    region = _region(service)
    stalled = stub.WatchRoutes(placement_pb2.WatchRoutesRequest(edge_id="stalled",
                                                                edge_region=region))
    reading = stub.WatchRoutes(placement_pb2.WatchRoutesRequest(edge_id="reading",
                                                                edge_region=region))
    assert (await stalled.read()).snapshot and (await reading.read()).snapshot
    seen: list[int] = []

    async def follow() -> None:
        while (update := await reading.read()) is not grpc.aio.EOF:
            seen.append(update.version)

    follower = asyncio.create_task(follow())
    target = sorted(service.fleet.backends)[0]
    try:
        for i in range(40):  # drain, undrain: each a publish with changed rows
            await stub.SetAvailability(placement_pb2.SetAvailabilityRequest(
                scope=placement_pb2.AVAILABILITY_SCOPE_BACKEND, target=target,
                availability=2 if i % 2 == 0 else 1), timeout=5)
        last = service.hub.version
        await eventually(lambda: seen and seen[-1] >= last, 20, "the reading edge caught up")
        assert all(len(w.pushes) <= MAX_PENDING_PUSHES for w in service.hub.watchers)
    finally:
        follower.cancel()
        stalled.cancel()
        reading.cancel()
    await eventually(lambda: not service.hub.watchers, 10, "both watches ended")


@pytest.mark.asyncio(loop_scope="module")
async def test_a_learned_state_with_poison_or_no_shape_never_stops_a_start(
        tmp_path: pathlib.Path) -> None:
    """A warm restart reads its file and its peers' states: one whose times do not read
    (no ``backends``) raised out of warm_start before (placement did not start); NaN, inf
    and negative numbers (JSON reads them) were restored as learned."""
    import json
    import time

    from placement.fleet import FleetState
    from services.placement import peer, persist

    source = FleetState()
    source.observe("r-east", "b/v", 50, 40.0, 100.0)
    source.observe("r-west", "b/v", 50, 30.0, 100.0)
    source.observe_rtt("r-east", "r-west", 20.0)
    source.observe_use("r-east", "e1", "b/v", 3.0, 100.0)
    data = persist.dump(source, 100.0, time.time())
    data["observed"][0][3] = math.nan
    data["rtt"][0][2] = math.inf
    data["use"][0][3] = -1.0
    path = tmp_path / "learned.json"
    path.write_text(json.dumps(data))
    fleet = FleetState()
    got = await peer.warm_start(fleet, path, [], 100.0, None, "p")  # type: ignore[arg-type]
    assert got.source == "file"
    assert [o.p95_ms for o in fleet.observed.values()] == [30.0]
    assert not fleet.rtt_observed and not fleet.use

    del data["backends"]
    path.write_text(json.dumps(data))
    cold = FleetState()
    got = await peer.warm_start(cold, path, [], 100.0, None, "p")  # type: ignore[arg-type]
    assert got.source == "cold" and not cold.observed


@pytest.mark.asyncio(loop_scope="module")
async def test_statistics_of_models_a_backend_does_not_serve_are_not_kept(
        placement: Placement) -> None:
    """An agent naming a new model in each report grew the backend's loads (its learned
    state, its persisted file, its change signature: a rebuild a report) without end."""
    service, stub = placement
    state = sorted(service.fleet.backends.values(), key=lambda s: s.backend.id)[1]
    bid, variant = state.backend.id, state.backend.variants[0].name

    async def reports() -> AsyncIterator[telemetry_pb2.TelemetryReport]:
        for k in range(100):
            yield telemetry_pb2.TelemetryReport(
                backend_id=bid, agent_id="agent-v", unix_ms=3_000_000 + 1_000 * k,
                backend_ready=True, models=[_stats(variant, 100 * (k + 1), 1.0, 20.0),
                                            _stats(f"ghost-{k}", 5, 1.0, 20.0)])

    ack = await stub.StreamTelemetry(reports(), timeout=10)
    assert ack.accepted == 100
    served = {v.name for v in state.backend.variants}
    assert set(service.fleet.backends[bid].loads) <= served
    assert variant in service.fleet.backends[bid].loads
    last = service.fleet.backends[bid].last
    assert last is not None and set(last.variants) == {variant}


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("hint", "value"), [
    ("slo_ms", math.nan), ("slo_ms", -5.0), ("slo_ms", math.inf), ("min_quality", math.nan),
    ("min_quality", 5.0), ("max_cost_usd", math.nan), ("max_cost_usd", -1.0)])
async def test_explain_with_an_impossible_hint_is_invalid_argument_naming_it(
        placement: Placement, hint: str, value: float) -> None:
    """Explain answered a NaN SLO '5 of 5 deployments feasible' (an edge refuses that
    x-slo-ms); its hints now get the same clear refusal."""
    service, stub = placement
    request = placement_pb2.ExplainRequest(model="summarize", edge_region=_region(service))
    setattr(request, hint, value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Explain(request, timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith(f"{hint} ")


@pytest.mark.asyncio(loop_scope="module")
async def test_deregistered_backends_leave_no_cost_series_on_metrics(
        placement: Placement) -> None:
    """Every backend ever registered kept its cost series on /metrics: the capacity loop's
    instances (a new id each start) or an agent churning ids grew the label set for as
    long as placement ran."""
    from services.api.switchyard.v1 import fleet_pb2
    from services.convert import backend_to_pb

    service, stub = placement
    template = backend_to_pb(service.fleet.backends[
        sorted(service.fleet.backends)[0]].backend)

    def series() -> set[str]:
        return {s.labels["deployment"] for m in service.metrics.registry.collect()
                if m.name == "switchyard_placement_deployment_cost_usd" for s in m.samples}

    service.hub.publish()
    kept = series()
    assert kept
    for k in range(20):
        b = fleet_pb2.Backend()
        b.CopyFrom(template)
        b.id = f"churn-{k}"
        await stub.RegisterBackend(placement_pb2.RegisterBackendRequest(backend=b), timeout=5)
    service.hub.publish()
    assert {d.split("/", 1)[0] for d in series()} >= {f"churn-{k}" for k in range(20)}
    for k in range(20):
        await stub.DeregisterBackend(placement_pb2.DeregisterBackendRequest(
            backend_id=f"churn-{k}"), timeout=5)
    service.hub.publish()
    assert series() == kept
