"""Warm restarts: a placement replica restarted on its port routes on what it had learned
(compute estimates, observed p95s, slot shares, drains) from its first build, not priors."""

from __future__ import annotations

import json
import pathlib
from collections.abc import AsyncIterator

import grpc

from services.api.switchyard.v1 import placement_pb2, placement_pb2_grpc, telemetry_pb2
from services.placement import persist
from services.placement.main import RunningPlacement, start_placement
from services.ports import free_port
from tests.mesh_harness import eventually, mesh_config

BACKENDS = ("east-fast", "central-cheap", "west-cheap")
DEP = "east-fast/summarize-small"


def _report(backend: str, count: int, unix_ms: int) -> telemetry_pb2.TelemetryReport:
    return telemetry_pb2.TelemetryReport(
        backend_id=backend, agent_id="a", unix_ms=unix_ms, backend_ready=True,
        source=telemetry_pb2.TELEMETRY_SOURCE_SIMULATED,
        gpus=[telemetry_pb2.GpuReading(index=0, name="gpu", gpu_util_pct=30.0)],
        models=[telemetry_pb2.ModelStats(variant=v, inference_count=count,
                                         execution_count=count, queue_ns=count * 2_000_000,
                                         compute_infer_ns=count * 7_000_000, ready=True)
                for v in ("summarize-small", "summarize-large", "generate-small")])


async def _learn(running: RunningPlacement) -> None:
    """Telemetry windows for every backend, an edge's observations, a drain."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        stub = placement_pb2_grpc.PlacementStub(ch)

        async def reports() -> AsyncIterator[telemetry_pb2.TelemetryReport]:
            for k, count in enumerate((100, 130, 170)):
                for b in BACKENDS:
                    yield _report(b, count, 1_000_000 + 1000 * k)

        ack = await stub.StreamTelemetry(reports(), timeout=10)
        assert ack.accepted == 3 * len(BACKENDS)
        await stub.ReportObservations(telemetry_pb2.ObservationReport(
            edge_id="edge-1", edge_region="r-east", observations=[telemetry_pb2.Observation(
                deployment_id=DEP, samples=50, p95_ms=42.5, rtt_ms=3.0, calls_per_s=12.0)]),
            timeout=5)
        await stub.SetAvailability(placement_pb2.SetAvailabilityRequest(
            scope=placement_pb2.AVAILABILITY_SCOPE_BACKEND, target="west-cheap",
            availability=2), timeout=5)


def _rows(running: RunningPlacement) -> dict[tuple[str, str], list[placement_pb2.Candidate]]:
    running.service.hub.publish()
    return {k: list(t.candidates) for k, t in running.service.hub.tables.items()}


async def test_a_restarted_replica_routes_as_it_did(tmp_path: pathlib.Path) -> None:
    # Restored ages grow by the time the replica was down, so telemetry older than
    # stale_after_s comes back stale (as it should). Three replica starts on a loaded 2-core
    # machine can take longer than the default 5 s: the window here is wide so the test
    # measures what was learned, not how fast the machine is.
    base = mesh_config(tmp_path)
    cfg = base.model_copy(update={"placement": base.placement.model_copy(
        update={"stale_after_s": 120.0})})
    port = free_port()
    first = await start_placement(cfg, port=port, metrics_port=0)
    try:
        await _learn(first)
        before = _rows(first)
    finally:
        await first.stop(0.2)  # saves what it learned
    dep = next(c for c in before[("summarize", "r-east")] if c.deployment_id == DEP)
    assert dep.observed and dep.latency_p95_ms == 42.5 and not dep.penalty_reason
    assert any(c.dropped_reason == "backend drained by operator"
               for rows in before.values() for c in rows)

    cold = await start_placement(cfg, port=free_port(), metrics_port=0)  # another file
    try:
        assert _rows(cold) != before  # what there is to lose
    finally:
        await cold.stop(0.2)

    again = await start_placement(cfg, port=port, metrics_port=0)
    try:
        await eventually(lambda: _rows(again) == before, 2.0,
                         "the restarted replica's tables equal the ones before")
    finally:
        await again.stop(0.2)


async def test_it_keeps_saving_while_it_runs(tmp_path: pathlib.Path) -> None:
    cfg = mesh_config(tmp_path)
    running = await start_placement(cfg, port=0, metrics_port=0)
    try:
        assert running.keeper is not None
        running.keeper.every_s = 0.05
        await running.keeper.stop()  # restart the loop at the new period
        running.keeper.start()
        saves = running.keeper.saves
        await eventually(lambda: running.keeper is not None and running.keeper.saves > saves + 1,
                         5.0, "periodic saves")
        data = json.loads(running.keeper.path.read_text())
        assert data["format"] == persist.FORMAT and set(data["backends"]) == set(BACKENDS)
        assert not [p for p in running.keeper.path.parent.iterdir()
                    if p.name.startswith(running.keeper.path.name + ".")]  # no temp left
    finally:
        await running.stop(0.2)


async def test_a_file_of_another_format_is_ignored(tmp_path: pathlib.Path) -> None:
    cfg = mesh_config(tmp_path)
    port = free_port()
    path = persist.path_for(cfg.path(cfg.run_dir), port)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": 99, "backends": {"ghost": {}}}))
    running = await start_placement(cfg, port=port, metrics_port=0)
    try:
        assert "ghost" not in running.service.fleet.backends
        assert set(running.service.fleet.backends) == set(BACKENDS)
    finally:
        await running.stop(0.2)


async def test_an_operators_drain_and_undrain_are_saved_at_once(tmp_path: pathlib.Path) -> None:
    """An undrain lost between two periodic saves would come back as a drain after a crash
    (a fresh-clone run's drills found it: a restarted placement kept a lifted drain)."""
    cfg = mesh_config(tmp_path)
    running = await start_placement(cfg, port=0, metrics_port=0)
    try:
        assert running.keeper is not None
        running.keeper.every_s = 3600.0  # no periodic save during the test

        def saved(backend: str) -> int:
            assert running.keeper is not None
            data = persist.read(running.keeper.path)
            return -1 if data is None else int(data["backends"][backend]["availability"])

        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = placement_pb2_grpc.PlacementStub(ch)
            for availability in (2, 1):  # drained, then active again
                await stub.SetAvailability(placement_pb2.SetAvailabilityRequest(
                    scope=placement_pb2.AVAILABILITY_SCOPE_BACKEND, target="west-cheap",
                    availability=availability), timeout=5)
                await eventually(lambda a=availability: saved("west-cheap") == a, 3.0,
                                 f"availability {availability} saved")
    finally:
        await running.stop(0.2)
