"""Numbers no real edge or GPU sends, against placement's real gRPC service on 127.0.0.1:
every finite-but-absurd observation (1e308 calls a second, 1e308 dollars, 2^64 tokens) and
every NaN/inf/negative stream number, a registration past what placement computes, is
INVALID_ARGUMENT naming the field and its bound, nothing of the message is learned, what was
accepted before stays, placement keeps serving, and no number the brain keeps is NaN or inf.
An NVML number no GPU has is read as unset (agent and placement), the report kept. Each
test fails on the code before the bounds (the numbers were accepted and kept)."""

from __future__ import annotations

import math
import pathlib
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import pytest_asyncio

from services.agent.fake_nvml import FakeNvml
from services.agent.nvml import NvmlReader
from services.api.switchyard.v1 import placement_pb2, placement_pb2_grpc, telemetry_pb2
from services.placement import validate
from services.placement.main import build_service
from services.placement.server import PlacementService
from tests.mesh_harness import mesh_config, serving_placement

Placement = tuple[PlacementService, placement_pb2_grpc.PlacementStub]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def placement(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Placement]:
    cfg = mesh_config(pathlib.Path(tmp_path_factory.mktemp("bounds")))
    service = build_service(cfg, preregister=True)
    async with serving_placement(service) as stub:
        yield service, stub


def _deployments(service: PlacementService) -> list[str]:
    return sorted(f"{s.backend.id}/{v.name}" for s in service.fleet.backends.values()
                  for v in s.backend.variants)


def _good(dep: str) -> telemetry_pb2.Observation:
    return telemetry_pb2.Observation(
        deployment_id=dep, samples=50, p50_ms=20.0, p95_ms=40.0, rtt_ms=2.0, calls_per_s=3.0,
        streams=telemetry_pb2.StreamObservation(
            prefill_ms_per_token=0.2, tpot_base_ms=20.0, tpot_per_stream_ms=-0.5, weight=4.0,
            attempts=3, tokens_in=900, tokens_out=300, input_usd=0.001, output_usd=0.002))


def _learned(service: PlacementService) -> Iterator[float]:
    """Every number placement keeps from edges' reports, as the brain reads it."""
    fleet = service.fleet
    for o in fleet.observed.values():
        yield float(o.p95_ms)
    yield from fleet.rtt_observed.values()
    for by_edge in fleet.use.values():
        yield from (rate for rate, _ in by_edge.values())
    for region in service.hub.regions:
        for table in service.hub.snapshot(region):
            for c in table.candidates:
                yield from (c.edge_slots, c.latency_p95_ms, c.cost_usd)
                if c.HasField("tokens"):
                    t = c.tokens
                    yield from (t.usd_per_1m_input, t.usd_per_1m_output)


BAD = [
    ("calls_per_s", 1e308, "<= 1e+06"), ("calls_per_s", 1e6 + 1, "<= 1e+06"),
    ("p95_ms", 1e308, "<= 1e+12"), ("rtt_ms", 1e300, "<= 1e+12"),
    ("p50_ms", 2e12, "<= 1e+12"), ("failures", 2**64 - 1, "over 1e+12"),
    ("streams.prefill_ms_per_token", math.nan, "+-1e+12"),
    ("streams.tpot_base_ms", math.inf, "+-1e+12"),
    ("streams.tpot_per_stream_ms", -1e308, "+-1e+12"),
    ("streams.weight", math.nan, "finite and >= 0"),
    ("streams.weight", -1.0, "finite and >= 0"),
    ("streams.attempts", 2**64 - 1, "over 1e+12"),
    ("streams.tokens_in", 2**64 - 1, "over 1e+12"),
    ("streams.tokens_out", 10**12 + 1, "over 1e+12"),
    ("streams.input_usd", 1e308, "<= 1e+06"), ("streams.input_usd", math.nan, "<= 1e+06"),
    ("streams.output_usd", -0.01, "<= 1e+06"), ("streams.output_usd", math.inf, "<= 1e+06"),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("name", "value", "bound"), BAD)
async def test_an_observation_no_edge_sends_is_refused_naming_field_and_bound(
        placement: Placement, name: str, value: float, bound: str) -> None:
    service, stub = placement
    region = service.hub.regions[0]
    deps = _deployments(service)
    ok = telemetry_pb2.ObservationReport(edge_id="edge-ok", edge_region=region,
                                         observations=[_good(deps[0])])
    await stub.ReportObservations(ok, timeout=5)
    kept = dict(service.fleet.use)
    bad = _good(deps[1])
    *path, leaf = name.split(".")
    setattr(getattr(bad, path[0]) if path else bad, leaf, value)
    report = telemetry_pb2.ObservationReport(edge_id="edge-bad", edge_region=region,
                                             observations=[_good(deps[0]), bad])
    for _ in range(2):  # twice: a second 1e308 sum was inf before the bounds
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ReportObservations(report, timeout=5)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        details = err.value.details() or ""
        assert f"observations[1].{name} " in details and bound in details, details
    assert dict(service.fleet.use) == kept  # nothing of it learned, nothing before it lost
    assert all(math.isfinite(x) for x in _learned(service))
    got = await stub.GetRouteTables(placement_pb2.GetRouteTablesRequest(edge_region=region),
                                    timeout=5)  # still serving
    assert got.tables


@pytest.mark.asyncio(loop_scope="module")
async def test_the_largest_numbers_a_real_edge_sends_are_learned_and_stay_finite(
        placement: Placement) -> None:
    """At the bounds, from many edges at once: accepted, and every sum the brain keeps is
    finite (the bounds are what keep it so)."""
    service, stub = placement
    region = service.hub.regions[0]
    dep = _deployments(service)[0]
    top = telemetry_pb2.Observation(
        deployment_id=dep, samples=validate.MAX_SAMPLES, p50_ms=validate.MAX_MS,
        p95_ms=validate.MAX_MS, rtt_ms=validate.MAX_MS, calls_per_s=validate.MAX_CALLS_PER_S,
        failures=validate.MAX_COUNT,
        streams=telemetry_pb2.StreamObservation(
            prefill_ms_per_token=validate.MAX_MS, tpot_base_ms=-validate.MAX_MS,
            tpot_per_stream_ms=validate.MAX_MS, weight=validate.MAX_STREAM_WEIGHT,
            attempts=validate.MAX_COUNT, tokens_in=validate.MAX_COUNT,
            tokens_out=validate.MAX_COUNT, input_usd=validate.MAX_USD,
            output_usd=validate.MAX_USD))
    for k in range(20):
        await stub.ReportObservations(telemetry_pb2.ObservationReport(
            edge_id=f"edge-top-{k}", edge_region=region, observations=[top]), timeout=5)
    assert (region, "edge-top-19") in service.fleet.use[dep]
    service.hub.publish()
    assert all(math.isfinite(x) for x in _learned(service))


def _report(bid: str, k: int, **gpu: float) -> telemetry_pb2.TelemetryReport:
    reading = telemetry_pb2.GpuReading(index=0, mem_used_bytes=1 << 30,
                                       mem_total_bytes=24 << 30, temperature_c=50.0,
                                       temperature_slowdown_c=90.0)
    for name, value in gpu.items():
        setattr(reading, name, value)
    return telemetry_pb2.TelemetryReport(
        backend_id=bid, agent_id="agent-b", unix_ms=5_000_000 + 1_000 * k,
        source=telemetry_pb2.TELEMETRY_SOURCE_NVML, backend_ready=True, gpus=[reading])


GPU_BAD = [
    ("temperature_c", math.nan), ("temperature_c", math.inf),
    ("temperature_slowdown_c", -300.0), ("gpu_util_pct", -1.0), ("gpu_util_pct", 101.0),
    ("mem_util_pct", math.nan), ("power_w", -5.0), ("power_limit_w", 1e308),
    ("mem_used_bytes", 25 << 30), ("mem_free_bytes", 2**64 - 1),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("name", "value"), GPU_BAD)
async def test_a_gpu_number_no_gpu_has_is_read_as_unset_and_the_report_used(
        placement: Placement, name: str, value: float) -> None:
    """A driver fault in one field costs that field, not the report's Triton counters
    (what routing runs on): the report is used, the field is as if the GPU did not report
    it, in the brain and in what ListBackends shows; the rest of the reading is kept."""
    service, stub = placement
    states = sorted(service.fleet.backends.values(), key=lambda s: s.backend.id)
    first, second = states[0].backend.id, states[1].backend.id
    message = _report(first, 1)
    message.more.append(_report(second, 1, **{name: value}))
    before = service.ingest.dropped_fields
    ack = await stub.StreamTelemetry(iter([message]), timeout=10)
    assert ack.accepted == 2
    assert service.ingest.dropped_fields == before + 1
    sent = service.gpus[second].sent[0]
    assert not sent.HasField(name) and validate.gpu_problems(sent) == []
    assert sent.temperature_slowdown_c == 90.0 or name == "temperature_slowdown_c"
    snap = service.fleet.backends[second].last
    assert snap is not None and snap.sent_ms == 5_001_000
    for s in service.fleet.backends.values():  # the brain holds no NaN, no impossible number
        for g in (s.last.gpus if s.last else ()):
            for x in (g.temperature_c, g.temperature_slowdown_c, g.gpu_util_pct):
                assert x is None or math.isfinite(x)
            assert g.gpu_util_pct is None or 0 <= g.gpu_util_pct <= 100
            assert (g.mem_free_bytes is None or g.mem_total_bytes is None
                    or g.mem_free_bytes <= g.mem_total_bytes)
    listed = await stub.ListBackends(placement_pb2.ListBackendsRequest(), timeout=5)
    shown = next(b for b in listed.backends if b.backend.id == second)
    assert not shown.gpus[0].HasField(name)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("name", "value", "bound"), [
    ("max_concurrency", 2**32 - 1, "<= 512"), ("max_concurrency", 513, "<= 512"),
    ("accelerator_count", 2**32 - 1, "<= 1024")])
async def test_a_registration_past_what_placement_computes_is_refused(
        placement: Placement, name: str, value: int, bound: str) -> None:
    """2^32 slots held the brain's M/M/c wait (one loop turn a slot) for minutes, and past
    ~750 slots it is NaN; on the old code this registration was accepted."""
    from services.convert import backend_to_pb

    service, stub = placement
    b = backend_to_pb(next(iter(service.fleet.backends.values())).backend)
    b.id = "too-big"
    setattr(b, name, value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RegisterBackend(placement_pb2.RegisterBackendRequest(backend=b), timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details() or ""
    assert details.startswith(f"backend.{name} {value} ") and bound in details, details
    assert "too-big" not in service.fleet.backends
    setattr(b, name, int(bound[3:]))  # the bound itself: a real backend, accepted
    await stub.RegisterBackend(placement_pb2.RegisterBackendRequest(backend=b), timeout=5)
    assert "too-big" in service.fleet.backends
    await stub.DeregisterBackend(placement_pb2.DeregisterBackendRequest(backend_id="too-big"),
                                 timeout=5)


def test_the_agent_leaves_a_number_no_gpu_has_unset_and_counts_it() -> None:
    """A driver fault (memory used over total, 300 % utilisation) is not sent: placement
    would refuse the whole report. The field is left unset, as an unreadable one."""
    nvml = FakeNvml(1)
    nvml.gpus[0].mem_used, nvml.gpus[0].gpu_util = 30 * 1024**3, 300  # free: wraps to 2^64-6G
    reader = NvmlReader(nvml)
    assert reader.start() == 1
    r = reader.read(0)
    assert not {"mem_used_bytes", "mem_free_bytes", "gpu_util_pct"} & {
        f.name for f, _ in r.ListFields()}
    assert r.HasField("mem_total_bytes") and r.temperature_c == 52.0
    assert reader.errors == 3
    assert validate.gpu_problems(r) == []
    reader.read(0)
    assert reader.errors == 6  # counted every read, logged once
