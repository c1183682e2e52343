"""``python -m services.agent``: run the node agent for some backends of a mesh file.

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

import structlog

from placement.errors import SwitchyardError
from services import logs
from services.agent.agent import NodeAgent
from services.agent.simulated import SimulatedGpuSource
from services.config import load_config
from services.discovery import open_discovery
from services.security import transport


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m services.agent",
        description="Switchyard node agent: registers this host's Triton backends with "
                    "placement and streams NVML (or, without a GPU, clearly SIMULATED) GPU "
                    "readings plus Triton statistics every interval.")
    p.add_argument("--config", required=True, help="mesh TOML file, e.g. examples/mesh.toml")
    p.add_argument("--backends", required=True,
                   help="comma-separated backend ids from the config that run on this host")
    p.add_argument("--interval", type=float, default=1.0,
                   help="seconds between telemetry reports (default: 1.0)")
    p.add_argument("--placement", default="",
                   help="comma-separated placement replicas host:port, tried in turn "
                        "(default: [placement] host:port and replicas from the config)")
    p.add_argument("--one-replica", action="store_true",
                   help="stream to one placement replica at a time (default: to every "
                        "replica, since replicas share no state)")
    p.add_argument("--agent-id", default=None, help="name in reports (default: agent-<host>)")
    p.add_argument("--gpus", default="",
                   help="backend=GPU indexes, e.g. 'use1-h100=0+1,use1-t4=2' "
                        "(default: i-th backend on GPU i, wrapping around)")
    p.add_argument("--simulated-faults", default=None, metavar="FILE",
                   help='JSON control file for simulated faults, e.g. {"use1-t4": ["ecc"]}; '
                        "used only when NVML is unavailable")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def _gpu_map(spec: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for item in filter(None, spec.split(",")):
        backend, _, gpus = item.partition("=")
        try:
            out[backend.strip()] = [int(g) for g in gpus.split("+")]
        except ValueError:
            raise SystemExit(f"--gpus {item!r}: expected BACKEND=INDEX[+INDEX...]") from None
    return out


async def _run(args: argparse.Namespace) -> None:
    config = load_config(args.config, env=dict(os.environ))
    agent = NodeAgent(
        config, [b.strip() for b in args.backends.split(",") if b.strip()],
        placement=[a.strip() for a in args.placement.split(",") if a.strip()] or None,
        interval_s=args.interval, agent_id=args.agent_id, gpu_map=_gpu_map(args.gpus),
        simulated=SimulatedGpuSource(control_file=args.simulated_faults),
        fan_out=not args.one_replica,
        channel_factory=transport.channel_factory(config.security, "agent"),
        discovery=open_discovery(config, config.consul) if config.discovery == "consul"
        else None)
    await agent.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await agent.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.log_level)
    try:
        asyncio.run(_run(args))
    except SwitchyardError as exc:
        structlog.get_logger("switchyard.agent").error("agent.failed", error=exc.message)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
