"""``switchyard drill <scenario>``: run one drill (or ``--all``) and print/write the report.

By default the drill starts its own private copy of the mesh in ``--config`` on free ports
(a temporary run directory), so it never disturbs a mesh you are using; ``--attach`` drills
the mesh a ``switchyard up --config …`` is already running (pids from its ``pids.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

from placement.errors import SwitchyardError
from services.cli_errors import Unreachable, more_than_zero, positive
from services.config import load_config
from services.drills.report import DrillReport
from services.drills.runner import run_drill, stderr_progress
from services.drills.sandbox import sandbox_config
from services.drills.scenarios import SCENARIOS
from services.drills.streams import KILL_STREAMS, StreamDrillReport, drill_mesh
from services.serving import exit_on_sigterm
from services.up import Mesh


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The drill options (``--config`` is added by the caller's common options)."""
    p.add_argument("scenario", nargs="?", choices=sorted([*SCENARIOS, KILL_STREAMS]),
                   help="what to break (omit with --all); kill-streams: SIGKILL the backend "
                        "serving most of N concurrent LLM streams, count streams lost and "
                        "tokens missing or duplicated")
    p.add_argument("--all", action="store_true", help="run every scenario on one mesh")
    p.add_argument("--duration", type=more_than_zero, default=30.0,
                   help="seconds of load, split over before/during/after (default 30)")
    p.add_argument("--rate", type=more_than_zero, default=40.0, help="calls per second (default 40)")
    p.add_argument("--deadline", type=more_than_zero, default=2.0,
                   help="gRPC deadline of every call, seconds (default 2)")
    p.add_argument("--slo-ms", type=more_than_zero, default=None,
                   help="x-slo-ms header on every call (default: the scenario's)")
    p.add_argument("--json", default="", help="also write the report(s) as JSON here")
    p.add_argument("--attach", action="store_true",
                   help="drill the mesh already running from --config (switchyard up)")
    p.add_argument("--engine", choices=["python", "envoy"], default=None,
                   help="run the private mesh's edges on this engine ([edge] engine; default: "
                        "the config's)")
    p.add_argument("--streams", type=positive, default=8,
                   help="kill-streams: concurrent LLM streams (default 8)")
    p.add_argument("--tokens", type=positive, default=200,
                   help="kill-streams: tokens each stream asks for (default 200)")


def drill_main(args: argparse.Namespace) -> int:
    """Run the drill(s) the parsed ``args`` ask for; exit status 1 when any drill failed
    (a call failed, a check failed or nothing was checked, or the fault went unobserved)."""
    if bool(args.all) == bool(args.scenario):  # neither, or both: said before a mesh starts
        what = "pass --all or a scenario, not both" if args.all else "name a scenario or pass --all"
        print(f"switchyard drill: {what} ({', '.join(sorted([*SCENARIOS, KILL_STREAMS]))})",
              file=sys.stderr)
        return 2
    json_path = pathlib.Path(args.json or ".").absolute()
    if args.json and (json_path.is_dir() or not (json_path.parent.is_dir()
                                                 and os.access(json_path.parent, os.W_OK))):
        why = ("is a directory" if json_path.is_dir() else
               f"is in {json_path.parent}, not a directory this user can write")
        print(f"switchyard drill: --json {args.json} {why} (checked before the drill, not "
              "after it)\n  next: pass --json a file path in an existing, writable directory",
              file=sys.stderr)
        return 2
    names = [*SCENARIOS, KILL_STREAMS] if args.all else [args.scenario]
    # SIGTERM, like Ctrl-C, unwinds: a private mesh is stopped, an attached one's fault undone
    exit_on_sigterm()
    if args.attach:
        from services.drills.mesh import attach

        cfg = load_config(args.config, env=dict(os.environ))
        mesh, path, tmp = attach(cfg, args.config), args.config, None
    else:
        tmp = tempfile.TemporaryDirectory(prefix="switchyard-drill-")
        engine = getattr(args, "engine", None)
        path = str(sandbox_config(args.config, tmp.name,
                                  overrides={"edge": {"engine": engine}} if engine else None))
        cfg = load_config(path)
        mesh = Mesh(cfg, path)
        print(f"starting a private mesh from {args.config} on free ports "
              f"(run dir {cfg.run_dir})", file=sys.stderr, flush=True)
    reports: list[DrillReport | StreamDrillReport] = []
    try:  # a Ctrl-C or SIGTERM while the private mesh starts stops what had started
        if not args.attach:
            mesh.start()
        for name in names:
            if name == KILL_STREAMS:  # LLM streams: its own shape (services/drills/streams.py)
                reports.append(drill_mesh(mesh, streams=args.streams, max_tokens=args.tokens,
                                          progress=stderr_progress))
                continue
            reports.append(run_drill(cfg, path, name, args.duration, args.rate, mesh=mesh,
                                     deadline_s=args.deadline, slo_ms=args.slo_ms,
                                     undo_interrupted=args.attach))  # a private one is stopped
            print(file=sys.stderr)
    finally:
        if not args.attach:
            mesh.stop()
            if tmp is not None:
                tmp.cleanup()
    for r in reports:
        print(r.table(), end="\n\n")
    if args.json:
        data = [r.to_dict() for r in reports]
        pathlib.Path(args.json).write_text(json.dumps(data if args.all else data[0], indent=2))
        print(f"wrote {args.json}")
    return 0 if all(r.passed for r in reports) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m services.drills", description=__doc__)
    p.add_argument("--config", default="examples/mesh.toml", help="mesh TOML file")
    add_arguments(p)
    from services.logs import configure

    configure("warning")
    try:
        return drill_main(p.parse_args(argv))
    except SwitchyardError as exc:  # as `switchyard drill` answers: one line, exit 2 or 3
        print(f"drill: {exc.message}", file=sys.stderr)
        return 2
    except Unreachable as exc:
        print(f"drill: {exc.message}", file=sys.stderr)
        return 3
