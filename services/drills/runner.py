"""One drill: steady load → before → inject the fault → during → restore → after → report.

The mesh is either passed in (a :class:`services.up.Mesh` already started, e.g. by a test
fixture) or started here from the config and stopped at the end. After the drill the mesh
is brought back to fully healthy (placement and every edge agree nothing is ejected,
drained or missing), so drills can run back to back on one mesh.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import cast

from services.config import MeshConfig
from services.drills.load import Call, Load, LoadSpec
from services.drills.mesh import DrillError, MeshHandle
from services.drills.report import (
    DrillReport,
    PhaseStats,
    client_notes,
    describe_late,
    late_calls,
    learned_check,
    load_checks,
    slow_threshold,
    split_phases,
    time_to_reroute,
)
from services.drills.scenarios import SCENARIOS, Fault, Scenario
from services.up import Mesh

WARMUP_S = 1.0


def stderr_progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_drill(cfg: MeshConfig, config_path: str, scenario: str | Scenario,
              duration_s: float = 30.0, rate: float = 40.0, *, mesh: Mesh | None = None,
              deadline_s: float = 2.0, slo_ms: float | None = None,
              progress: Callable[[str], None] | None = stderr_progress,
              settle_timeout_s: float = 60.0, streak: int = 10,
              undo_interrupted: bool = True) -> DrillReport:
    """Run one drill scenario under load and return what it measured.

    ``duration_s`` is split evenly over the before, during and after phases (the after phase
    also waits at least a second past the end of the restore). ``slo_ms`` overrides the
    scenario's ``x-slo-ms`` header (None: the scenario's default; most send none, so the
    call's deadline is its SLO). ``undo_interrupted``: a drill interrupted with its fault in
    place restores it (an attached mesh); False for a mesh stopped right after (a private one).
    """
    say = progress or (lambda _m: None)
    sc = SCENARIOS[scenario]() if isinstance(scenario, str) else scenario
    own = mesh is None
    if mesh is None:
        mesh = Mesh(cfg, config_path)
        mesh.start(progress=progress is not None)
    try:
        return _run(MeshHandle(mesh), sc, duration_s, rate, deadline_s,
                    sc.slo_ms if slo_ms is None else slo_ms, say, settle_timeout_s, streak,
                    undo_interrupted=undo_interrupted and not own)
    finally:
        if own:
            mesh.stop()


def _run(h: MeshHandle, sc: Scenario, duration_s: float, rate: float, deadline_s: float,
         slo_ms: float | None, say: Callable[[str], None], settle_timeout_s: float,
         streak: int, *, undo_interrupted: bool = True) -> DrillReport:
    cfg = h.cfg
    if not cfg.edges:
        raise DrillError("the mesh has no edges to send load to")
    problems = h.settle(settle_timeout_s, lambda p: say(f"waiting for a healthy mesh: {p}"))
    if problems:
        raise DrillError(f"mesh not healthy before the drill: {problems}")
    phase_s = duration_s / 3
    edges = [f"{e.host}:{e.port}" for e in cfg.edges]
    model = next(m for m in cfg.models if not m.decoupled)
    spec = LoadSpec(edges, model=model.name, input_dim=model.input_dim, rate=rate,
                    deadline_s=deadline_s, slo_ms=slo_ms,
                    max_calls=int(rate * (duration_s + WARMUP_S + 60)),
                    client_failover=sc.client_failover)
    say(f"drill {sc.name}: {sc.summary}")
    say(f"load: {rate:g} calls/s of {model.name!r} to {cfg.edges[0].id}, deadline "
        f"{deadline_s:g} s" + (f", x-slo-ms {slo_ms:g}" if slo_ms else "")
        + f"; phases of {phase_s:.1f} s")
    load = Load(spec).start()
    ticker = _Ticker(load, say)
    ticker.start()
    fault: Fault | None = None
    busiest, restored = "", False
    try:
        time.sleep(WARMUP_S)
        t_before = load.now()
        ticker.phase = "before"
        time.sleep(phase_s)
        # What serves the load *now*: the second half of the before phase.
        recent = [c for c in load.snapshot() if c.sent >= t_before + phase_s / 2]
        t_fault = load.now()
        ticker.phase = "during"
        busiest = _busiest(recent or load.snapshot())  # from here on the fault may be in place
        fault = sc.inject(h, busiest, say)
        # A slow injection (a process restart) still leaves a full phase under the fault.
        end_during = max(t_fault + phase_s, load.now() + phase_s if
                         load.now() - t_fault > 0.5 else 0.0)
        time.sleep(max(0.0, end_during - load.now() - 0.3))
        sc.during(h, fault, say)
        time.sleep(max(0.0, end_during - load.now()))
        t_restore = load.now()
        ticker.phase = "after"
        sc.restore(h, fault, say)
        restored = True
        time.sleep(max(t_restore + phase_s, load.now() + 1.0) - load.now())
        t_end = load.now()
    finally:
        calls = load.stop()
        skipped, issued = list(load.skipped), load.issued
        ticker.stop()
        if not busiest:
            say("drill aborted before the fault; mesh untouched")
        elif not restored and undo_interrupted:  # interrupted (Ctrl-C, SIGTERM, an error)
            _restore_interrupted(h, sc, fault or sc.planned(h, busiest), say)
    report = _report(sc, fault, calls, skipped, issued, rate, deadline_s, slo_ms,
                     (t_before, t_fault, t_restore, t_end), streak)
    say(report.table())
    _settle_after(h, report, settle_timeout_s, say)
    return report


def _restore_interrupted(h: MeshHandle, sc: Scenario, fault: Fault,
                         say: Callable[[str], None]) -> None:
    """Undo the fault of a drill that did not reach its restore: an attached mesh is the
    operator's, and e.g. a backend the drill killed stays held (never restarted by ``up``)
    until it is restored. A failure here is said, and the interruption goes on unwinding."""
    say(f"drill interrupted with its fault in place ({fault.target}): restoring it")
    try:
        sc.restore(h, fault, say)
    except Exception as exc:  # the interruption, not this, is what the caller must see
        say(f"WARNING: could not restore {fault.target}: {exc}; a fresh `switchyard up` "
            "clears every drill's hold")


def _busiest(calls: list[Call]) -> str:
    counts = Counter(c.backend for c in calls if c.ok and c.backend)
    if not counts:
        raise DrillError("no call succeeded in the before phase; is the mesh serving?")
    return counts.most_common(1)[0][0]


def _report(sc: Scenario, fault: object, calls: list[Call], skipped: list[float],
            issued: int, rate: float, deadline_s: float, slo_ms: float | None,
            marks: tuple[float, float, float, float],
            streak: int) -> DrillReport:
    assert isinstance(fault, Fault)
    t_before, t_fault, t_restore, t_end = marks
    bounds = {"before": (t_before, t_fault), "during": (t_fault, t_restore),
              "after": (t_restore, t_end)}
    by_phase = split_phases(calls, marks)
    phases = [PhaseStats.of(p, hi - lo, by_phase[p], sum(1 for t in skipped if lo <= t < hi),
                            rate) for p, (lo, hi) in bounds.items()]
    slow_ms = slow_threshold(by_phase["before"])
    reroute = time_to_reroute(calls, t_fault, t_restore, fault.backends, slow_ms, streak)
    checks = dict(fault.checks)
    checks.update(load_checks(phases, issued, len(calls), streak))
    fault.notes += client_notes(phases)
    learned = fault.state.get("edges_learned_s")
    if isinstance(learned, float):  # a drain: calls sent once every edge knew it stay away
        checks.update(learned_check(calls, t_fault + learned, t_restore, fault.backends))
        fault.notes += [describe_late(c, t_fault + learned) for c in
                        late_calls(calls, t_fault + learned, t_restore, fault.backends)[:3]]
    return DrillReport(sc.name, fault.target, sorted(fault.backends), rate, deadline_s, slo_ms,
                       round(t_fault, 3), round(t_restore, 3), phases, reroute, fault.notes,
                       checks, expect_noticed=sc.expect_noticed,
                       outage_s=cast("float | None", fault.state.get("outage_s")))


def _settle_after(h: MeshHandle, report: DrillReport, timeout_s: float,
                  say: Callable[[str], None]) -> None:
    t0 = time.monotonic()
    problems = h.settle(timeout_s, lambda p: say(f"settling: {p}"))
    if problems and any("blocked" in p for p in problems):
        # Ejections grow with each repeat; fresh edge processes (loading their tables from
        # disk) are the quickest way back to a clean slate for the next drill.
        say(f"still ejected after {timeout_s:.0f} s: {problems}; restarting the edges")
        h.restart_edges()
        problems = h.settle(timeout_s)
    if problems:
        report.notes.append(f"mesh did not settle after the drill: {problems}")
        say(f"WARNING: mesh did not settle: {problems}")
    else:
        say(f"mesh healthy again after {time.monotonic() - t0:.1f} s")


class _Ticker(threading.Thread):
    """Progress once a second: phase, calls sent, failures, where the last calls went."""

    def __init__(self, load: Load, say: Callable[[str], None]) -> None:
        super().__init__(name="drill-progress", daemon=True)
        self.load, self.say, self.phase = load, say, "warmup"
        self._stop_evt = threading.Event()

    def stop(self) -> None:
        self._stop_evt.set()
        self.join()

    def run(self) -> None:
        while not self._stop_evt.wait(1.0):
            calls = self.load.snapshot()
            recent = [c for c in calls if c.done > self.load.now() - 1.0]
            failed = sum(1 for c in calls if not c.ok)
            where = Counter((c.backend if c.ok else c.status) for c in recent).most_common(2)
            lat = sorted(c.latency_ms for c in recent if c.ok)
            p50 = f"{lat[len(lat) // 2]:.0f} ms" if lat else "-"
            self.say(f"  [{self.load.now():5.1f} s] {self.phase:<6} sent {len(calls):5d}  "
                     f"failed {failed:3d}  last 1 s: p50 {p50}, served by "
                     + ", ".join(f"{k} ({v})" for k, v in where))
