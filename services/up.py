"""``switchyard up``: run the whole embedded mesh on this machine as real processes.

Starts, in order: one real Triton server per backend, the emulated-WAN relay, placement
(with ``[[placement.shards]]``, every replica of every shard), one node agent for all
backends, and the edges; waits for each to answer its health check;
prints what listens where. Every child logs JSON to ``<run_dir>/logs/<name>.log``; Ctrl-C
(or SIGTERM) stops them all. Once the mesh is up, :meth:`Mesh.supervise` hands the children to a
:class:`services.supervisor.Supervisor`: a child that dies is reaped, reported and restarted
with backoff unless it was stopped on purpose (an operator, or a drill's ``hold``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from placement.errors import ConfigError
from services.config import MeshConfig
from services.security.settings import SecuritySettings
from services.supervisor import Supervisor, release_all

LOCAL_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0")


@dataclass
class Child:
    name: str
    argv: list[str]
    address: str
    kind: str
    log: pathlib.Path
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class Mesh:
    cfg: MeshConfig
    config_path: str
    children: list[Child] = field(default_factory=list)
    supervisor: Supervisor | None = None
    stop_grace_s: float = 10.0  # from SIGTERM to SIGKILL, each child

    @property
    def run_dir(self) -> pathlib.Path:
        return self.cfg.path(self.cfg.run_dir)

    def plan(self) -> list[Child]:
        py, cfgp = sys.executable, self.config_path
        logs = self.run_dir / "logs"
        kids = [Child(f"backend {b.id}", [py, "-m", "services.backends", "--config", cfgp,
                                          "--backend", b.id], b.endpoint, "triton",
                      logs / f"backend-{b.id}.log") for b in self.cfg.backends]
        if self.cfg.wan.emulate:
            kids.append(Child("wan relay (emulated RTT)", [py, "-m", "services.backends.wan",
                                                            "--config", cfgp], "", "relay",
                              logs / "wan.log"))
        kids += self.placement_children()
        agent = self.cfg.agent
        kids.append(Child("agent", [py, "-m", "services.agent", "--config", cfgp, "--backends",
                                    ",".join(b.id for b in self.cfg.backends),
                                    *(["--metrics-port", str(agent.metrics_port),
                                       "--metrics-host", agent.host]
                                      if agent.metrics_port else [])], "", "agent",
                          logs / "agent.log"))
        envoy = self.cfg.edge.engine == "envoy"  # Envoy configured by placement over xDS
        edge_cmd = [py, "-m", "services.edge.envoy"] if envoy else [py, "-m", "services.cli",
                                                                    "edge"]
        kids += [Child(f"edge {e.id} ({e.region})", [*edge_cmd, "--config", cfgp, "--id", e.id],
                       f"{e.host}:{e.port}", "envoy" if envoy else "grpc",
                       logs / f"edge-{e.id}.log")
                 for e in self.cfg.edges]
        return kids

    def placement_children(self) -> list[Child]:
        """One placement replica, or with ``[[placement.shards]]`` one per configured
        replica of every shard (primary, then standbys; issue 15), each on its own port."""
        py, cfgp, logs = sys.executable, self.config_path, self.run_dir / "logs"
        argv = [py, "-m", "services.cli", "placement", "--config", cfgp]
        p = self.cfg.placement
        if not p.shards:
            return [Child("placement", argv, f"{p.host}:{p.port}", "grpc",
                          logs / "placement.log")]
        kids = []
        for i, s in enumerate(p.shards):
            for j, address in enumerate(s.replicas):
                host, _, port = address.rpartition(":")
                if host not in LOCAL_HOSTS:
                    raise ConfigError(
                        f"placement.shards[{i}].replicas {address!r}: switchyard up runs "
                        f"every replica on this machine; use one of {list(LOCAL_HOSTS)}")
                role = "primary" if j == 0 else f"standby {j}"
                kids.append(Child(f"placement shards[{i}] {role}", [*argv, "--port", port],
                                  address, "grpc", logs / f"placement-shard{i}-{j}.log"))
        return kids

    def placement_lines(self) -> list[str]:
        """What ``switchyard up`` prints of placement once the mesh is up."""
        p = self.cfg.placement
        if not p.shards:
            return [f"  placement   {p.host}:{p.port}"]
        return [f"  placement   shards[{i}] {', '.join(s.replicas)}  regions "
                f"{', '.join(s.regions)}" for i, s in enumerate(p.shards)]

    def start(self, progress: bool = True) -> None:
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, SWITCHYARD_RUN_DIR=str(self.run_dir))
        release_all(self.run_dir)
        self.supervisor = Supervisor(self.run_dir, env, on_change=self._write_pids)
        plan = self.plan()
        # The backends depend on nothing and the edges (last) only on what starts before
        # them: each group is spawned at once (a start takes seconds), then waited for.
        edges = plan[len(plan) - len(self.cfg.edges):]
        groups = [[c for c in plan if c.kind == "triton"], edges]
        for child in plan:
            if progress:
                print(f"  starting {child.name:<34} ", end="", flush=True)
            if child.proc is None:
                for c in next((g for g in groups if any(x is child for x in g)), [child]):
                    self.supervisor.spawn(c)
                    self.children.append(c)
            t0 = time.monotonic()
            self._wait(child)
            if progress:
                print(f"ready in {time.monotonic() - t0:4.1f} s  {child.address}", flush=True)
        self._write_pids()

    def _wait(self, child: Child, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert child.proc is not None
            if child.proc.poll() is not None:
                self.stop()
                tail = child.log.read_text(errors="replace")[-2000:]
                raise ConfigError(f"{child.name} exited with {child.proc.returncode}; "
                                  f"last lines of {child.log}:\n{tail}")
            if child.kind in ("agent", "relay"):
                time.sleep(0.5)
                return
            if is_serving(child.address, child.kind, self.cfg.security):
                return
            time.sleep(0.2)
        self.stop()
        raise ConfigError(f"{child.name} did not become ready at {child.address} within "
                          f"{timeout:.0f} s; see {child.log}")

    def supervise(self) -> None:
        """From now on, restart children that die (see :mod:`services.supervisor`)."""
        if self.supervisor is not None:
            self.supervisor.start()

    def _write_pids(self) -> None:
        pids = {c.name: c.proc.pid for c in self.children if c.proc is not None}
        (self.run_dir / "pids.json").write_text(json.dumps(pids, indent=2))

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.close()  # stopping the mesh is on purpose: no restarts
        self._stop_replaced()
        for child in reversed(self.children):
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=self.stop_grace_s)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout=5)  # reaped, not left a zombie
            # Its session (pgid = its pid) may hold what it started: Triton's Python backend
            # stubs outlived a tritonserver killed here, still loading models (a drill's mesh
            # that never became healthy), orphaned, holding CPU and shared memory.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, signal.SIGKILL)
        if self.cfg.capacity.enabled:  # a placement that died (or was killed) leaves its own
            from services.capacity.local import reap_leftovers

            reap_leftovers(self.run_dir / "capacity")
        self.children.clear()

    def _stop_replaced(self) -> None:
        """Drills may restart children; their new pids are in pids.json: stop those too."""
        path = self.run_dir / "pids.json"
        if not path.exists():
            return
        ours = {c.proc.pid for c in self.children if c.proc is not None}
        for pid in json.loads(path.read_text()).values():
            if isinstance(pid, int) and pid not in ours:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)


def is_serving(address: str, kind: str, security: SecuritySettings | None = None) -> bool:
    """Whether the child at ``address`` answers: Triton its ServerReady (plaintext: the mesh
    starts Triton without TLS), placement and a Python edge their gRPC health check, dialled
    as ``[security]`` says (``security``; None: plaintext) with the admin certificate, as
    the operator commands dial; before, ``up`` dialled a TLS mesh in plaintext and waited
    120 s for a placement that was serving."""
    if kind == "envoy":  # listens once placement's config arrived; speaks no gRPC health
        from services.edge.envoy.launcher import listening

        host, _, port = address.rpartition(":")
        return listening(host, int(port))
    from services.cli_placement import admin_channel

    with (grpc.insecure_channel(address) if kind == "triton"
          else admin_channel(address, security)) as ch:
        try:
            if kind == "triton":
                from tritonclient.grpc import service_pb2, service_pb2_grpc

                stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
                return bool(stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=1).ready)
            # types-grpcio-health-checking's HealthStub declares no methods (sync or aio).
            check = health_pb2_grpc.HealthStub(ch).Check  # type: ignore[attr-defined]
            resp = check(health_pb2.HealthCheckRequest(), timeout=1)
            return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
        except grpc.RpcError:
            return False


def shard_targets(cfg: MeshConfig) -> list[tuple[str, str | None]]:
    """``switchyard status`` with ``[[placement.shards]]``: per shard, a title and the first
    of its replicas that answers (None: none does)."""
    from services.cli_placement import serving  # dialled as the command dials (TLS too)

    out: list[tuple[str, str | None]] = []
    for i, s in enumerate(cfg.placement.shards):
        address = next((a for a in s.replicas if serving(a, cfg.security)), None)
        title = (f"== placement.shards[{i}] (regions {', '.join(s.regions)}) at {address}"
                 if address else f"== placement.shards[{i}] (regions {', '.join(s.regions)}):"
                 f" no replica answers ({', '.join(s.replicas)})")
        out.append((title, address))
    return out


def answering_replica(cfg: MeshConfig, shard: int) -> str:
    """The first replica of ``placement.shards[shard]`` that answers (else its primary, so
    that the caller's error names it), dialled as ``[security]`` says."""
    from services.cli_placement import serving

    replicas = cfg.placement.shards[shard].replicas
    return next((a for a in replicas if serving(a, cfg.security)), replicas[0])
