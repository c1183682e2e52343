"""What ``switchyard <command> --help`` shows below the flags: examples an operator can run
as written (each against ``examples/mesh.toml`` unless it says ``--config``), and the
defaults of the flags whose default is not a literal (explain's hints are the edge's)."""

from __future__ import annotations

import os
import pathlib
import shlex
import shutil
import sys

DEFAULT_CONFIG = "examples/mesh.toml"

# One or more commands per subcommand, each with what it does; `switchyard up` first.
EXAMPLES: dict[str, tuple[tuple[str, str], ...]] = {
    "up": (("switchyard up", "run the mesh until Ctrl-C"),
           ("switchyard up --demo --exit-after-demo", "run the demo once, then stop"),
           ("switchyard up --config examples/sharded.toml", "placement in two shards")),
    "placement": (("switchyard placement --port 50060", "one more replica on another port"),),
    "edge": (("switchyard edge --id edge-us-east",
              "the edge of that id from [[edges]], on its port"),
             ("switchyard edge --id edge-us-east --placement 127.0.0.1:50050",
              "watching that placement replica")),
    "agent": (("switchyard agent --backends use1-h100,use1-t4 --metrics-port 9153",
               "report two backends of the config, /metrics on 9153"),),
    "drill": (("switchyard drill kill-backend", "SIGKILL a backend of a private mesh under load"),
              ("switchyard drill kill-backend --engine envoy", "the same through Envoy edges"),
              ("switchyard drill --all --json drills.json",
               "every scenario on one private mesh, reports also as JSON"),
              ("switchyard drill drain-backend --attach",
               "drill the mesh `switchyard up` runs")),
    "status": (("switchyard status", "placement of the config"),
               ("switchyard status --placement 127.0.0.1:50050 --no-legend",
                "another replica, tables only")),
    "explain": (("switchyard explain summarize --slo-ms 40", "a tight call from the first edge"),
                ("switchyard explain summarize --slo-ms 40 --profile fastest "
                 "--region gcp-europe-west4", "the baseline's pick, from Europe"),
                ("switchyard explain generate --stream --tpot-ms 5 --ttft-ms 400",
                 "an LLM stream, asked of an edge")),
    "drain": (("switchyard drain backend use1-t4", "no new calls there"),
              ("switchyard drain backend use1-t4 --undo", "active again"),
              ("switchyard drain cloud gcp --cordon", "used only when nothing else can")),
    "plan": (("switchyard plan --config examples/mesh-capacity.toml",
              "current vs proposed (needs [capacity] enabled)"),
             ("switchyard plan --config examples/mesh-capacity.toml --approve",
              "apply the pending plan")),
    "demo": (("switchyard demo --calls 100", "against a mesh `switchyard up` runs"),),
    "certs": (("switchyard certs --dir certs", "a CA and placement, edge, agent, admin "
                                               "certificates"),
              ("switchyard certs --dir certs --client tenant-acme=acme.tenant.local",
               "plus a tenant's client certificate")),
}

# explain's flags and the edge hint header each one stands for.
EXPLAIN_FLAGS = {"slo_ms": "x-slo-ms", "min_quality": "x-min-quality",
                 "max_cost_usd": "x-max-cost-usd", "allowed_regions": "x-allowed-regions",
                 "profile": "x-routing-profile"}

# explain's hint flags: the default each stands for (the edge's, README "Hints").
EXPLAIN_DEFAULTS = {
    "slo_ms": "the model's default_slo_ms",
    "min_quality": "0",
    "max_cost_usd": "no cap",
    "allowed_regions": "all; comma-separated",
    "profile": "routing.profile, cheapest unless the config says; or fastest",
}


def epilog(command: str) -> str:
    """The examples section of ``command``'s help ("" when it has none)."""
    rows = EXAMPLES.get(command, ())
    if not rows:
        return ""
    return "examples:\n" + "\n".join(f"  {cmd}\n      {what}" for cmd, what in rows)


def prog() -> str:
    """How an operator types ``switchyard`` in this shell: the bare name when PATH finds this
    install's, else its path (``scripts/demo.sh`` runs ``.venv/bin/switchyard`` without
    activating the venv, so a bare ``switchyard`` was "command not found")."""
    script = pathlib.Path(sys.executable).parent / "switchyard"
    found = shutil.which("switchyard")
    if not script.is_file() or (found and os.path.samefile(found, script)):
        return "switchyard"
    relative = os.path.relpath(script)
    return shlex.quote(str(script) if relative.startswith("..") else relative)


def up_command(config: str) -> str:
    """The ``switchyard up`` that starts the mesh of ``config`` (what a "next:" names)."""
    return ("switchyard up"
            + ("" if config == DEFAULT_CONFIG else f" --config {shlex.quote(config)}"))


def try_line(config: str, model: str, region: str, program: str | None = None) -> str:
    """What ``switchyard up`` suggests once the mesh is up: commands that ask this mesh, so
    ``--config`` when it is not the default (without it they asked the default file's
    placement, another mesh or none), one per line as this shell can type them (they were
    joined by ``|``, which a paste ran as a pipe, and named ``switchyard``, not on PATH)."""
    program = program or prog()
    flag = "" if config == DEFAULT_CONFIG else f" --config {shlex.quote(config)}"
    where = f" --region {region}" if region else ""
    return (f"  try: {program} status{flag}\n"
            f"       {program} explain {model}{where}{flag}")
