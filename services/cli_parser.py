"""``switchyard``'s command line: every subcommand's flags, their defaults and the examples
under each ``--help`` (``services/cli_help.py``); the commands themselves are in
``services/cli.py``, which passes them in."""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Callable, Mapping

from services.cli_errors import address, client_spec, positive, prompt_tokens, san
from services.cli_help import DEFAULT_CONFIG, EXPLAIN_DEFAULTS, EXPLAIN_FLAGS, epilog
from services.render import STATUS_LEGEND

Command = Callable[[argparse.Namespace], int]


def build_parser(description: str, commands: Mapping[str, Command]) -> argparse.ArgumentParser:
    """``switchyard``'s flags; ``commands``: each subcommand's function by name (set as
    ``fn``; ``certs`` brings its own)."""
    p = argparse.ArgumentParser(prog="switchyard", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="JSON log level on stderr (default info)")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, epilog=epilog(name),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"mesh TOML file (default: {DEFAULT_CONFIG})")
        sp.set_defaults(fn=commands[name])
        return sp

    up = add("up", "run the embedded mesh: Triton backends, WAN relay, placement, agent, edges")
    up.add_argument("--demo", action="store_true", help="run the demo workload once it is up")
    up.add_argument("--calls", type=positive, default=400, help="demo calls per run (default 400)")
    up.add_argument("--exit-after-demo", action="store_true",
                    help="stop the mesh after the demo instead of waiting for Ctrl-C")
    pl = add("placement", "run one placement replica")
    pl.add_argument("--port", type=int, default=None,
                    help="override [placement] port (default: the config's)")
    pl.add_argument("--shard-address", default="",
                    help="with placement.shards: the host:port the shards list this replica "
                         "as, when not its own (e.g. its shard's Kubernetes Service)")
    ed = add("edge", "run one edge router")
    ed.add_argument("--id", required=True, help="edge id from [[edges]]")
    ed.add_argument("--port", type=int, default=None,
                    help="override the edge's port (default: its port in [[edges]])")
    ed.add_argument("--placement", default="", type=address,
                    help="placement replicas host:port,… (default: from the config)")
    from services.drills.cli import add_arguments as drill_arguments

    drill_arguments(add("drill", "failover drill: break part of a (private, by default) mesh "
                                 "under load and report what callers saw"))
    ag = add("agent", "run the node agent for some backends (NVML, or labelled simulated "
                      "telemetry without a GPU)")
    from services.agent.cli import add_arguments as agent_arguments

    agent_arguments(ag)
    for name, help_ in (("status", "show backends, health and route tables"),
                        ("explain", "explain the routing of one call"),
                        ("drain", "drain, cordon or restore a backend, region or cloud"),
                        ("plan", "capacity plan: current vs proposed placement, $/hour, why; "
                                 "--approve applies it"),
                        ("demo", "run the demo workload against a running mesh")):
        sp = add(name, help_)
        if name != "demo":
            sp.add_argument("--placement", default="", type=address,
                            help="placement host:port (default: from the config)")
        if name == "explain":
            sp.add_argument("model", help="the logical model a caller names, e.g. summarize")
            sp.add_argument("--region", default="", help="edge region (default: first edge's)")
            for flag, header in EXPLAIN_FLAGS.items():
                sp.add_argument("--" + flag.replace("_", "-"), action="append",
                                help=f"as the {header} header, validated the same way "
                                     f"(default: {EXPLAIN_DEFAULTS[flag]})")
            from services.stream_explain import add_arguments as stream_arguments

            stream_arguments(sp)
            for action in sp._actions:  # checked by argparse: exit code 2, its usage
                if action.dest == "prompt_tokens":  # None: not given (explain refuses it
                    action.type = prompt_tokens     # without --stream), then its default
                    sp.set_defaults(prompt_tokens_default=action.default)
                    action.default = None
        if name == "status":
            sp.epilog = f"{sp.epilog}\n\n{STATUS_LEGEND}"
            sp.add_argument("--no-legend", action="store_true",
                            help="do not print the column legend after the tables")
        if name == "drain":
            sp.add_argument("kind", choices=["backend", "region", "cloud"],
                            help="what TARGET names")
            sp.add_argument("target", help="a backend id, region or cloud from the config")
            sp.add_argument("--undo", action="store_true", help="make it active again")
            sp.add_argument("--cordon", action="store_true",
                            help="cordon instead of drain: used only when nothing else can")
        if name == "demo":
            sp.add_argument("--calls", type=positive, default=400,
                            help="calls per run (default 400)")
        if name == "plan":
            sp.add_argument("--replan", action="store_true",
                            help="solve a fresh plan now (applied at once if apply = auto)")
            sp.add_argument("--approve", nargs="?", const="", default=None, metavar="PLAN_ID",
                            help="apply the pending plan (its id, default: the pending one)")
    from services.security.certs import add_parser as certs_parser

    certs = certs_parser(sub)
    certs.description = ("create a development CA and certificates for [security] "
                         "(placement, edges, clients) in --dir")
    certs.formatter_class, certs.epilog = argparse.RawDescriptionHelpFormatter, epilog("certs")
    for action in certs._actions:  # checked by argparse: a bad one is exit code 2, its usage
        action.type = {"client": client_spec, "host": san}.get(action.dest, action.type)
    certs.set_defaults(fn=_reusing_a_ca(certs.get_default("fn")))
    return p


def _reusing_a_ca(run: Command) -> Command:
    """``certs``, which first checks the CA it is to reuse in --dir (unless --new-ca)."""
    def certs(args: argparse.Namespace) -> int:
        from services.cli_preflight import check_ca

        if not args.new_ca:
            check_ca(pathlib.Path(args.dir))
        return run(args)
    return certs
