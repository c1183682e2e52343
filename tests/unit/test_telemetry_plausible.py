"""An agent's counters that no backend could produce are refused, not learned
(``services/placement/plausible.py``), through placement's real ``StreamTelemetry``: the
stream goes on, the ack says what was refused and why, a metric counts it, and the
backend's estimates stay what the plausible reports made them. A real restart (every
counter of the variant back to what it could count since the last report) is still used.

Every test but the restart's fails on the code before (each report used: the estimates moved
to the garbage, nothing refused)."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest_asyncio

from services.api.switchyard.v1 import placement_pb2_grpc, telemetry_pb2
from services.placement.main import build_service
from services.placement.server import PlacementService
from tests.mesh_harness import mesh_config, serving_placement

BACKEND, VARIANT = "east-fast", "summarize-small"
T0 = 1_800_000_000_000  # the agent's clock, ms


@pytest_asyncio.fixture
async def served(tmp_path: pathlib.Path
                 ) -> AsyncIterator[tuple[PlacementService, placement_pb2_grpc.PlacementStub]]:
    service = build_service(mesh_config(tmp_path), preregister=True)
    async with serving_placement(service) as stub:
        yield service, stub


def report(second: int, calls: int, compute_ms: float = 20.0, queue_ms: float = 2.0,
           compute_ns: int | None = None) -> telemetry_pb2.TelemetryReport:
    """Counters after ``calls`` calls of ``compute_ms`` each, read ``second`` s in."""
    return telemetry_pb2.TelemetryReport(
        backend_id=BACKEND, agent_id="a", unix_ms=T0 + second * 1000, backend_ready=True,
        source=telemetry_pb2.TELEMETRY_SOURCE_SIMULATED,
        models=[telemetry_pb2.ModelStats(
            variant=VARIANT, inference_count=calls, execution_count=calls,
            success_count=calls, queue_ns=int(calls * queue_ms * 1e6),
            compute_infer_ns=(int(calls * compute_ms * 1e6) if compute_ns is None
                              else compute_ns), ready=True)])


async def send(stub: placement_pb2_grpc.PlacementStub, *reports: telemetry_pb2.TelemetryReport
               ) -> telemetry_pb2.TelemetryAck:
    async def stream() -> AsyncIterator[telemetry_pb2.TelemetryReport]:
        for r in reports:
            yield r

    ack: telemetry_pb2.TelemetryAck = await stub.StreamTelemetry(stream(), timeout=10)
    return ack


def refused(service: PlacementService, reason: str) -> float:
    return service.metrics.registry.get_sample_value(
        "switchyard_placement_telemetry_refused_total", {"reason": reason}) or 0.0


def compute_ms(service: PlacementService) -> float | None:
    return service.fleet.backends[BACKEND].loads[VARIANT].compute_ms


# a steady backend: 50 calls a second of 20 ms, for 10 s
STEADY = [report(s, 1000 + 50 * s) for s in range(10)]


async def test_counters_that_go_backwards_without_a_restart_are_refused(
        served: tuple[PlacementService, placement_pb2_grpc.PlacementStub]) -> None:
    service, stub = served
    before = report(9, 1450)
    # a second later: fewer calls, but more compute time than a fresh process could have
    # spent on 4 slots in 1 s (200 s): no restart
    garbled = report(10, 1400, compute_ns=int(200e9))
    after = report(11, 1550)
    ack = await send(stub, *STEADY, before, garbled, after)
    assert ack.accepted == len(STEADY) + 2, ack
    assert "1 reports refused as implausible" in ack.message, ack.message
    assert "counters went backwards" in ack.message and "no restart" in ack.message
    assert refused(service, "counter_backwards") == 1
    got = compute_ms(service)
    assert got is not None and abs(got - 20.0) < 0.5  # never learned from the garbled one


async def test_a_restart_is_used(
        served: tuple[PlacementService, placement_pb2_grpc.PlacementStub]) -> None:
    """Passes on the old code too: placement took any backwards counter for a restart."""
    service, stub = served
    restarted = report(12, 30, compute_ms=35.0)  # 30 calls since it came back
    ack = await send(stub, *STEADY, restarted)
    assert ack.accepted == len(STEADY) + 1 and "refused" not in ack.message, ack
    assert sum(refused(service, r) for r in ("counter_backwards", "calls_past_capacity",
                                             "compute_past_capacity")) == 0
    got = compute_ms(service)
    assert got is not None and abs(got - 35.0) < 0.5  # the totals of its new life


async def test_a_jump_past_what_the_backend_could_serve_is_refused(
        served: tuple[PlacementService, placement_pb2_grpc.PlacementStub]) -> None:
    service, stub = served
    jump = report(10, 1450 + 10**9)  # a billion calls in a second on 4 slots
    fine = report(11, 1500)  # back on its count: the jump was one bad read
    ack = await send(stub, *STEADY, jump, fine)
    assert ack.accepted == len(STEADY) + 1, ack
    assert "calls in 1 s, more than 4 slots could serve" in ack.message, ack.message
    assert refused(service, "calls_past_capacity") == 1
    load = service.fleet.backends[BACKEND].loads[VARIANT]
    assert load.rps < 100.0, load  # 50 calls a second, not a billion


async def test_compute_time_no_server_could_spend_is_refused(
        served: tuple[PlacementService, placement_pb2_grpc.PlacementStub]) -> None:
    service, stub = served
    busy = report(10, 1500, compute_ns=int(1450 * 20e6 + 1e15))  # 11 days of compute in 1 s
    ack = await send(stub, *STEADY, busy)
    assert ack.accepted == len(STEADY), ack
    assert refused(service, "compute_past_capacity") == 1
    got = compute_ms(service)
    assert got is not None and abs(got - 20.0) < 0.5


async def test_counters_that_moved_once_and_go_on_are_rebased_not_learned(
        served: tuple[PlacementService, placement_pb2_grpc.PlacementStub]) -> None:
    """A counter source that jumped once (a billion calls) and counts on from there: the
    jumped report is refused, the next one (plausible after it) is used against it, so the
    estimates see 50 calls a second of 20 ms, never the jump."""
    service, stub = served
    base = 1450 + 10**9
    ack = await send(stub, *STEADY, report(10, base), report(11, base + 50),
                     report(12, base + 100))
    assert ack.accepted == len(STEADY) + 2, ack
    assert refused(service, "calls_past_capacity") == 1
    load = service.fleet.backends[BACKEND].loads[VARIANT]
    assert load.rps < 100.0 and load.compute_ms is not None and abs(load.compute_ms - 20) < 1
