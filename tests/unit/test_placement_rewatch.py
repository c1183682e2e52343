"""An edge that watches again (its stream to placement broke, or it failed over between a
shard's replicas) must not route on older tables than it held: the first message of its new
watch is the whole region as published now, even when placement answers it with the
snapshot it kept for new watches (``RouteHub.snapshot_payload``) and what was published
since. Before, the kept snapshot was sent alone and what changed since followed as the next
message: an edge applied a snapshot older than its tables (a drained backend routable
again, issue: a drained backend served a call after every edge learned of the drain) and
routed on it until that next message came, after the edge had saved the table to disk.
"""

from __future__ import annotations

import pathlib

from placement.fleet import TelemetrySnapshot, VariantStats
from placement.model import Availability
from services.api.switchyard.v1 import placement_pb2
from services.edge.routes import RouteStore
from services.placement.main import build_service
from tests.mesh_harness import mesh_config

REGION = "r-east"
BACKEND = "east-fast"


def _ready(count: int, sent_ms: int) -> TelemetrySnapshot:
    return TelemetrySnapshot(True, True, (), {"summarize-small": VariantStats(
        count, count, 0, count * 1_000_000, count * 20_000_000)}, sent_ms=sent_ms)


def _routable(store: RouteStore) -> set[str]:
    return {c.backend_id for cs in store.candidates.values() for c in cs
            if not c.dropped_reason}


def test_a_new_watch_first_message_holds_a_drain_published_after_the_kept_snapshot(
        tmp_path: pathlib.Path) -> None:
    service = build_service(mesh_config(tmp_path), preregister=True)
    fleet, hub = service.fleet, service.hub
    hub.coalesce_s = hub.urgent_s = 3600.0  # no timer: the test publishes itself
    fleet.ingest(BACKEND, _ready(10, 1000), now=1.0)
    fleet.ingest(BACKEND, _ready(20, 2000), now=2.0)
    hub.publish()
    first = hub.subscribe("edge-a", REGION)
    store = RouteStore(REGION, None)
    store.apply(placement_pb2.RouteUpdate.FromString(
        hub.snapshot_payload(REGION, "p", first)))
    assert BACKEND in _routable(store)  # the kept snapshot: the backend routable

    fleet.set_availability("backend", BACKEND, Availability.DRAINED)
    hub.publish()
    push = first.take_push()
    assert push is not None
    store.apply(placement_pb2.RouteUpdate.FromString(push.payload(REGION, "p")))
    assert BACKEND not in _routable(store)  # the edge learned of the drain

    # The edge's stream breaks and it watches again: the one message it applies before the
    # next (its first) already holds the drain.
    again = hub.subscribe("edge-a", REGION)
    payload = hub.snapshot_payload(REGION, "p", again)
    update = placement_pb2.RouteUpdate.FromString(payload)
    assert update.snapshot
    store.apply(update)
    assert BACKEND not in _routable(store)
    # And it is the region as published now, row for row.
    table = {c.deployment_id: c for t in hub.published(REGION) for c in t.candidates}
    assert {c.deployment_id: c for t in store.tables.values() for c in t.candidates} == table
    assert store.version == hub.version
    # The kept snapshot itself stays shared: a third watch gets the same bytes.
    assert hub.snapshot_payload(REGION, "p", hub.subscribe("edge-b", REGION)) == payload
