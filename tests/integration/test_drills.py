"""Every failover drill, shortened, on one real mesh (Triton, relay, placement, agent, edges).

The mesh is started once for the module (``tests/drill_harness.py``: ``examples/mesh.toml`` on
free ports with a private run directory); each drill restores what it broke (fresh
tritonserver, placement or edge processes; undrain; control knobs back) and waits for a fully
healthy mesh, so the drills run back to back. Every call carries a 2 s deadline, so the
issue's bar applies to all of them: no failed call, and time to reroute under the stated
bound.
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
    with drill_mesh(tmp_path_factory.mktemp("drill-mesh")) as dm:
        yield dm


def _drill(mesh: DrillMesh, scenario: str) -> DrillReport:
    return drill(mesh, scenario, settle_timeout_s=20.0)


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s != "edge-restart"])
def test_drill_loses_no_call_and_reroutes_fast(mesh: DrillMesh, scenario: str) -> None:
    assert_rerouted_without_loss(_drill(mesh, scenario), scenario)


def test_edge_restart_serves_from_disk_while_placement_is_down(mesh: DrillMesh) -> None:
    assert_edge_restart_served_from_disk(_drill(mesh, "edge-restart"))


def test_kill_streams_loses_no_stream(mesh: DrillMesh) -> None:
    """switchyard drill kill-streams on the same mesh (services/drills/streams.py)."""
    assert_kill_streams_loses_no_stream(mesh, settle_timeout_s=20.0)
