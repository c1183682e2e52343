"""A hostile operator against ``switchyard`` and the mesh file: every mistake is a clear
message naming what is wrong and what to do next, exit code 2, never a traceback; nothing is
started when ``switchyard up`` cannot run. In-process through ``cli.main`` (fast)."""

from __future__ import annotations

import argparse
import pathlib
import socket

import pytest

from services import cli
from services.drills.sandbox import dumps_toml
from services.ports import free_ports
from tests.mesh_harness import mesh_config


@pytest.fixture(autouse=True)
def keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """``main`` configures process-wide logging onto the (captured) stderr: not in tests."""
    monkeypatch.setattr(cli, "configure", lambda *_a, **_k: None)


def up_mesh(tmp_path: pathlib.Path) -> dict:  # type: ignore[type-arg]
    """The harness mesh as a dict ``switchyard up`` accepts: its port-0 servers (placement,
    edges: in-process tests bind any free port) given free ports, as up needs them."""
    raw = mesh_config(tmp_path).model_dump(mode="json", exclude_none=True)
    zero = [e for e in raw["edges"] if e["port"] == 0]
    ports = free_ports(len(zero) + 1)
    raw["placement"]["port"] = ports.pop()
    for e, port in zip(zero, ports, strict=True):
        e["port"] = port
    return raw


def mesh_file(tmp_path: pathlib.Path, edit=None) -> pathlib.Path:  # type: ignore[no-untyped-def]
    """The harness mesh (free ports) as a TOML file, ``edit`` applied to its dict first."""
    raw = up_mesh(tmp_path)
    if edit is not None:
        edit(raw)
    path = tmp_path / "mesh.toml"
    path.write_text(dumps_toml(raw))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def test_config_that_is_a_directory(tmp_path: pathlib.Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "status", "--config", str(tmp_path))
    assert code == 2
    assert f"config file {tmp_path} is a directory, not a file; pass --config PATH" in err


def test_config_that_is_not_toml_names_the_line(tmp_path: pathlib.Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mesh.toml"
    path.write_text("[placement]\nport = \n")
    code, err = run(capsys, "status", "--config", str(path))
    assert code == 2
    assert "not valid TOML" in err and "line 2" in err


@pytest.mark.parametrize(("table", "typo", "known"), [
    (None, "rnu_dir", "run_dir"), ("placement", "prot", "port"),
    ("models", "default_slo_msx", "default_slo_ms")])
def test_unknown_key_is_named_with_the_closest_known_one(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], table: str | None,
        typo: str, known: str) -> None:
    def edit(raw: dict) -> None:  # type: ignore[type-arg]
        where = raw if table is None else raw[table]
        where = where[0] if isinstance(where, list) else where
        where[typo] = where.pop(known, 1)
    code, err = run(capsys, "status", "--config", str(mesh_file(tmp_path, edit)))
    assert code == 2
    assert f"unknown key {typo!r}; did you mean {known!r}?" in err
    assert "Extra inputs" not in err


@pytest.mark.parametrize(("value", "says"), [
    ("abc", "backends[0].grpc_port: Input should be a valid integer"),
    (-1, "backends[0].grpc_port: Input should be greater than or equal to 0 (got -1)"),
    (70000, "backends[0].grpc_port: Input should be less than or equal to 65535 (got 70000)")])
def test_wrong_type_or_range_names_the_key_and_the_value(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], value: object,
        says: str) -> None:
    def edit(raw: dict) -> None:  # type: ignore[type-arg]
        raw["backends"][0]["grpc_port"] = value
    code, err = run(capsys, "status", "--config", str(mesh_file(tmp_path, edit)))
    assert code == 2
    assert says in err and repr(value) in err


def test_slo_zero_names_the_key(tmp_path: pathlib.Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    def edit(raw: dict) -> None:  # type: ignore[type-arg]
        raw["models"][0]["default_slo_ms"] = 0
    code, err = run(capsys, "status", "--config", str(mesh_file(tmp_path, edit)))
    assert code == 2
    assert "models[0].default_slo_ms: Input should be greater than 0 (got 0)" in err


def test_up_refuses_two_servers_on_one_port(tmp_path: pathlib.Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    def edit(raw: dict) -> None:  # type: ignore[type-arg]
        raw["backends"][1]["grpc_port"] = raw["backends"][0]["grpc_port"]
    path = mesh_file(tmp_path, edit)
    code, err = run(capsys, "up", "--config", str(path))
    assert code == 2
    assert ("backends[1].grpc_port (central-cheap) and backends[0].grpc_port (east-fast) are "
            "both configured on port") in err
    assert not (tmp_path / "run" / "pids.json").exists()  # nothing was started


def test_up_names_a_port_another_process_holds(tmp_path: pathlib.Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]

        def edit(raw: dict) -> None:  # type: ignore[type-arg]
            raw["placement"]["port"] = port
        path = mesh_file(tmp_path, edit)
        code, err = run(capsys, "up", "--config", str(path))
    assert code == 2
    assert (f"port {port} on 127.0.0.1 is already in use by another process; "
            "placement.port needs it") in err
    assert f"or change placement.port in {path}" in err
    assert not (tmp_path / "run" / "pids.json").exists()


def test_up_names_every_port_other_processes_hold_at_once(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Another mesh on the file's ports: every port it holds is named in one run (the old
    check named the first, so an operator moved them one `switchyard up` at a time), with how
    to run beside it."""
    with socket.socket() as a, socket.socket() as b:
        for held in (a, b):
            held.bind(("127.0.0.1", 0))
            held.listen()
        ports = [a.getsockname()[1], b.getsockname()[1]]

        def edit(raw: dict) -> None:  # type: ignore[type-arg]
            raw["placement"]["port"], raw["edges"][0]["port"] = ports
        path = mesh_file(tmp_path, edit)
        code, err = run(capsys, "up", "--config", str(path))
    assert code == 2
    assert "2 of the " in err and " ports this mesh listens on are already in use" in err
    assert f"    {ports[0]:<6} placement.port\n" in err
    assert f"    {ports[1]:<6} edges[0].port (" in err
    assert f"To run beside it, copy {path}, give those keys other ports" in err
    assert not (tmp_path / "run" / "pids.json").exists()


def test_up_with_a_run_dir_it_cannot_write(tmp_path: pathlib.Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("")

    def edit(raw: dict) -> None:  # type: ignore[type-arg]
        raw["run_dir"] = str(tmp_path / "a-file" / "run")
    path = mesh_file(tmp_path, edit)
    code, err = run(capsys, "up", "--config", str(path))
    assert code == 2
    assert f"run_dir {tmp_path / 'a-file' / 'run'} is not writable" in err
    assert f"set run_dir in {path} (or SWITCHYARD_RUN_DIR)" in err


@pytest.mark.parametrize("command", [["plan"], ["explain", "summarize"]])
def test_placement_not_running(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
                               command: list[str]) -> None:
    port = free_ports(1)[0]  # nothing listens there
    path = mesh_file(tmp_path)
    code, err = run(capsys, *command, "--config", str(path), "--placement", f"127.0.0.1:{port}")
    assert code == 3
    assert f"cannot reach placement at 127.0.0.1:{port}" in err
    assert f"Start it with `switchyard up --config {path}`" in err  # the mesh of that file
    assert "Traceback" not in err


def test_drill_with_an_unknown_scenario_lists_the_known(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["drill", "kill-everything"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'kill-everything'" in err and "'kill-backend'" in err


@pytest.mark.parametrize(("argv", "said"), [
    ([], "name a scenario or pass --all (cloud-outage, "),
    (["--all", "kill-backend"], "pass --all or a scenario, not both ("),  # ran --all's mesh
    (["kill-backend", "--json", "{tmp}"], "--json {tmp} is a directory"),  # said at the end
    (["kill-backend", "--json", "{tmp}/no/x.json"], "is in {tmp}/no, not a directory"),
])
def test_drill_arguments_are_refused_before_a_mesh_starts(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], argv: list[str], said: str) -> None:
    """Each was found only after a private mesh started (or, for --json, after the whole
    drill ran, its report file lost); the scenario list names kill-streams too."""
    import tempfile

    def started(*_a: object, **_k: object) -> None:
        raise AssertionError("a private mesh was started")
    monkeypatch.setattr(tempfile, "TemporaryDirectory", started)
    code, err = run(capsys, "drill", *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2
    assert said.format(tmp=tmp_path) in err
    if not argv or argv[0] == "--all":
        assert "kill-backend, kill-streams, placement-outage" in err


def subcommands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in cli.parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_subcommand_help_says_what_it_does_and_each_option(name: str) -> None:
    sp = subcommands()[name]
    assert sp.description, f"switchyard {name} --help has no description"
    bare = [a.dest for a in sp._actions if not a.help]
    assert not bare, f"switchyard {name} --help: options without help: {bare}"


@pytest.mark.parametrize("argv", [["placement"], ["edge", "--id", "edge-east"]])
def test_a_server_whose_port_is_held_says_so(tmp_path: pathlib.Path,
                                             capsys: pytest.CaptureFixture[str],
                                             argv: list[str]) -> None:
    path = mesh_file(tmp_path)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        code, err = run(capsys, *argv, "--config", str(path), "--port", str(port))
    assert code == 2  # was grpc's RuntimeError "Failed to bind" traceback
    assert f"port {port} on 127.0.0.1 is already in use by another process; --port needs it" in err
    assert "or pass another --port" in err


@pytest.mark.parametrize("argv", [["status", "--placement", "127.0.0.1:99999"],
                                  ["status", "--placement", "no-port"],
                                  ["demo", "--calls", "0"], ["up", "--calls", "-5"]])
def test_malformed_flags_are_refused_by_argparse(capsys: pytest.CaptureFixture[str],
                                                 argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:  # 99999 was wrapped to another port; --calls
        cli.main(argv)                          # 0 or less was a ZeroDivisionError traceback
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {argv[1]}: {argv[2]!r} is not" in err


def test_unresolvable_placement_is_unreachable_not_a_refusal(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "status", "--config", str(mesh_file(tmp_path)), "--placement",
                    "no-such-host.invalid:50050")
    assert code == 3
    assert "cannot reach placement at no-such-host.invalid:50050" in err
    assert "see the placement log" not in err


def test_stream_explain_names_the_edge_it_could_not_reach(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_ports(1)[0]

    def edit(raw: dict) -> None:  # type: ignore[type-arg]
        raw["edges"][0]["port"] = port
    code, err = run(capsys, "explain", "generate", "--stream", "--config",
                    str(mesh_file(tmp_path, edit)))
    assert code == 3
    assert f"cannot reach edge at 127.0.0.1:{port}" in err  # was "placement"
    assert "--edge ID" in err


def test_demo_without_a_running_mesh_says_so(tmp_path: pathlib.Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    port = free_ports(1)[0]

    def edit(raw: dict) -> None:  # type: ignore[type-arg]
        raw["edges"][0]["port"] = port
    path = mesh_file(tmp_path, edit)
    code, err = run(capsys, "demo", "--calls", "2", "--config", str(path))
    assert code == 3  # an edge not reached (README), was 2; before that a table of failed calls, 0
    assert f"edge edge-east at 127.0.0.1:{port} does not answer" in err
    assert f"start it with `switchyard up --config {path}`" in err


def test_up_without_its_price_file_says_so_before_starting(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = mesh_file(tmp_path)
    (tmp_path / "prices.toml").unlink()
    code, err = run(capsys, "up", "--config", str(path))
    assert code == 2  # was: the backends started, then placement died on it
    assert f"price file {tmp_path / 'prices.toml'} does not exist" in err
    assert not (tmp_path / "run" / "pids.json").exists()


def test_sharded_status_with_no_replica_answering_is_an_error(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    ports = free_ports(2)  # nothing listens on either

    def edit(raw: dict) -> None:  # type: ignore[type-arg]
        raw["placement"]["shards"] = [
            {"replicas": [f"127.0.0.1:{ports[0]}"], "regions": ["r-east", "r-west"]},
            {"replicas": [f"127.0.0.1:{ports[1]}"], "regions": ["r-central"]}]
    path = mesh_file(tmp_path, edit)
    code = cli.main(["status", "--config", str(path)])
    out, err = capsys.readouterr()
    assert code == 3  # was 0: a status that listed two dead shards exited as if healthy
    assert f"no replica answers (127.0.0.1:{ports[1]})" in out
    assert "2 of 2 placement shards have no replica answering" in err
    assert f"Start it with `switchyard up --config {path}`" in err


@pytest.mark.parametrize(("flag", "value"), [("--duration", "-1"), ("--rate", "0"),
                                             ("--deadline", "nan"), ("--streams", "0")])
def test_drill_numbers_are_refused_before_a_mesh_starts(
        capsys: pytest.CaptureFixture[str], flag: str, value: str) -> None:
    with pytest.raises(SystemExit) as exited:  # --duration -1 was a ValueError traceback
        cli.main(["drill", "kill-backend", flag, value])  # after a private mesh started
    assert exited.value.code == 2
    assert f"argument {flag}: {value!r} is not" in capsys.readouterr().err


def test_certs_into_a_file_is_a_path_error_not_a_traceback(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("")
    code, err = run(capsys, "certs", "--dir", str(tmp_path / "a-file"))
    assert code == 2  # was FileExistsError's traceback
    assert f"switchyard: {tmp_path / 'a-file'}: File exists" in err
    assert "next: check that the path" in err


def test_explain_with_an_unknown_region_lists_the_known(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_ports(1)[0]  # nothing listens: the region is refused before any call
    code, err = run(capsys, "explain", "summarize", "--region", "r-mars", "--config",
                    str(mesh_file(tmp_path)), "--placement", f"127.0.0.1:{port}")
    assert code == 2  # was "cannot reach placement" (exit 3): the wrong thing to fix
    assert "--region 'r-mars' is not a region of" in err
    assert "known: r-central, r-east, r-west" in err


def test_stream_explain_on_envoy_edges_asks_their_slow_path(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An Envoy edge answers no EdgeAdmin (it was UNIMPLEMENTED with no message, "see the
    placement log", exit 3): explain --stream asks the slow path its running bootstrap names."""
    import json
    from concurrent import futures

    import grpc

    from services.api.switchyard.v1 import edge_pb2_grpc, placement_pb2

    asked: list[placement_pb2.ExplainRequest] = []

    class SlowPath(edge_pb2_grpc.EdgeAdminServicer):
        def Explain(self, request, context):  # type: ignore[no-untyped-def]
            asked.append(request)
            return placement_pb2.ExplainResponse(model=request.model, edge_region="r-east",
                                                 profile="cheapest", summary="asked")

    server = grpc.server(futures.ThreadPoolExecutor(2))
    edge_pb2_grpc.add_EdgeAdminServicer_to_server(SlowPath(), server)
    slow_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        def edge(raw: dict) -> None:  # type: ignore[type-arg]
            raw["edge"] = {**raw.get("edge", {}), "engine": "envoy"}
        path = mesh_file(tmp_path, edge)
        from services.config import load_config

        cfg = load_config(path)
        envoy = cfg.path(cfg.run_dir) / "envoy"
        envoy.mkdir(parents=True)
        first = cfg.edges[0]
        (envoy / f"{first.id}.ads.json").write_text(json.dumps(
            {"node": {"id": first.id, "metadata": {"slow_path_port": slow_port}}}))
        code = cli.main(["explain", "generate", "--stream", "--tpot-ms", "5", "--config",
                         str(path), "--edge", first.id])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert asked and asked[0].stream.tpot_ms == 5
        assert f"stream at edge 127.0.0.1:{slow_port} (r-east)" in captured.out
        assert "asking each one's slow path" in captured.err
        (envoy / f"{first.id}.ads.json").unlink()  # not running: named, unreachable (exit 3)
        code = cli.main(["explain", "generate", "--stream", "--config", str(path), "--edge",
                         first.id])
        err = capsys.readouterr().err
        assert code == 3
        assert f"no running bootstrap for {first.id} ({envoy / first.id}.ads.json)" in err
        assert f"start the mesh of {path}" in err
    finally:
        server.stop(None)


@pytest.mark.parametrize(("argv", "said"), [
    (["--stream", "--prompt-tokens", "-5"],  # was protobuf's ValueError traceback
     "argument --prompt-tokens: '-5' is not a whole number of at least 1"),
    (["--stream", "--prompt-tokens", str(2**32)], f"'{2**32}' is over 4294967295 tokens")])
def test_explain_prompt_tokens_out_of_range_is_refused_by_argparse(
        capsys: pytest.CaptureFixture[str], argv: list[str], said: str) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["explain", "generate", *argv, "--placement", "127.0.0.1:1"])
    assert exited.value.code == 2
    assert said in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--ttft-ms", "400"], ["--prompt-tokens", "2000"],
                                  ["--session-id", "chat-7", "--edge", "edge-east"]])
def test_explain_stream_flags_without_stream_are_refused_not_ignored(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """They were ignored: a unary call's explanation came back as if it answered them."""
    code, err = run(capsys, "explain", "generate", *argv, "--config",
                    str(mesh_file(tmp_path)), "--placement", "127.0.0.1:1")
    assert code == 2
    flags = ", ".join(a for a in argv if a.startswith("--"))
    assert f"switchyard: {flags} describe an LLM stream: add --stream" in err
