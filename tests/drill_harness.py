"""What the drill modules share (``tests/integration/test_drills.py`` through Python edges,
``test_envoy_drills.py`` through Envoy edges): one mesh from ``examples/mesh.toml`` on free
ports with a private run directory (``services.drills.sandbox``), started as processes the
way ``switchyard up`` does; a shortened drill on it; and the bar every drill is held to.

Each drill restores what it broke and waits for a healthy mesh, so drills run back to back on
one mesh per module. Every call carries a 2 s deadline, so the issue's bar applies to all of
them: no failed call, and time to reroute under the stated bound.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator
from typing import Any, NamedTuple

from services.config import MeshConfig, load_config
from services.drills import SCENARIOS, run_drill
from services.drills.report import DrillReport
from services.drills.sandbox import sandbox_config
from services.drills.streams import drill_mesh as stream_drill
from services.up import Mesh

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "mesh.toml"
DURATION_S = 6.0        # 2 s before, 2 s during, 2 s after
RATE = 30.0             # calls per second
DEADLINE_S = 2.0        # >= 1 s: every call must succeed
REROUTE_BOUND_S = 2.0   # the target is < 1 s for detection; 2 s end to end
# An edge restart is a process start (Python, gRPC, the table from disk; for an Envoy edge
# also the slow path and Envoy from its snapshot) whose length is the machine's, not the
# mesh's; the client's calls go to the other edge meanwhile. What the mesh owes: the client
# is back on the restarted edge within this much of it serving again (the load's reconnect
# backoff is at most 0.5 s).
EDGE_RESTART_RETURN_S = 1.5


class DrillMesh(NamedTuple):
    cfg: MeshConfig
    path: str
    mesh: Mesh


@contextlib.contextmanager
def drill_mesh(tmp: pathlib.Path, overrides: dict[str, Any] | None = None,
               source: pathlib.Path = EXAMPLE, backends: list[str] | None = None
               ) -> Iterator[DrillMesh]:
    """The example mesh (``source``, only ``backends`` if given, with ``overrides`` of its
    config) running for the block."""
    path = str(sandbox_config(source, tmp, backends=backends, overrides=overrides))
    cfg = load_config(path)
    m = Mesh(cfg, path)
    m.start(progress=False)
    try:
        yield DrillMesh(cfg, path, m)
    finally:
        m.stop()


def drill(dm: DrillMesh, scenario: str, settle_timeout_s: float) -> DrillReport:
    """One shortened drill on ``dm`` under the module's load; its report is printed."""
    report = run_drill(dm.cfg, dm.path, scenario, DURATION_S, RATE, mesh=dm.mesh,
                       deadline_s=DEADLINE_S, progress=print,
                       settle_timeout_s=settle_timeout_s)
    print(report.to_json())
    return report


def assert_rerouted_without_loss(r: DrillReport, scenario: str) -> None:
    """The bar of a drill that breaks backends or placement: no call the load issued failed,
    the fault was noticed where the scenario must be, rerouted within the bound, and the
    faulted backends served nothing counted as OK once rerouted. That the load measured
    every phase is one of the report's checks; how far a busy host's load client fell short
    of its rate is the client's, reported in the notes (``services.drills.report``)."""
    # No failed call, some checks and all held (the load measured every phase and every
    # call it issued has its outcome), the fault observed, the load settled.
    assert r.passed, r.table()
    # A drain or a placement outage may go unnoticed by every call (its checks observe it).
    assert r.reroute.noticed or not SCENARIOS[scenario].expect_noticed, r.table()
    if r.reroute.seconds is not None:
        assert r.reroute.seconds < REROUTE_BOUND_S, r.table()
    if not SCENARIOS[scenario].expect_noticed:
        # A drain lets calls routed before the edges learn of it finish there, however long
        # that takes on a busy host: its own check (services/drills/runner.py) holds that none
        # sent after every edge learned of it reached the backend. A placement outage faults
        # no backend.
        assert not r.faulted_backends or any(
            "after every edge learned of the fault" in k for k in r.checks), r.table()
        return
    during = next(p for p in r.phases if p.phase == "during")
    late = {d: n for d, n in during.served_by.items()
            if d.split("/", 1)[0] in r.faulted_backends}
    assert sum(late.values()) <= r.reroute.noticed, r.table()


def assert_edge_restart_served_from_disk(r: DrillReport) -> None:
    """The restarted edge loaded its routes from disk (placement is down) and the client was
    back on it within ``EDGE_RESTART_RETURN_S`` of it serving: judged against the outage the
    drill measured, not a wall-clock bound a loaded machine's process start exceeds."""
    assert r.passed, r.table()
    assert r.checks.get("restarted edge loaded its routes from disk"), r.table()
    assert r.outage_s is not None and r.reroute.seconds is not None, r.table()
    assert r.reroute.seconds < r.outage_s + EDGE_RESTART_RETURN_S, (r.outage_s, r.table())


def assert_kill_streams_loses_no_stream(dm: DrillMesh, settle_timeout_s: float) -> None:
    """``switchyard drill kill-streams`` on ``dm`` (services/drills/streams.py): 8 streams,
    the backend of most of them killed mid-generation; none lost, at least one was on it."""
    r = stream_drill(dm.mesh, streams=8, max_tokens=200, progress=print,
                     settle_timeout_s=settle_timeout_s)
    print(r.to_json())
    assert r.passed and r.on_killed >= 1, r.table()
