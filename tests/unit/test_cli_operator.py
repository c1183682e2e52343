"""An operator's first day, from the README: every ``switchyard`` command the README shows
parses as written, every subcommand's ``--help`` ends with examples that parse too and
states explain's defaults, `plan` against a placement without the capacity loop says so
(exit code 3), and a drill's private mesh takes no port of the ``switchyard up``
beside it (an edge that does not answer ``demo``, exit code 3: test_cli_hostile).
In-process, no mesh started."""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import sys
import tomllib
from concurrent import futures

import grpc
import pytest

from services import cli
from services.cli_help import EXAMPLES, EXPLAIN_DEFAULTS, prog, try_line
from services.drills.sandbox import sandbox_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
SUBCOMMANDS = ("up", "placement", "edge", "drill", "agent", "status", "explain", "drain", "plan",
               "demo", "certs")


def readme_commands() -> list[str]:
    """Each ``switchyard …`` line of the README's bash blocks, continuations joined and
    comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.split("#")[0].strip() for line in lines
            if line.strip().startswith("switchyard ")]


def parses(command: str) -> None:
    argv = shlex.split(command)[1:]  # without "switchyard"
    args = cli.parser().parse_args(argv)  # argparse exits 2 on an unknown flag or value
    assert args.command == argv[0]


def test_the_readme_names_commands_and_each_parses() -> None:
    commands = readme_commands()
    assert {c.split()[1] for c in commands} >= {"status", "explain", "drain", "drill", "plan",
                                                "up", "certs"}
    for command in commands:
        parses(command)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_help_ends_with_examples_that_parse(
        name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.parser().parse_args([name, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "\nexamples:\n" in out
    for command, what in EXAMPLES[name]:
        assert command in out and what in out
        parses(command)


def test_explain_help_gives_each_hint_flags_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["explain", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    for flag, default in EXPLAIN_DEFAULTS.items():
        assert f"--{flag.replace('_', '-')}" in out
        assert f"(default: {default})" in out


def test_a_drill_mesh_takes_no_port_of_the_default_mesh(tmp_path: pathlib.Path) -> None:
    """`switchyard drill kill-backend` beside `switchyard up`: the private mesh's node agent
    kept [agent] metrics_port (9153), which the running mesh's agent holds."""
    source = ROOT / "examples" / "mesh.toml"
    default = tomllib.loads(source.read_text())
    drill = tomllib.loads(sandbox_config(source, tmp_path).read_text())

    def ports(raw: dict) -> set[int]:  # type: ignore[type-arg]
        found = {raw["agent"]["metrics_port"], raw["placement"]["port"],
                 raw["placement"]["metrics_port"]}
        for b in raw["backends"]:
            found |= {b["grpc_port"], b["metrics_port"]}
        for e in raw["edges"]:
            found |= {e["port"], e["metrics_port"]}
        return found - {0}

    assert drill["agent"]["metrics_port"] not in (0, default["agent"]["metrics_port"])
    assert not ports(drill) & ports(default)


def test_plan_against_a_placement_without_the_capacity_loop_says_so(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The default mesh's placement serves no Capacity service: `switchyard plan` said
    "answered UNIMPLEMENTED: Method not found! next: see the placement log for details"."""
    monkeypatch.setattr(cli, "configure", lambda *_a, **_k: None)  # no process-wide logging
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))  # a real gRPC server
    port = server.add_insecure_port("127.0.0.1:0")  # serving no service at all
    server.start()
    try:
        code = cli.main(["plan", "--config", str(ROOT / "examples" / "mesh.toml"),
                         "--placement", f"127.0.0.1:{port}"])
    finally:
        server.stop(None)
    err = capsys.readouterr().err
    assert code == 3
    assert f"placement at 127.0.0.1:{port} runs no capacity loop" in err
    assert "switchyard plan --config examples/mesh-capacity.toml" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("config", "flag"), [
    ("examples/mesh.toml", ""), ("examples/sharded.toml", " --config examples/sharded.toml"),
    ("conf/my mesh.toml", " --config 'conf/my mesh.toml'")])
def test_up_suggests_commands_that_ask_the_mesh_it_started(config: str, flag: str) -> None:
    """`switchyard up --config X` said "try: switchyard status | switchyard explain summarize
    --region R": without --config X both asked examples/mesh.toml's placement, and pasted,
    the `|` ran them as a pipe. One command a line now."""
    line = try_line(config, "generate", "aws-us-east-1", ".venv/bin/switchyard")
    assert line == (f"  try: .venv/bin/switchyard status{flag}\n"
                    f"       .venv/bin/switchyard explain generate --region aws-us-east-1{flag}")
    for command in line.removeprefix("  try: ").splitlines():
        argv = shlex.split(command)
        assert argv[0] == ".venv/bin/switchyard"
        assert cli.parser().parse_args(argv[1:]).config == config


def test_the_commands_up_suggests_are_typed_as_this_shell_finds_switchyard(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`bash scripts/demo.sh` runs .venv/bin/switchyard with the venv not activated: its
    "try: switchyard status" was "command not found". Named by its path unless PATH finds
    it."""
    bin_ = tmp_path / "venv" / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "switchyard").write_text("#!/bin/sh\n")
    (bin_ / "switchyard").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_ / "python"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert prog() == "venv/bin/switchyard"
    assert try_line("examples/mesh.toml", "summarize", "").startswith(
        "  try: venv/bin/switchyard status\n")
    monkeypatch.setenv("PATH", f"{bin_}:/usr/bin:/bin")  # the venv activated
    assert prog() == "switchyard"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # not under the venv's directory: in full
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert prog() == str(bin_ / "switchyard")


@pytest.mark.parametrize(("kind", "target", "known"), [
    ("region", "mars-1", "aws-us-east-1, aws-us-west-2, gcp-europe-west4, gcp-us-central1"),
    ("cloud", "azure", "aws, gcp")])
def test_drain_of_a_region_or_cloud_not_in_the_config_is_said_without_placement(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kind: str,
        target: str, known: str) -> None:
    """As explain's --region: said from the file, exit 2, whether placement runs or not (it
    was "cannot reach placement", exit 3, with none running)."""
    monkeypatch.setattr(cli, "configure", lambda *_a, **_k: None)
    config = str(ROOT / "examples" / "mesh.toml")
    code = cli.main(["drain", kind, target, "--config", config, "--placement", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{kind} {target!r} is not a {kind} of {config}; known: {known}" in err


def test_plan_with_shards_asks_each_shard_not_the_placement_address(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`switchyard plan --config examples/sharded.toml` asked [placement]'s host:port, which no
    shard lists: "cannot reach placement at 127.0.0.1:50050, is the mesh running?" with the
    mesh running. Each shard's replica is asked, as `status` does; a change names one."""
    from grpc_health.v1 import health, health_pb2_grpc

    monkeypatch.setattr(cli, "configure", lambda *_a, **_k: None)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))  # healthy, no Capacity
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    text = (ROOT / "examples" / "sharded.toml").read_text()
    raw = tomllib.loads(text)
    primary = raw["placement"]["shards"][0]["replicas"][0]  # its standby: not listening
    text = text.replace(f'"{primary}"', f'"127.0.0.1:{port}"', 1)
    config = tmp_path / "sharded.toml"
    config.write_text(text)
    try:
        code = cli.main(["plan", "--config", str(config)])
        out, err = capsys.readouterr()
        assert code == 3, err
        assert out.startswith("== placement.shards[0] (regions ")
        assert f"at 127.0.0.1:{port}" in out
        assert f"placement at 127.0.0.1:{port} runs no capacity loop" in err
        code = cli.main(["plan", "--config", str(config), "--approve"])
        err = capsys.readouterr().err
        assert code == 2
        assert "--replan and --approve go to one replica: name it with --placement" in err
        assert f"shards[0]: 127.0.0.1:{port}, " in err
    finally:
        server.stop(None)


@pytest.mark.parametrize(("name", "rtt"), [
    ("mesh.toml", "EMULATED inter-region RTT"),
    ("mesh-capacity.toml", "no inter-region RTT: [wan] emulate = false")])
def test_the_demo_labels_its_numbers_by_the_mesh_it_ran_on(name: str, rtt: str) -> None:
    """The routing section's summary said "latency includes EMULATED inter-region RTT" on
    examples/mesh-capacity.toml's mesh too, which emulates none."""
    from services.config import load_config
    from services.demo import labels

    cfg = load_config(ROOT / "examples" / name)
    said = labels(cfg)
    assert rtt in said and "EMULATED accelerator speed" in said
    assert f"list prices from {os.path.relpath(ROOT / 'examples' / 'prices.toml')}" in said


def test_the_top_level_help_reads_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    """`switchyard --help` began "``switchyard``: run and operate the mesh." (the module's
    reST docstring)."""
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "\nswitchyard: run and operate the mesh." in out and "``" not in out
