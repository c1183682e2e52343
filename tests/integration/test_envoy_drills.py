"""Failover drills through Envoy edges (issue 12): real Triton, real Envoy configured only by
placement over ADS, steady tritonclient load with a 2 s deadline.

One mesh for the module (``examples/mesh.toml`` on free ports, ``[edge] engine = "envoy"``,
as ``switchyard drill --engine envoy`` starts it); each drill restores what it broke and waits
until placement and every Envoy (read through Envoy's admin API) are healthy again. The bar is
the Python edge's: no call lost, in every drill ``switchyard drill`` has.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.drills import SCENARIOS
from services.drills.report import DrillReport
from tests.drill_harness import (
    DrillMesh,
    assert_edge_restart_served_from_disk,
    assert_kill_streams_loses_no_stream,
    assert_rerouted_without_loss,
    drill,
    drill_mesh,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DrillMesh]:
    with drill_mesh(tmp_path_factory.mktemp("envoy-drill-mesh"),
                    overrides={"edge": {"engine": "envoy"}}) as dm:
        assert dm.cfg.edge.engine == "envoy"
        yield dm


def _drill(mesh: DrillMesh, scenario: str) -> DrillReport:
    return drill(mesh, scenario, settle_timeout_s=30.0)


FAULTS = ["kill-backend", "region-outage", "cloud-outage", "hung-backend", "slow-backend",
          "drain-backend"]


@pytest.mark.parametrize("scenario", FAULTS)
def test_a_faulted_backend_under_load_loses_no_call_through_envoy(mesh: DrillMesh,
                                                                   scenario: str) -> None:
    assert_rerouted_without_loss(_drill(mesh, scenario), scenario)


def test_placement_down_envoy_keeps_routing_on_its_last_config(mesh: DrillMesh) -> None:
    r = _drill(mesh, "placement-outage")
    assert r.passed, r.table()
    # Read from each Envoy's admin API while placement was down.
    for e in mesh.cfg.edges:
        assert r.checks[f"{e.id} noticed placement is gone"], r.table()
        assert r.checks[f"{e.id} kept its tables without placement"], r.table()
    assert not SCENARIOS["placement-outage"].expect_noticed


def test_an_envoy_edge_restarted_while_placement_is_down_serves_from_its_snapshot(
        mesh: DrillMesh) -> None:
    # "From disk" is read from the restarted Envoy's admin API: static clusters, no ADS.
    assert_edge_restart_served_from_disk(_drill(mesh, "edge-restart"))


def test_kill_streams_through_an_envoy_edge_loses_no_stream(mesh: DrillMesh) -> None:
    """Streams take the slow path (the co-located Python edge behind Envoy)."""
    assert_kill_streams_loses_no_stream(mesh, settle_timeout_s=30.0)
