"""The agent's command line (``python -m services.agent``, ``switchyard agent``).

Example::

    python -m services.agent --config examples/mesh.toml --backends use1-h100,use1-t4 \\
        --interval 1.0 --placement 127.0.0.1:50050,127.0.0.1:50060

Logs are structlog JSON lines on stderr. Without a GPU the agent says ``source=simulated``
in its logs and in every report; ``--simulated-faults FILE`` names the JSON control file
that injects simulated faults (see ``services/agent/simulated.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

import structlog
from pydantic import ValidationError

from placement.errors import ConfigError, SwitchyardError
from services import logs
from services.agent.agent import NodeAgent
from services.agent.gpus import parse_gpus
from services.agent.metrics import serve_metrics
from services.agent.simulated import SimulatedGpuSource
from services.config import MeshConfig, load_config
from services.discovery import open_discovery
from services.security import transport


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The agent's own flags (``switchyard agent`` adds them to its subcommand too)."""
    p.add_argument("--backends", default="",
                   help="comma-separated backend ids from the config that run on this host "
                        "(default: the ids of --backend)")
    p.add_argument("--backend", action="append", default=[], metavar="SPEC",
                   help="a backend on this host that the config does not list (e.g. with "
                        "Consul discovery), as key=value pairs: 'id=node-1,host=10.0.0.5,"
                        "grpc_port=8001,region=aws-us-east-1,accelerator=nvidia-l4,"
                        "price_class=on-demand,variants=summarize-small+summarize-large' "
                        "(optional: accelerator_count, max_concurrency, metrics_port); "
                        "repeatable; validated like the config's [[backends]]")
    p.add_argument("--interval", type=float, default=1.0,
                   help="seconds between telemetry reports (default: 1.0)")
    p.add_argument("--placement", default="",
                   help="comma-separated placement replicas host:port "
                        "(default: [placement] host:port and replicas from the config)")
    p.add_argument("--one-replica", action="store_true",
                   help="stream to one placement replica at a time (default: to every "
                        "replica, since replicas share no state)")
    p.add_argument("--agent-id", default=None, help="name in reports (default: agent-<host>)")
    p.add_argument("--gpus", default="",
                   help="GPUs to report, by index or UUID: a pool shared out among the "
                        "backends in turn ('0,2' or 'GPU-8f3c...') and/or per backend "
                        "('use1-h100=0+1,use1-t4=GPU-8f3c...'); default every GPU, i-th "
                        "backend on GPU i, wrapping around")
    p.add_argument("--deregister-on-stop", action="store_true",
                   help="on SIGINT/SIGTERM deregister this agent's backends from every "
                        "placement replica (with its lease token); default: keep them, "
                        "placement stops using their rows when they go stale")
    p.add_argument("--metrics-port", type=int, default=0, metavar="PORT",
                   help="serve Prometheus /metrics on this port (registrations and "
                        "heartbeats by outcome, telemetry reports sent, NVML errors; "
                        "services/agent/metrics.py); default 0: not served")
    p.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                   help="address /metrics listens on (default: 127.0.0.1, this host only)")
    p.add_argument("--simulated-faults", default=None, metavar="FILE",
                   help='JSON control file for simulated faults, e.g. {"use1-t4": ["ecc"]}; '
                        "used only when NVML is unavailable")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m services.agent",
        description="Switchyard node agent: registers this host's Triton backends with "
                    "placement and streams NVML (or, without a GPU, clearly SIMULATED) GPU "
                    "readings plus Triton statistics every interval.")
    p.add_argument("--config", required=True, help="mesh TOML file, e.g. examples/mesh.toml")
    add_arguments(p)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def backend_spec(spec: str) -> dict[str, object]:
    """``--backend`` key=value pairs → a ``[[backends]]`` table (``variants`` split on +)."""
    table: dict[str, object] = {}
    for item in filter(None, (i.strip() for i in spec.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--backend {spec!r}: {item!r} is not key=value")
        table[key.strip()] = ([v for v in value.split("+") if v] if key.strip() == "variants"
                              else value.strip())
    return table


def agent_config(args: argparse.Namespace, env: dict[str, str]) -> tuple[MeshConfig, list[str]]:
    """The validated mesh config (plus ``--backend`` entries) and the backend ids to run."""
    config = load_config(args.config, env=env)
    extra = [backend_spec(s) for s in args.backend]
    if extra:
        raw = config.model_dump()
        raw["backends"] = [*raw["backends"], *extra]
        try:
            config = MeshConfig.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError("--backend is not a valid backend:\n" + "\n".join(
                f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from exc
    ids = [b.strip() for b in args.backends.split(",") if b.strip()]
    ids = ids or [str(t["id"]) for t in extra if "id" in t]
    if not ids:
        raise ConfigError("no backends: pass --backends ID,... (from the config) or --backend SPEC")
    if not 0 <= getattr(args, "metrics_port", 0) <= 65535:
        raise ConfigError(f"--metrics-port {args.metrics_port} is not a port in 0..65535")
    return config, ids


def build_agent(args: argparse.Namespace, env: dict[str, str], *,
                placement: list[str] | None = None, discovery: Any = None) -> NodeAgent:
    """The ``NodeAgent`` the flags describe (not started); ``placement`` overrides the flag.

    With ``discovery`` (Consul) the placement replicas are looked up in its catalog again
    every 30 s, so a replica that restarts at a new address gets this agent's telemetry.
    """
    config, ids = agent_config(args, env)
    return NodeAgent(
        config, ids,
        placement=placement or [a.strip() for a in args.placement.split(",") if a.strip()]
        or None,
        interval_s=args.interval, agent_id=args.agent_id, gpus=parse_gpus(args.gpus),
        simulated=SimulatedGpuSource(control_file=args.simulated_faults),
        fan_out=not args.one_replica,
        channel_factory=transport.channel_factory(config.security, "agent"),
        replicas=None if discovery is None else lambda: _catalog_placement(discovery),
        discovery=discovery, deregister_on_stop=getattr(args, "deregister_on_stop", False))


async def _catalog_placement(discovery: Any) -> list[str]:
    """Placement replicas from the Consul catalog (each replica by its own address, so every
    one gets the telemetry); empty when Consul cannot say."""
    try:
        found: list[str] = await discovery.placement_endpoints()
    except SwitchyardError as exc:
        structlog.get_logger("switchyard.agent").warning(
            "agent.placement_catalog_unreachable", error=exc.message,
            action="using --placement / the configured placement")
        return []
    return found


async def _run(args: argparse.Namespace) -> None:
    env = dict(os.environ)
    config, _ = agent_config(args, env)
    discovery = open_discovery(config, config.consul) if config.discovery == "consul" else None
    # With placement.shards the agent reports each backend to its region's shard (from the
    # config); one flat catalog list would send every backend to every shard.
    placement = (await _catalog_placement(discovery)
                 if discovery is not None and not config.placement.shards else [])
    agent = build_agent(args, env, placement=placement, discovery=discovery)
    metrics = None
    if args.metrics_port:
        try:
            metrics, port = serve_metrics(agent, args.metrics_port, args.metrics_host)
        except OSError as exc:
            raise ConfigError(f"--metrics-port {args.metrics_port}: cannot listen on "
                              f"{args.metrics_host}:{args.metrics_port} ({exc.strerror}); "
                              "is another process using it?") from exc
        structlog.get_logger("switchyard.agent").info(
            "agent.metrics_listening", address=f"{args.metrics_host}:{port}")
    await agent.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await agent.stop()
    if metrics is not None:
        metrics.shutdown()


def run(args: argparse.Namespace) -> int:
    """Run the agent until SIGINT/SIGTERM; 2 on a configuration or start-up error."""
    try:
        asyncio.run(_run(args))
    except SwitchyardError as exc:  # logged for the log pipeline, said for the operator
        structlog.get_logger("switchyard.agent").error("agent.failed", error=exc.message)
        print(f"switchyard agent: {exc.message}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.log_level)
    return run(args)


