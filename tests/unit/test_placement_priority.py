"""Route propagation under a backlog (issue 15): the scheduled rebuild is bounded per publish,
and a backend that becomes unusable or usable again goes out first, ahead of load changes.

At 20,000 GPUs one publish rebuilt every changed row on placement's one event loop; a
readiness flip that arrived behind a fleet-wide load change waited for all of it.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator

import pytest_asyncio

from placement.fleet import TelemetrySnapshot, VariantStats
from placement.model import Backend, Variant
from services.api.switchyard.v1 import placement_pb2, placement_pb2_grpc, telemetry_pb2
from services.placement.hub import Rows
from services.placement.main import build_service
from services.placement.server import PlacementService
from tests.mesh_harness import eventually, mesh_config, serving_placement

FLEET = 120  # backends on top of the mesh's three
NOT_READY = "Triton server not ready"


def _service(tmp_path: pathlib.Path) -> PlacementService:
    service = build_service(mesh_config(tmp_path), preregister=True)
    for i in range(FLEET):
        service.fleet.register(Backend(
            id=f"be-{i:03d}", endpoint=f"h:{i}", cloud="aws", region="r-west",
            accelerator="gpu-cheap", accelerator_count=1, price_class="spot",
            variants=(Variant("summarize-small", "summarize", 0.7),)))
    service.hub.coalesce_s = 3600.0  # no timer: the tests publish themselves
    service.hub.urgent_s = 3600.0
    return service


def _snap(i: int, count: int, sent_ms: int, ready: bool = True,
          compute_ms: float = 40.0) -> TelemetrySnapshot:
    return TelemetrySnapshot(ready, True, (), {"summarize-small": VariantStats(
        count, count, 0, count * 1_000_000, int(count * compute_ms * 1e6))}, sent_ms=sent_ms)


def _rows(push_rows: dict[tuple[str, str], Rows]) -> set[str]:
    return {dep for rows in push_rows.values() for dep in rows}


def _per_backend(service: PlacementService) -> int:
    """Rows one backend costs the bound: one per (model, edge region)."""
    return len(service.builder.catalog.models) * len(service.hub.regions)


async def test_a_readiness_flip_goes_out_first_and_the_backlog_in_bounded_pieces(
        tmp_path: pathlib.Path) -> None:
    service = _service(tmp_path)
    fleet, hub = service.fleet, service.hub
    for i in range(FLEET):
        fleet.ingest(f"be-{i:03d}", _snap(i, 0, 0), now=0.0)
        fleet.ingest(f"be-{i:03d}", _snap(i, 20, 1000), now=1.0)
    hub.publish()
    w = hub.subscribe("e", "r-east")
    # Every backend's compute doubles (a fleet-wide load change), and be-007 stops serving.
    for i in range(FLEET):
        fleet.ingest(f"be-{i:03d}", _snap(i, 40, 2000, ready=i != 7, compute_ms=80.0),
                     now=2.0)
    hub.urgent("be-007")
    pushes: list[Rows] = []
    hub.on_published = lambda p: pushes.append(
        {d: r for rows in p.rows.values() for d, r in rows.items()})
    budget = 10  # backends per publish
    hub.max_build_rows = budget * _per_backend(service)
    hub.publish(hub.max_build_rows)
    first = pushes[0]
    assert first["be-007/summarize-small"] is not None
    assert first["be-007/summarize-small"].dropped_reason == NOT_READY
    assert len({d.split("/")[0] for d in first}) <= budget
    assert hub.backlog == FLEET - budget
    # The rest follows in bounded pieces, each its own publish, without a timer.
    await eventually(lambda: hub.backlog == 0, 5.0, "the backlog published")
    assert all(len({d.split("/")[0] for d in p}) <= budget for p in pushes)
    assert {f"be-{i:03d}/summarize-small" for i in range(FLEET)} <= set().union(*pushes)
    assert w.take_push() is not None
    # Built in pieces, the tables are what one full rebuild makes.
    (tmp_path / "whole").mkdir()
    whole = _service(tmp_path / "whole")
    whole.fleet.backends = fleet.backends
    whole.hub.publish()
    assert {k: [c.SerializeToString() for c in t.candidates] for k, t in hub.tables.items()} \
        == {k: [c.SerializeToString() for c in t.candidates]
            for k, t in whole.hub.tables.items()}


async def test_a_full_rebuild_is_bounded_too_and_removes_what_left(
        tmp_path: pathlib.Path) -> None:
    service = _service(tmp_path)
    fleet, hub = service.fleet, service.hub
    hub.publish()
    fleet.deregister("be-003")
    fleet.all_dirty = True  # prices changed: every row
    hub.publish(10 * _per_backend(service))
    assert hub.backlog > 0
    await eventually(lambda: hub.backlog == 0, 5.0, "the full rebuild published")
    deps = {c.deployment_id for t in hub.tables.values() for c in t.candidates}
    assert "be-004/summarize-small" in deps and "be-003/summarize-small" not in deps


async def test_publish_without_a_bound_builds_everything(tmp_path: pathlib.Path) -> None:
    service = _service(tmp_path)
    fleet, hub = service.fleet, service.hub
    hub.publish()
    for i in range(FLEET):
        fleet.ingest(f"be-{i:03d}", _snap(i, 20, 1000), now=1.0)
    hub.publish(_per_backend(service))  # one backend now, the others left
    assert hub.backlog == FLEET - 1
    assert service.metrics.registry.get_sample_value(
        "switchyard_placement_route_backlog_backends") == FLEET - 1
    hub.publish()  # an operator's or a snapshot's publish: everything, now
    assert hub.backlog == 0 and not fleet.dirty


@pytest_asyncio.fixture
async def served(tmp_path: pathlib.Path
                 ) -> AsyncIterator[tuple[PlacementService, placement_pb2_grpc.PlacementStub]]:
    service = _service(tmp_path)
    async with serving_placement(service) as stub:
        yield service, stub


def _report(i: int, count: int, unix_ms: int, ready: bool = True,
            compute_ms: float = 40.0) -> telemetry_pb2.TelemetryReport:
    return telemetry_pb2.TelemetryReport(
        backend_id=f"be-{i:03d}", agent_id="a", unix_ms=unix_ms, backend_ready=ready,
        source=telemetry_pb2.TELEMETRY_SOURCE_SIMULATED,
        models=[telemetry_pb2.ModelStats(
            variant="summarize-small", inference_count=count, execution_count=count,
            queue_ns=count * 1_000_000, compute_infer_ns=int(count * compute_ms * 1e6),
            ready=True)])


async def _stream(stub: placement_pb2_grpc.PlacementStub,
                  messages: list[telemetry_pb2.TelemetryReport]) -> int:
    async def gen() -> AsyncIterator[telemetry_pb2.TelemetryReport]:
        for m in messages:
            yield m

    return int((await stub.StreamTelemetry(gen(), timeout=10)).accepted)


async def test_telemetry_marks_a_readiness_flip_urgent_and_a_load_change_not(
        served: tuple[PlacementService, placement_pb2_grpc.PlacementStub]) -> None:
    service, stub = served
    hub = service.hub
    rounds = [[_report(i, 0, 0) for i in range(FLEET)],
              [_report(i, 20, 1000) for i in range(FLEET)]]
    for r in rounds:
        assert await _stream(stub, r) == FLEET
    hub.publish()
    pushes: list[set[str]] = []
    hub.on_published = lambda p: pushes.append(_rows(p.rows))
    # One batch: every backend twice as slow, be-042 not ready, be-043 only slower.
    batch = [_report(i, 40, 2000, ready=i != 42, compute_ms=80.0) for i in range(FLEET)]
    batch[0].more.extend(batch[1:])
    assert await _stream(stub, [batch[0]]) == FLEET
    hub.publish(_per_backend(service))  # room for one backend: the urgent one
    assert pushes[0] == {"be-042/summarize-small"}
    assert hub.backlog == FLEET - 1
    await eventually(lambda: hub.backlog == 0, 5.0, "the backlog published")
    # Back to ready: urgent again; a load change alone is not.
    assert await _stream(stub, [_report(42, 60, 3000, compute_ms=80.0),
                                _report(43, 60, 3000, compute_ms=200.0)]) == 2
    pushes.clear()
    hub.publish(_per_backend(service))
    assert pushes == [{"be-042/summarize-small"}]
    assert hub.backlog == 1  # be-043, next


async def test_a_watch_gets_the_flip_while_the_backlog_is_still_building(
        served: tuple[PlacementService, placement_pb2_grpc.PlacementStub]) -> None:
    service, stub = served
    hub = service.hub
    hub.coalesce_s = 0.01
    hub.max_build_rows = _per_backend(service)  # one backend per publish: a long backlog
    for r in ([_report(i, 0, 0) for i in range(FLEET)],
              [_report(i, 20, 1000) for i in range(FLEET)]):
        await _stream(stub, r)
    await eventually(lambda: hub.backlog == 0 and not service.fleet.dirty, 10.0, "settled")
    call = stub.WatchRoutes(placement_pb2.WatchRoutesRequest(edge_id="e",
                                                             edge_region="r-east"))
    it = call.__aiter__()
    await it.__anext__()  # the snapshot
    batch = [_report(i, 40, 2000, ready=i != 99, compute_ms=80.0) for i in range(FLEET)]
    batch[0].more.extend(batch[1:])
    await _stream(stub, [batch[0]])
    update = await it.__anext__()
    rows = {c.deployment_id: c for d in update.deltas for c in d.upserts}
    assert rows["be-099/summarize-small"].dropped_reason == NOT_READY
    assert len(rows) == 1  # not behind 119 other backends' rows
    call.cancel()


def test_watchers_behind_by_the_same_pushes_share_one_merged_payload(
        tmp_path: pathlib.Path) -> None:
    service = _service(tmp_path)
    fleet, hub = service.fleet, service.hub
    hub.publish()
    a, b, c = (hub.subscribe(e, "r-east") for e in ("a", "b", "c"))
    for n in range(1, 12):  # more pushes than a watcher keeps apart: merged as they come
        fleet.ingest("be-001", _snap(1, 20 * n, 1000 * n, compute_ms=40.0 * 2 ** n),
                     now=float(n))
        hub.publish()
        if n == 5:
            c.take_push()  # c reads once: behind by other pushes than a and b
    pa, pb, pc = a.take_push(), b.take_push(), c.take_push()
    assert pa is not None and pa is pb and pc is not None and pc is not pa
    assert pa.payload("r-east", "p") is pb.payload("r-east", "p")  # serialised once
    rows = [r for d in pa.deltas("r-east") for r in d.upserts]
    (now,) = [r for r in hub.tables[("summarize", "r-east")].candidates
              if r.deployment_id == "be-001/summarize-small"]
    assert [r for r in rows if r.deployment_id == "be-001/summarize-small"] == [now]  # newest


async def test_a_new_watch_gets_a_snapshot_at_once_and_the_backlog_as_deltas(
        served: tuple[PlacementService, placement_pb2_grpc.PlacementStub]) -> None:
    service, stub = served
    fleet, hub = service.fleet, service.hub
    for n in (0, 1):
        for i in range(FLEET):
            fleet.ingest(f"be-{i:03d}", _snap(i, 20 * n, 1000 * n), now=float(n))
    hub.publish()
    hub.max_build_rows = 5 * _per_backend(service)
    for i in range(FLEET):  # every backend twice as slow; nothing published yet
        fleet.ingest(f"be-{i:03d}", _snap(i, 40, 2000, compute_ms=80.0), now=2.0)
    version = hub.version
    call = stub.WatchRoutes(placement_pb2.WatchRoutesRequest(edge_id="e",
                                                             edge_region="r-east"))
    it = call.__aiter__()
    snap = await it.__anext__()
    assert snap.version == version  # the tables as last published: no rebuild inline
    hub.coalesce_s = 0.01
    hub.changed()  # as StreamTelemetry does for its reports
    view = {c.deployment_id: c for t in snap.tables if t.model == "summarize"
            for c in t.candidates}
    slow = {d for d, c in view.items() if d.startswith("be-") and c.compute_ms > 60}
    assert not slow
    while len(slow) < FLEET:  # what changed arrives as deltas, in bounded pieces
        update = await asyncio.wait_for(it.__anext__(), 10)
        for d in update.deltas:
            if d.model == "summarize":
                view.update({c.deployment_id: c for c in d.upserts})
        slow = {d for d, c in view.items() if d.startswith("be-") and c.compute_ms > 60}
    assert hub.backlog == 0
    assert view == {c.deployment_id: c for c in hub.tables[("summarize", "r-east")].candidates}
    call.cancel()


def _view(snapshot: bytes, *pushes: bytes) -> dict[str, placement_pb2.Candidate]:
    """What an edge holds of r-east's summarize table after a snapshot and deltas."""
    view = {c.deployment_id: c for t in placement_pb2.RouteUpdate.FromString(snapshot).tables
            if t.model == "summarize" for c in t.candidates}
    for raw in (snapshot, *pushes):  # a snapshot may carry deltas of its own
        for d in placement_pb2.RouteUpdate.FromString(raw).deltas:
            if d.model == "summarize":
                view.update({c.deployment_id: c for c in d.upserts})
                for dep in d.removed_deployments:
                    view.pop(dep, None)
    return view


async def test_edges_connecting_later_share_the_kept_snapshot_and_get_what_changed_since(
        tmp_path: pathlib.Path) -> None:
    service = _service(tmp_path)
    fleet, hub = service.fleet, service.hub
    hub.publish()
    a = hub.subscribe("a", "r-east")
    first = hub.snapshot_payload("r-east", "p", a)
    for n, i in enumerate((1, 2, 3), start=1):  # three publishes after it
        fleet.ingest(f"be-{i:03d}", _snap(i, 20, 1000), now=float(n))
        hub.publish()
    b = hub.subscribe("b", "r-east")
    payload = hub.snapshot_payload("r-east", "p", b)
    # The kept bytes, not sorted nor serialised again, with the pushes since appended as the
    # same message's deltas (an edge applies it whole: test_placement_rewatch.py).
    assert payload.startswith(first) and b.take_push() is None
    table = {c.deployment_id: c for c in hub.tables[("summarize", "r-east")].candidates}
    assert _view(payload) == table
    assert _view(first) != table  # the pushes carried what changed
    # Past what is worth replaying, a new watch gets a new snapshot.
    hub._replay_rows = lambda region: 1  # type: ignore[method-assign]
    fleet.ingest("be-004", _snap(4, 20, 1000), now=4.0)
    hub.publish()
    c = hub.subscribe("c", "r-east")
    fresh = hub.snapshot_payload("r-east", "p", c)
    assert fresh is not first and c.take_push() is None
    table = {c.deployment_id: c for c in hub.tables[("summarize", "r-east")].candidates}
    assert _view(fresh) == table


async def test_a_flip_is_published_on_its_own_while_the_backlog_waits_for_its_turn(
        served: tuple[PlacementService, placement_pb2_grpc.PlacementStub]) -> None:
    """The next regular publish is an hour away (as a paced backlog piece or the coalescing
    would make it wait): the flip goes out anyway, within ``urgent_s``, and alone."""
    service, stub = served
    hub = service.hub
    for r in ([_report(i, 0, 0) for i in range(FLEET)],
              [_report(i, 20, 1000) for i in range(FLEET)]):
        assert await _stream(stub, r) == FLEET
    hub.publish()
    pushes: list[set[str]] = []
    hub.on_published = lambda p: pushes.append(_rows(p.rows))
    hub.urgent_s = 0.005
    batch = [_report(i, 40, 2000, ready=i != 42, compute_ms=80.0) for i in range(FLEET)]
    batch[0].more.extend(batch[1:])
    assert await _stream(stub, [batch[0]]) == FLEET
    await eventually(lambda: bool(pushes), 5.0, "the flip published")
    assert pushes == [{"be-042/summarize-small"}]
    (row,) = [c for c in hub.tables[("summarize", "r-east")].candidates
              if c.deployment_id == "be-042/summarize-small"]
    assert row.dropped_reason == NOT_READY
    assert hub.backlog == FLEET - 1  # the load change waits for the scheduled publish
