"""The faults a drill can inject, one small class each: inject, then restore.

Every scenario breaks what is serving the load right now: ``busiest`` is the backend that
answered most calls in the before phase, so the drill always hits live traffic. Where the
mesh can show the fault, the scenario records checks that read it (the process died,
placement or the edges see the backend down or drained); a fault no call is expected to
notice (``expect_noticed = False``: a drain, a placement outage) is observed only by such
checks. The report fails a drill whose checks are empty or false, or whose fault nothing
observed.
"""

from __future__ import annotations

import functools
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from services.api.switchyard.v1 import fleet_pb2, placement_pb2
from services.drills.edges import EdgeUnreachable
from services.drills.mesh import DrillError, MeshHandle

Progress = Callable[[str], None]


@dataclass
class Fault:
    """What a scenario broke: a label, the backends it faulted, and what restore needs."""

    target: str
    backends: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    state: dict[str, object] = field(default_factory=dict)


class Scenario:
    name: ClassVar[str]
    summary: ClassVar[str]
    client_failover: ClassVar[bool] = False  # the load may try another edge (edge-restart)
    slo_ms: ClassVar[float | None] = None    # x-slo-ms header the load sends
    expect_noticed: ClassVar[bool] = True    # some call must notice the fault

    def inject(self, h: MeshHandle, busiest: str, progress: Progress) -> Fault:
        raise NotImplementedError

    def during(self, h: MeshHandle, fault: Fault, progress: Progress) -> None:
        """Called once near the end of the during phase (checks while the fault holds)."""

    def restore(self, h: MeshHandle, fault: Fault, progress: Progress) -> None:
        raise NotImplementedError

    def planned(self, h: MeshHandle, busiest: str) -> Fault:
        """The fault ``inject`` puts in place on ``busiest``: what ``restore`` undoes when
        the drill is interrupted while injecting (each restore may run on a partial fault)."""
        return Fault(f"backend {busiest}", {busiest})


def _parallel(fns: list[Callable[[], None]]) -> None:
    errors: list[BaseException] = []

    def run(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _backend_status(h: MeshHandle) -> dict[str, placement_pb2.BackendStatus]:
    """What placement says of every backend (health, availability), by id."""
    return h.backend_status()


def _died(pid: int, timeout_s: float) -> bool:
    """Whether ``pid`` is gone or a zombie within ``timeout_s`` (polled)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except OSError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


class KillBackends(Scenario):
    """SIGKILL real tritonserver processes; restore starts fresh ones."""

    def pick(self, h: MeshHandle, busiest: str) -> tuple[str, list[str]]:
        raise NotImplementedError

    def planned(self, h: MeshHandle, busiest: str) -> Fault:
        target, ids = self.pick(h, busiest)
        return Fault(target, set(ids))

    def inject(self, h: MeshHandle, busiest: str, progress: Progress) -> Fault:
        target, ids = self.pick(h, busiest)
        pids = [h.kill_backend(b) for b in ids]
        killed = ", ".join(f"{b} (pid {p})" for b, p in zip(ids, pids, strict=True))
        progress(f"SIGKILL tritonserver {killed}")
        fault = Fault(target, set(ids))
        for b, pid in zip(ids, pids, strict=True):
            fault.checks[f"tritonserver of {b} died"] = _died(pid, timeout_s=2.0)
        return fault

    def during(self, h: MeshHandle, fault: Fault, progress: Progress) -> None:
        status = _backend_status(h)
        for b in sorted(fault.backends):
            fault.checks[f"placement sees {b} unhealthy"] = (
                b in status and not status[b].healthy)

    def restore(self, h: MeshHandle, fault: Fault, progress: Progress) -> None:
        progress(f"restarting {', '.join(sorted(fault.backends))} (fresh tritonserver)")
        _parallel([functools.partial(h.restart, h.backend_child(b))
                   for b in sorted(fault.backends)])


class KillBackend(KillBackends):
    name = "kill-backend"
    summary = "SIGKILL the tritonserver serving most traffic"

    def pick(self, h: MeshHandle, busiest: str) -> tuple[str, list[str]]:
        return f"backend {busiest}", [busiest]


class RegionOutage(KillBackends):
    name = "region-outage"
    summary = "SIGKILL every backend in the busiest backend's region"

    def pick(self, h: MeshHandle, busiest: str) -> tuple[str, list[str]]:
        region = h.backend(busiest).region
        return f"region {region}", h.backends_in(region=region)


class CloudOutage(KillBackends):
    name = "cloud-outage"
    summary = "SIGKILL every backend in the busiest backend's cloud"

    def pick(self, h: MeshHandle, busiest: str) -> tuple[str, list[str]]:
        cloud = h.cfg.region_cloud(h.backend(busiest).region)
        ids = h.backends_in(cloud=cloud)
        if len(ids) == len(h.cfg.backends):
            raise DrillError(f"every backend is in cloud {cloud!r}; nothing to fail over to")
        return f"cloud {cloud}", ids


LEARN_POLL_S = 0.025  # how often a drain drill reads the edges' tables after the drain
LEARN_TIMEOUT_S = 10.0  # past this the during-phase checks report the edges never learned it


def _edges_learned(h: MeshHandle, backends: set[str], timeout_s: float) -> float | None:
    """Seconds until every edge's tables mark ``backends`` unroutable; None if not within
    ``timeout_s`` (an edge not answering counts as not yet)."""
    t0 = time.monotonic()
    while True:
        try:
            views = [h.edge_view(e) for e in h.cfg.edges]
            done = all(b in v.known and b not in v.routable for v in views for b in backends)
        except EdgeUnreachable:
            done = False
        if done:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            return None
        time.sleep(LEARN_POLL_S)  # the poll interval of this read, not a wait of its own


class _KeepWatch(threading.Thread):
    """After every edge learned of a drain: keeps reading the edges until stopped and records
    each time one of them shows a drained backend routable again (a table flipping back)."""

    def __init__(self, h: MeshHandle, backends: set[str], t0: float) -> None:
        super().__init__(name="drill-drain-watch", daemon=True)
        self.h, self.backends, self.t0 = h, backends, t0
        self.relapses: list[str] = []
        self._stop_evt = threading.Event()

    def stop(self) -> list[str]:
        self._stop_evt.set()
        self.join()
        return self.relapses

    def run(self) -> None:
        routable: set[tuple[str, str]] = set()  # (edge, backend) shown routable last read
        while not self._stop_evt.wait(LEARN_POLL_S):
            for e in self.h.cfg.edges:
                try:
                    view = self.h.edge_view(e)
                except EdgeUnreachable:
                    continue
                for b in self.backends:
                    now = b in view.routable
                    if now and (e.id, b) not in routable:
                        self.relapses.append(
                            f"{e.id}'s tables showed {b} routable again "
                            f"{1000 * (time.monotonic() - self.t0):.0f} ms after the drain "
                            "request")
                    (routable.add if now else routable.discard)((e.id, b))


class DrainBackend(Scenario):
    name = "drain-backend"
    summary = "drain the busiest backend (SetAvailability DRAINED), then undo"
    expect_noticed = False  # a drain moves new calls away; none has to fail or slow down

    def inject(self, h: MeshHandle, busiest: str, progress: Progress) -> Fault:
        """Drains, then reads the edges until each marks it unroutable: the calls sent after
        that must not reach it (``edges_learned_s``, judged by the runner), those sent before
        may (a drain lets them finish), however long the drain takes to reach the edges."""
        t0 = time.monotonic()
        h.set_availability("backend", busiest, fleet_pb2.AVAILABILITY_DRAINED)
        progress(f"drained backend {busiest}")
        fault = Fault(f"backend {busiest}", {busiest})
        learned = _edges_learned(h, {busiest}, LEARN_TIMEOUT_S)
        if learned is not None:
            since_drain = time.monotonic() - t0
            fault.state["edges_learned_s"] = since_drain
            fault.notes.append(f"every edge's tables marked {busiest} unroutable "
                               f"{1000 * since_drain:.0f} ms after the drain request")
            watch = _KeepWatch(h, {busiest}, t0)
            watch.start()
            fault.state["keep_watch"] = watch
        return fault

    def during(self, h: MeshHandle, fault: Fault, progress: Progress) -> None:
        watch = fault.state.pop("keep_watch", None)
        if isinstance(watch, _KeepWatch):
            relapses = watch.stop()
            fault.notes += relapses
            fault.checks[f"every edge kept {', '.join(sorted(fault.backends))} unroutable "
                         "once it learned of the drain"] = not relapses
        status = _backend_status(h)
        for b in sorted(fault.backends):
            fault.checks[f"placement reports {b} drained"] = (
                b in status and status[b].availability == fleet_pb2.AVAILABILITY_DRAINED)
            for e in h.cfg.edges:
                view = h.edge_view(e)
                fault.checks[f"{e.id}'s tables mark {b} unroutable"] = (
                    b in view.known and b not in view.routable)

    def restore(self, h: MeshHandle, fault: Fault, progress: Progress) -> None:
        for b in fault.backends:
            h.set_availability("backend", b, fleet_pb2.AVAILABILITY_ACTIVE)
        progress(f"backend {', '.join(fault.backends)} active again")


class PlacementOutage(Scenario):
    name = "placement-outage"
    summary = "SIGKILL placement; edges must keep routing on their last table"
    expect_noticed = False  # the point: callers see nothing

    def planned(self, h: MeshHandle, busiest: str) -> Fault:
        return Fault("placement")

    def inject(self, h: MeshHandle, busiest: str, progress: Progress) -> Fault:
        for child in h.placement_children():  # with shards: every replica of every shard
            pid = h.pid(child)
            h.signal(child, signal.SIGKILL)
            progress(f"SIGKILL {child.name} (pid {pid})")
        return Fault("placement")

    def during(self, h: MeshHandle, fault: Fault, progress: Progress) -> None:
        for e in h.cfg.edges:
            view = h.edge_view(e)
            fault.checks[f"{e.id} noticed placement is gone"] = not view.placement_connected
            fault.checks[f"{e.id} kept its tables without placement"] = view.has_routes

    def restore(self, h: MeshHandle, fault: Fault, progress: Progress) -> None:
        progress("restarting placement")
        for child in h.placement_children():
            h.restart(child)


class EdgeRestart(Scenario):
    name = "edge-restart"
    summary = ("SIGKILL placement, then restart the loaded edge: it must serve from the table "
               "it persisted on disk")
    client_failover = True

    def planned(self, h: MeshHandle, busiest: str) -> Fault:
        return Fault(f"edge {h.cfg.edges[0].id} (placement down)")

    def inject(self, h: MeshHandle, busiest: str, progress: Progress) -> Fault:
        edge = h.cfg.edges[0]
        for child in h.placement_children():
            h.signal(child, signal.SIGKILL)
        progress("SIGKILL placement")
        child = h.edge_child(edge)
        t0 = time.monotonic()
        h.signal(child, signal.SIGTERM)
        assert child.proc is not None
        child.proc.wait(15)
        progress(f"edge {edge.id} stopped (SIGTERM); starting a fresh one")
        h.restart(child, timeout_s=30)
        view = h.edge_view(edge)
        outage_s = time.monotonic() - t0
        progress(f"edge {edge.id} back in {outage_s:.1f} s, routes from "
                 f"{view.routes_source!r}, routes held: {view.has_routes}, placement "
                 f"connected: {view.placement_connected}")
        fault = Fault(f"edge {edge.id} (placement down)",
                      state={"outage_s": round(outage_s, 3)})
        fault.checks["restarted edge loaded its routes from disk"] = (
            view.routes_source == "disk" and view.has_routes)
        return fault

    def restore(self, h: MeshHandle, fault: Fault, progress: Progress) -> None:
        progress("restarting placement")
        for child in h.placement_children():
            h.restart(child)


class SlowBackend(Scenario):
    name = "slow-backend"
    summary = "gray failure: the busiest backend answers late (slow_factor)"
    slo_ms = 100.0

    def __init__(self, slow_factor: float = 200.0) -> None:
        self.slow_factor = slow_factor

    def inject(self, h: MeshHandle, busiest: str, progress: Progress) -> Fault:
        h.set_control(busiest, slow_factor=self.slow_factor)
        progress(f"backend {busiest} now does {self.slow_factor:g}x the work per call")
        return Fault(f"backend {busiest} x{self.slow_factor:g} slower", {busiest})

    def restore(self, h: MeshHandle, fault: Fault, progress: Progress) -> None:
        for b in fault.backends:
            h.set_control(b, slow_factor=1.0)
        progress(f"backend {', '.join(fault.backends)} back to normal speed")


class HungBackend(Scenario):
    name = "hung-backend"
    summary = "the busiest backend accepts calls and never answers (ServerReady still true)"

    def inject(self, h: MeshHandle, busiest: str, progress: Progress) -> Fault:
        h.set_control(busiest, hang=True)
        progress(f"backend {busiest} hangs every call")
        return Fault(f"backend {busiest} hung", {busiest})

    def restore(self, h: MeshHandle, fault: Fault, progress: Progress) -> None:
        for b in fault.backends:
            h.set_control(b, hang=False)
        progress(f"backend {', '.join(fault.backends)} answers again")


SCENARIOS: dict[str, type[Scenario]] = {s.name: s for s in (
    KillBackend, DrainBackend, RegionOutage, CloudOutage, PlacementOutage, EdgeRestart,
    SlowBackend, HungBackend)}
