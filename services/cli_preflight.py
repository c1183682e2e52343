"""What ``switchyard up`` (and ``placement``, ``edge``, ``demo``) check before starting
anything: every failure here is an operator's to fix (a run_dir it cannot write, a port
another process holds, a mesh that is not running), so it is said with the config key and
what to do, instead of a child dying minutes later, a traceback or a table of failed calls."""

from __future__ import annotations

import errno
import pathlib
import socket
import tempfile

from placement.errors import ConfigError
from services.cli_errors import Unreachable
from services.config import MeshConfig
from services.prices_file import load_prices
from services.up import LOCAL_HOSTS
from services.xds import native


def check_up(cfg: MeshConfig, config_path: str) -> None:
    check_run_dir(cfg.path(cfg.run_dir), config_path)
    check_fixed_ports(cfg, config_path)
    check_ports(cfg, config_path)
    check_envoy_filters(cfg, config_path)
    if cfg.discovery == "static":  # placement reads it after the backends started
        load_prices(cfg.path(cfg.prices_file))


def listen_ports(cfg: MeshConfig) -> list[tuple[str, str, int]]:
    """Every (key, host, port) a mesh server listens on, as the file names it; port 0 (a
    metrics port not served; elsewhere refused by :func:`check_fixed_ports`) left out. With
    shards the replicas' own addresses listen, not placement.port.
    An Envoy edge (``[edge] engine = "envoy"``) takes the same two ports as a Python edge, said
    as what takes them: its Envoy's listener (``port``, bound when placement pushes it: a held
    port was a listener Envoy rejects, an edge that never serves) and its slow path's metrics
    (``metrics_port``); its Envoy's admin interface and its slow path's gRPC port are picked
    free when it starts (no key to check). With ``wan.emulate`` the relay listens on
    ``relay_base_port + k``, one port per (edge region, backend in another region), whatever
    the engine (services.backends.wan.relay_routes)."""
    from services.backends.wan import relay_routes

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
    out.append(("agent.metrics_port", cfg.agent.host, cfg.agent.metrics_port))
    for i, b in enumerate(cfg.backends):
        out.append((f"backends[{i}].grpc_port ({b.id})", b.host, b.grpc_port))
        out.append((f"backends[{i}].metrics_port ({b.id})", b.host, b.metrics_port))
    envoy = cfg.edge.engine == "envoy"
    for i, e in enumerate(cfg.edges):
        out.append((f"edges[{i}].port ({e.id}" + (": its Envoy's listener)" if envoy else ")"),
                    e.host, e.port))
        out.append((f"edges[{i}].metrics_port ({e.id}"
                    + (": its slow path's metrics)" if envoy else ")"), e.host, e.metrics_port))
    for k, r in enumerate(relay_routes(cfg)):
        out.append((f"wan.relay_base_port + {k} (the emulated-WAN relay from {r.edge_region} to "
                    f"{r.backend_id})", "127.0.0.1", r.listen_port))
    return [(what, host, port) for what, host, port in out if port != 0]


def dialled_ports(cfg: MeshConfig) -> list[tuple[str, str, int]]:
    """Every (key, host, port) of a server that ``up`` starts, waits on, and the other
    processes dial at the address the file gives: placement (or every shard replica), the
    edges, the backends."""
    p = cfg.placement
    out = [] if p.shards else [("placement.port", p.host, p.port)]
    for i, s in enumerate(p.shards):
        for j, address in enumerate(s.replicas):
            host, _, port = address.rpartition(":")
            if port.isdigit():
                out.append((f"placement.shards[{i}].replicas[{j}]", host, int(port)))
    out += [(f"edges[{i}].port", e.host, e.port) for i, e in enumerate(cfg.edges)]
    out += [(f"backends[{i}].grpc_port", b.host, b.grpc_port) for i, b in enumerate(cfg.backends)]
    return out


def check_fixed_ports(cfg: MeshConfig, config_path: str) -> None:
    """Port 0 for a server ``up`` waits on: it would listen on a port its own OS picked,
    which neither ``up`` nor the processes dialling it learn (review11: ``up`` waited 120 s
    on placement at host:0). Said for every such key at once, with free ports to write."""
    from services.ports import free_ports

    zero = [(key, host) for key, host, port in dialled_ports(cfg) if port == 0]
    if not zero:
        return
    fixes = [f"{key} = \"{host}:{port}\"" if key.endswith("]") else f"{key} = {port}"
             for (key, host), port in zip(zero, free_ports(len(zero)), strict=True)]
    raise ConfigError(
        f"{config_path} gives port 0 to {len(zero)} server(s) that `switchyard up` waits on "
        "and the other processes dial at the configured address (port 0 makes a server listen "
        "on a port its OS picks, which nobody else learns):\n"
        + "".join(f"    {key}\n" for key, _ in zero)
        + "  next: write a port number for each; free right now: " + ", ".join(fixes))


def check_ports(cfg: MeshConfig, config_path: str) -> None:
    """``up`` runs every server on this machine: no two configured on one port (whatever
    host each names; on Kubernetes they may share one, each in its own pod), and each port
    free right now."""
    taken: dict[int, str] = {}
    busy: list[tuple[str, str, int]] = []
    for what, host, port in listen_ports(cfg):
        if port in taken:
            raise ConfigError(f"{what} and {taken[port]} are both configured on port {port}; "
                              f"`switchyard up` runs them all on this machine: give each its "
                              f"own port in {config_path} (a metrics_port of 0 serves "
                              "no metrics)")
        taken[port] = what
        if host in LOCAL_HOSTS and in_use(host, port):  # `up` refuses remote hosts where it
            busy.append((what, host, port))             # matters (shards)
    if len(busy) == 1:
        check_free(*busy[0], config_path)
    if busy:  # all of them at once: one at a time, an operator fixed them one run at a time
        every = len(busy) == len(taken)
        raise ConfigError(
            f"{'all' if every else len(busy)} of the {len(taken)} ports this mesh listens on "
            "are already in use by other processes"
            + (" (this mesh is likely running already)" if every else "") + ":\n"
            + "".join(f"    {port:<6} {what}\n" for what, _, port in busy)
            + f"  next: a mesh still running? `switchyard status --config {config_path}` "
            "answers if it is this file's; Ctrl-C where it runs stops it. To run beside it, "
            f"copy {config_path}, give those keys other ports and run_dir another directory, "
            "and pass --config COPY to every command (examples/mesh-capacity.toml is a mesh "
            "that runs beside examples/mesh.toml)")


def check_envoy_filters(cfg: MeshConfig, config_path: str,
                        build_dir: pathlib.Path = native.BUILD_DIR) -> None:
    """Envoy edges with ``[edge] envoy_filters = "module"``: the C dynamic module loads here
    (``services.xds.native.choose``; ``auto`` falls back to the Lua at start, saying why)."""
    if cfg.edge.engine != "envoy":
        return
    try:
        native.choose(cfg.edge.envoy_filters, build_dir)
    except ValueError as exc:
        raise ConfigError(f"{exc}; run native/build.sh, or set envoy_filters = \"auto\" in "
                          f"{config_path}'s [edge] to fall back to the Lua filters") from None


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
    """``port`` is not held on ``host`` now (else: who needs it, and what to do)."""
    fix = f"pass another {what}" if what.startswith("--") else f"change {what} in {config_path}"
    if in_use(host, port):
        raise ConfigError(
            f"port {port} on {host} is already in use by another process; {what} "
            f"needs it. Stop that process (`ss -ltnp 'sport = :{port}'` names it; a "
            f"mesh still running? `switchyard status`) or {fix}")


def in_use(host: str, port: int) -> bool:
    """``port`` is held on ``host`` now. The probe binds as the gRPC servers do (SO_REUSEADDR:
    a port left in TIME_WAIT by a stopped server is free); a host it cannot bind itself
    (IPv6, a name) is left to the server's own bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1" if host == "localhost" else host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def check_edges_answer(cfg: MeshConfig, start: str = "switchyard up") -> None:
    """``switchyard demo`` calls every configured edge: each must answer first (else the demo
    printed a table of failed calls and exited 0); ``start``: the command that starts it."""
    from services.up import is_serving

    kind = "envoy" if cfg.edge.engine == "envoy" else "grpc"
    silent = [f"{e.id} at {e.host}:{e.port}" for e in cfg.edges
              if e.port and not is_serving(f"{e.host}:{e.port}", kind, cfg.security)]
    if silent:
        verb = "does" if len(silent) == 1 else "do"
        raise Unreachable(f"edge {', '.join(silent)} {verb} not answer; `switchyard demo` needs "
                          f"a running mesh: start it with `{start}` (or run `{start} --demo`)")


def check_ca(directory: pathlib.Path) -> None:
    """``switchyard certs`` without ``--new-ca`` signs with the CA in ``directory`` when one
    is there: it must load and be a CA (a leaf written over ca.pem signed certificates no
    peer could verify)."""
    from cryptography import x509

    from services.security.certs import load_ca

    if not ((directory / "ca.pem").is_file() and (directory / "ca.key").is_file()):
        return  # none yet: certs creates it
    fix = ("pass --new-ca to replace it (then issue every certificate it signed again) or "
           "another --dir")
    try:
        cert, _ = load_ca(directory)
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (ValueError, TypeError, x509.ExtensionNotFound) as exc:
        raise ConfigError(f"{directory / 'ca.pem'} and {directory / 'ca.key'} are not a CA "
                          f"written by switchyard certs ({str(exc).split('. ')[0]}); "
                          f"{fix}") from None
    if not is_ca:
        raise ConfigError(f"{directory / 'ca.pem'} is not a CA certificate (a leaf: "
                          f"{cert.subject.rfc4514_string()}); {fix}")
