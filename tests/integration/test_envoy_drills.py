"""Failover drills through Envoy edges (issue 12): real Triton, real Envoy configured only by
placement over ADS, steady tritonclient load with a 2 s deadline.

One mesh for the module (``examples/mesh.toml`` on free ports, ``[edge] engine = "envoy"``,
as ``switchyard drill --engine envoy`` starts it); each drill restores what it broke and waits
until placement and every Envoy (read through Envoy's admin API) are healthy again. The bar is
the Python edge's: no call lost, in every drill ``switchyard drill`` has.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from services.config import MeshConfig, load_config
from services.drills import SCENARIOS, run_drill
from services.drills.report import DrillReport
from services.drills.sandbox import sandbox_config
from services.up import Mesh

pytestmark = pytest.mark.integration

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "mesh.toml"
DURATION_S = 6.0        # 2 s before, 2 s during, 2 s after
RATE = 30.0             # calls per second
DEADLINE_S = 2.0
REROUTE_BOUND_S = 2.0
# An Envoy edge restart is a process start (Python, the slow path, Envoy from its snapshot);
# the client's calls go to the other edge meanwhile.
EDGE_RESTART_BOUND_S = 6.0


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MeshConfig, str, Mesh]]:
    path = str(sandbox_config(EXAMPLE, tmp_path_factory.mktemp("envoy-drill-mesh"),
                              overrides={"edge": {"engine": "envoy"}}))
    cfg = load_config(path)
    assert cfg.edge.engine == "envoy"
    m = Mesh(cfg, path)
    m.start(progress=False)
    try:
        yield cfg, path, m
    finally:
        m.stop()


def _drill(mesh: tuple[MeshConfig, str, Mesh], scenario: str) -> DrillReport:
    cfg, path, m = mesh
    report = run_drill(cfg, path, scenario, DURATION_S, RATE, mesh=m, deadline_s=DEADLINE_S,
                       progress=print, settle_timeout_s=30.0)
    print(report.to_json())
    return report


FAULTS = ["kill-backend", "region-outage", "cloud-outage", "hung-backend", "slow-backend",
          "drain-backend"]


@pytest.mark.parametrize("scenario", FAULTS)
def test_a_faulted_backend_under_load_loses_no_call_through_envoy(mesh, scenario: str) -> None:
    r = _drill(mesh, scenario)
    assert r.sent >= DURATION_S * RATE * 0.8, f"load did not run: {r.sent} calls"
    assert r.passed, r.table()  # no failed call; its checks (process died, placement saw it)
    # Calls were on the faulted backend when it broke (a drain need not be noticed).
    assert r.reroute.noticed or not SCENARIOS[scenario].expect_noticed, r.table()
    if r.reroute.seconds is not None:
        assert r.reroute.seconds < REROUTE_BOUND_S, r.table()
    during = next(p for p in r.phases if p.phase == "during")
    late = {d: n for d, n in during.served_by.items()
            if d.split("/", 1)[0] in r.faulted_backends}
    assert sum(late.values()) <= r.reroute.noticed, r.table()


def test_placement_down_envoy_keeps_routing_on_its_last_config(mesh) -> None:
    r = _drill(mesh, "placement-outage")
    assert r.passed, r.table()
    # Read from each Envoy's admin API while placement was down.
    for e in mesh[0].edges:
        assert r.checks[f"{e.id} noticed placement is gone"], r.table()
        assert r.checks[f"{e.id} kept its tables without placement"], r.table()
    assert not SCENARIOS["placement-outage"].expect_noticed


def test_an_envoy_edge_restarted_while_placement_is_down_serves_from_its_snapshot(
        mesh) -> None:
    r = _drill(mesh, "edge-restart")
    assert r.passed, r.table()
    # Read from the restarted Envoy's admin API: static clusters, no ADS.
    assert r.checks["restarted edge loaded its routes from disk"], r.table()
    assert r.reroute.seconds is not None and r.reroute.seconds < EDGE_RESTART_BOUND_S, r.table()


def test_kill_streams_through_an_envoy_edge_loses_no_stream(mesh) -> None:
    """Streams take the slow path (the co-located Python edge behind Envoy)."""
    from services.drills.streams import drill_mesh

    r = drill_mesh(mesh[2], streams=8, max_tokens=200, progress=print, settle_timeout_s=30.0)
    print(r.to_json())
    assert r.passed and r.on_killed >= 1, r.table()
