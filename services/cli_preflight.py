"""What ``switchyard up`` checks before it starts anything: every failure here is an
operator's to fix (a run_dir it cannot write, a port another process holds), so it is said
with the config key and what to do, instead of a child dying minutes later or a traceback."""

from __future__ import annotations

import errno
import pathlib
import socket
import tempfile

from placement.errors import ConfigError
from services.config import MeshConfig
from services.up import LOCAL_HOSTS


def check_up(cfg: MeshConfig, config_path: str) -> None:
    check_run_dir(cfg.path(cfg.run_dir), config_path)
    check_ports(cfg, config_path)


def listen_ports(cfg: MeshConfig) -> list[tuple[str, str, int]]:
    """Every (key, host, port) a mesh server listens on, as the file names it; port 0 (any
    free port) left out. With shards the replicas' own addresses listen, not placement.port."""
    out: list[tuple[str, str, int]] = []
    p = cfg.placement
    if not p.shards:
        out.append(("placement.port", p.host, p.port))
    out.append(("placement.metrics_port", p.host, p.metrics_port))
    for i, s in enumerate(p.shards):
        for j, address in enumerate(s.replicas):
            host, _, port = address.rpartition(":")
            if port.isdigit():
                out.append((f"placement.shards[{i}].replicas[{j}]", host, int(port)))
            if j < len(s.metrics_ports):
                out.append((f"placement.shards[{i}].metrics_ports[{j}]", host,
                            s.metrics_ports[j]))
    for i, b in enumerate(cfg.backends):
        out.append((f"backends[{i}].grpc_port ({b.id})", b.host, b.grpc_port))
        out.append((f"backends[{i}].metrics_port ({b.id})", b.host, b.metrics_port))
    for i, e in enumerate(cfg.edges):
        out.append((f"edges[{i}].port ({e.id})", e.host, e.port))
        out.append((f"edges[{i}].metrics_port ({e.id})", e.host, e.metrics_port))
    return [(what, host, port) for what, host, port in out if port != 0]


def check_ports(cfg: MeshConfig, config_path: str) -> None:
    """``up`` runs every server on this machine: no two configured on one port (whatever
    host each names; on Kubernetes they may share one, each in its own pod), and each port
    free right now."""
    taken: dict[int, str] = {}
    for what, host, port in listen_ports(cfg):
        if port in taken:
            raise ConfigError(f"{what} and {taken[port]} are both configured on port {port}; "
                              f"`switchyard up` runs them all on this machine: give each its "
                              f"own port in {config_path} (0 = any free port)")
        taken[port] = what
        if host in LOCAL_HOSTS:  # `up` refuses remote hosts where it matters (shards)
            check_free(what, host, port, config_path)


def check_run_dir(run_dir: pathlib.Path, config_path: str) -> None:
    """``run_dir/logs`` can be created and written."""
    try:
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir / "logs"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"run_dir {run_dir} is not writable ({exc.strerror}: {exc.filename}); set run_dir "
            f"in {config_path} (or SWITCHYARD_RUN_DIR) to a directory you can write") from exc


def check_free(what: str, host: str, port: int, config_path: str) -> None:
    """``port`` can be bound on ``host`` now (else: who needs it, and what to do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1" if host == "localhost" else host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise ConfigError(f"{what}: port {port} on {host} cannot be bound "
                                  f"({exc.strerror}); change it in {config_path}") from exc
            raise ConfigError(
                f"port {port} on {host} is already in use by another process; {what} needs "
                f"it. Stop that process (`ss -ltnp 'sport = :{port}'` names it; a mesh still "
                f"running? `switchyard status`) or change {what} in {config_path}") from exc
