"""Breaking and mending a running local mesh: the processes and knobs a drill acts on.

:class:`MeshHandle` wraps a :class:`services.up.Mesh` (started by the drill or by its caller)
and knows, for every child, its real pid (a backend's pid *is* tritonserver: it execs), how
to SIGKILL or SIGTERM it, how to start a fresh process with the same command line, and how
to wait until placement and every edge see the whole fleet healthy again.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from typing import cast

import grpc

from placement.errors import SwitchyardError
from services.api.switchyard.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc
from services.backends.repository import set_control
from services.backends.triton import backend_run_dir
from services.cli_errors import Unreachable
from services.cli_help import up_command
from services.config import BackendConfig, EdgeConfig, MeshConfig
from services.drills.edges import EdgeUnreachable, EdgeView, edge_view
from services.placement.shard import owning_shards
from services.supervisor import PidProcess, hold, release
from services.up import Child, Mesh, answering_replica, is_serving


class DrillError(SwitchyardError):
    """A drill could not set up, inject or restore its fault."""

    grpc_code = "FAILED_PRECONDITION"


class MeshHandle:
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.cfg: MeshConfig = mesh.cfg

    # -- lookup --------------------------------------------------------------------------

    def child(self, name: str) -> Child:
        for c in self.mesh.children:
            if c.name == name or c.name.startswith(name + " "):
                return c
        raise DrillError(f"no mesh process named {name!r}; have "
                         f"{[c.name for c in self.mesh.children]}")

    def backend(self, backend_id: str) -> BackendConfig:
        return next(b for b in self.cfg.backends if b.id == backend_id)

    def backend_child(self, backend_id: str) -> Child:
        return self.child(f"backend {backend_id}")

    def edge_child(self, edge: EdgeConfig) -> Child:
        return self.child(f"edge {edge.id}")

    def pid(self, child: Child) -> int:
        if child.proc is None:
            raise DrillError(f"{child.name} has no process")
        return child.proc.pid

    def tritonserver_pid(self, backend_id: str) -> int:
        """The real tritonserver pid of a backend, checked against /proc."""
        pid = self.pid(self.backend_child(backend_id))
        with contextlib.suppress(OSError):
            exe = os.readlink(f"/proc/{pid}/exe")
            if not exe.endswith("tritonserver"):
                raise DrillError(f"backend {backend_id}: pid {pid} is {exe}, not tritonserver")
        return pid

    def backends_in(self, *, region: str | None = None, cloud: str | None = None) -> list[str]:
        return [b.id for b in self.cfg.backends
                if (region is None or b.region == region)
                and (cloud is None or self.cfg.region_cloud(b.region) == cloud)]

    # -- processes -----------------------------------------------------------------------

    def signal(self, child: Child, sig: int) -> None:
        assert child.proc is not None
        hold(self.mesh.run_dir, child.name, f"drill sent {signal.Signals(sig).name}")
        child.proc.send_signal(sig)

    def kill_backend(self, backend_id: str) -> int:
        """SIGKILL the backend's tritonserver (its Python stubs are left to notice)."""
        pid = self.tritonserver_pid(backend_id)
        hold(self.mesh.run_dir, self.backend_child(backend_id).name, "drill sent SIGKILL")
        os.kill(pid, signal.SIGKILL)
        return pid

    def restart(self, child: Child, *, wait: bool = True, timeout_s: float = 60.0) -> None:
        """Start a fresh process with ``child``'s command line (after reaping the old one)."""
        old = child.proc
        hold(self.mesh.run_dir, child.name, "drill is restarting it")
        if old is not None:
            if old.poll() is None:
                old.terminate()
                try:
                    old.wait(10)
                except subprocess.TimeoutExpired:
                    old.kill()
                    old.wait(5)
            # Its session may hold orphans (Triton's Python stubs after a SIGKILL).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(old.pid, signal.SIGKILL)
        env = dict(os.environ, SWITCHYARD_RUN_DIR=str(self.mesh.run_dir))
        with child.log.open("ab") as log_file:
            child.proc = subprocess.Popen(child.argv, stdout=log_file, stderr=subprocess.STDOUT,
                                          env=env, start_new_session=True)
        self._write_pids()
        release(self.mesh.run_dir, child.name)  # `switchyard up`'s supervisor adopts this pid
        if wait:
            self.wait_process_ready(child, timeout_s)

    def wait_process_ready(self, child: Child, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert child.proc is not None
            if child.proc.poll() is not None:
                raise DrillError(f"{child.name} exited with {child.proc.returncode} on restart; "
                                 f"see {child.log}")
            if child.kind in ("agent", "relay") or is_serving(child.address, child.kind):
                return
            time.sleep(0.1)
        raise DrillError(f"{child.name} not ready {timeout_s:.0f} s after restart; see {child.log}")

    def _write_pids(self) -> None:
        pids = {c.name: c.proc.pid for c in self.mesh.children if c.proc is not None}
        (self.mesh.run_dir / "pids.json").write_text(json.dumps(pids, indent=2))

    # -- knobs ---------------------------------------------------------------------------

    def repo_dir(self, backend_id: str) -> pathlib.Path:
        return backend_run_dir(self.cfg, self.backend(backend_id)) / "repo"

    def set_control(self, backend_id: str, **knobs: object) -> None:
        set_control(self.repo_dir(backend_id), **knobs)  # type: ignore[arg-type]

    def placement_children(self) -> list[Child]:
        """Every placement process: the one placement, or each replica of every shard."""
        kids = [c for c in self.mesh.children
                if c.name == "placement" or c.name.startswith("placement ")]
        if not kids:
            raise DrillError(f"no placement process; have {[c.name for c in self.mesh.children]}")
        return kids

    def placement_addresses(self, kind: str | None = None, target: str = "") -> list[str]:
        """Where to ask placement: its one address, or with ``[[placement.shards]]`` the first
        answering replica of every shard (of the shards owning ``kind`` ``target``, for a
        drain: a shard knows only its own regions' backends)."""
        p = self.cfg.placement
        if not p.shards:
            return [f"{p.host}:{p.port}"]
        shards = (owning_shards(self.cfg, kind, target) if kind is not None
                  else range(len(p.shards)))
        return [answering_replica(self.cfg, i) for i in shards]

    def set_availability(self, scope: str, target: str, availability: int) -> list[str]:
        scopes = {"backend": placement_pb2.AVAILABILITY_SCOPE_BACKEND,
                  "region": placement_pb2.AVAILABILITY_SCOPE_REGION,
                  "cloud": placement_pb2.AVAILABILITY_SCOPE_CLOUD}
        changed: list[str] = []
        for address in self.placement_addresses(scope, target):
            with grpc.insecure_channel(address) as ch:
                resp = placement_pb2_grpc.PlacementStub(ch).SetAvailability(
                    placement_pb2.SetAvailabilityRequest(
                        scope=scopes[scope], target=target, availability=availability),
                    timeout=3)
            changed += resp.backend_ids
        return changed

    def backend_status(self, timeout_s: float = 2.0) -> dict[str, placement_pb2.BackendStatus]:
        """What placement (every shard of it) says of every backend, by id."""
        out: dict[str, placement_pb2.BackendStatus] = {}
        for address in self.placement_addresses():
            with grpc.insecure_channel(address) as ch:
                resp = placement_pb2_grpc.PlacementStub(ch).ListBackends(
                    placement_pb2.ListBackendsRequest(), timeout=timeout_s)
            out.update((s.backend.id, s) for s in resp.backends)
        return out

    # -- observation ---------------------------------------------------------------------

    def edge_view(self, edge: EdgeConfig, timeout_s: float = 1.0) -> EdgeView:
        """The edge's view, whichever engine runs it (``services.drills.edges``)."""
        return edge_view(self.cfg, edge, timeout_s)

    def unhealthy(self) -> list[str]:
        """What still differs from a fully healthy mesh (empty: settled)."""
        problems: list[str] = []
        try:
            seen = self.backend_status(timeout_s=1)
            for b in self.cfg.backends:
                s = seen.get(b.id)
                if s is None:
                    problems.append(f"placement: {b.id} not registered")
                elif not s.healthy:
                    problems.append(f"placement: {b.id} unhealthy ({s.health_reason})")
                elif s.availability != fleet_pb2.AVAILABILITY_ACTIVE:
                    problems.append(f"placement: {b.id} "
                                    f"{fleet_pb2.Availability.Name(s.availability)}")
        except grpc.RpcError as exc:
            problems.append(f"placement: {_status(exc)}")
        for e in self.cfg.edges:
            try:
                view = self.edge_view(e)
            except EdgeUnreachable as exc:
                problems.append(f"{e.id}: {exc.status}")
                continue
            if not view.placement_connected:
                problems.append(f"{e.id}: not connected to placement")
            if view.blocked:
                problems.append(f"{e.id}: blocked {list(view.blocked)}")
        return problems

    def settle(self, timeout_s: float = 60.0, on_wait: Callable[[list[str]], None] | None = None
               ) -> list[str]:
        """Wait until the mesh is fully healthy again; returns what is still wrong (or [])."""
        deadline = time.monotonic() + timeout_s
        last_note = 0.0
        while True:
            problems = self.unhealthy()
            if not problems or time.monotonic() > deadline:
                return problems
            if on_wait is not None and time.monotonic() - last_note > 5:
                on_wait(problems)
                last_note = time.monotonic()
            time.sleep(0.25)

    def restart_edges(self, edges: Iterable[EdgeConfig] | None = None) -> None:
        for e in edges if edges is not None else self.cfg.edges:
            self.restart(self.edge_child(e))


def _status(exc: grpc.RpcError) -> str:
    """The status name of a failed call (its RpcError is also its grpc.Call)."""
    name: str = cast("grpc.Call", exc).code().name
    return name


def attach(cfg: MeshConfig, config_path: str) -> Mesh:
    """The :class:`Mesh` a ``switchyard up`` with this config is running, from its pids.json.
    No such mesh running is :class:`Unreachable` (exit 3, as for a placement or an edge that
    does not answer), with the command that starts it."""
    mesh = Mesh(cfg, config_path)
    path = mesh.run_dir / "pids.json"
    start = f"next: start it with `{up_command(config_path)}`, or drop --attach to drill a private mesh"
    try:
        pids = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise Unreachable(f"--attach: no mesh of {config_path} is running ({path} not "
                          f"found)\n  {start}") from exc
    for child in mesh.plan():
        if child.name not in pids:
            raise DrillError(f"{path} has no pid for {child.name!r}")
        proc = PidProcess(int(pids[child.name]))
        child.proc = proc  # type: ignore[assignment]
        if proc.poll() is not None:
            raise Unreachable(f"--attach: {child.name} of the mesh of {config_path} (pid "
                              f"{pids[child.name]}) is not running\n  {start}")
        mesh.children.append(child)
    return mesh
