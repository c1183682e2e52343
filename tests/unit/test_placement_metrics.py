"""Placement's metrics for the dashboard: push latency counts from the first change of a
coalesced burst, and every pushed row's per-call cost is exported by deployment."""

from __future__ import annotations

import pathlib

from services.placement.hub import RouteHub
from services.placement.main import build_service
from services.placement.metrics import PlacementMetrics
from tests.mesh_harness import mesh_config


def _sample(m: PlacementMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels or None)


async def test_push_latency_runs_from_the_first_change_to_the_push(tmp_path: pathlib.Path
                                                                   ) -> None:
    svc = build_service(mesh_config(tmp_path), preregister=True)
    now = [100.0]
    hub = RouteHub(svc.fleet, svc.builder, list(svc.hub.regions), coalesce_s=60,
                   clock=lambda: now[0])
    metrics = PlacementMetrics()
    hub.on_published = metrics.published
    hub.publish()  # first build: nothing was waiting, so no wait is counted
    assert _sample(metrics, "switchyard_placement_push_latency_seconds_count") == 1
    assert _sample(metrics, "switchyard_placement_push_latency_seconds_sum") == 0

    backend = sorted(svc.fleet.backends)[0]
    svc.fleet.deregister(backend)
    hub.changed()              # the first change of a burst, at t = 100
    now[0] = 100.02
    hub.changed()              # coalesced into the same push
    now[0] = 100.07
    hub.publish()              # the coalesced rebuild fires
    assert _sample(metrics, "switchyard_placement_push_latency_seconds_count") == 2
    latency = _sample(metrics, "switchyard_placement_push_latency_seconds_sum")
    assert latency is not None and abs(latency - 0.07) < 1e-9
    hub.publish()              # nothing changed since: no push, nothing observed
    assert _sample(metrics, "switchyard_placement_push_latency_seconds_count") == 2


def test_pushed_rows_export_their_cost_per_call(tmp_path: pathlib.Path) -> None:
    svc = build_service(mesh_config(tmp_path), preregister=True)  # wires the hub's hooks
    metrics = svc.metrics
    svc.hub.publish()
    assert _sample(metrics, "switchyard_placement_push_latency_seconds_count") == 1
    rows = [(model, c) for (model, _), t in svc.hub.tables.items() for c in t.candidates]
    assert rows
    for model, c in rows:
        got = _sample(metrics, "switchyard_placement_deployment_cost_usd",
                      model=model, deployment=c.deployment_id)
        assert got == c.cost_usd, c.deployment_id
