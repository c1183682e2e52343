"""``switchyard up`` with Envoy edges (``[edge] engine = "envoy"``) checks the ports they will
take as it does a Python edge's, before starting anything (services/cli_preflight.py): a port
another process holds, or one two servers are configured on, is exit 2 naming the key and what
takes it (the edge's Envoy listener, its slow path's metrics); the emulated-WAN relay's ports
(``wan.relay_base_port + k``, one per edge region and backend elsewhere, whatever the engine)
likewise. ``Mesh.start`` raises here, so a check that lets ``up`` through fails the test
without starting a mesh. On the old code the edge ports were checked already, in words that did
not say Envoy takes them, and the relay's ports were not checked (Mesh.start reached)."""

from __future__ import annotations

import pathlib
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from services import cli, up
from services.backends.wan import relay_routes
from services.config import load_config
from services.drills.sandbox import dumps_toml
from services.ports import free_ports
from tests.unit.test_cli_hostile import up_mesh


@pytest.fixture(autouse=True)
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "configure", lambda *_a, **_k: None)

    def start(self: up.Mesh) -> None:
        raise AssertionError("switchyard up started the mesh: the preflight let it through")
    monkeypatch.setattr(up.Mesh, "start", start)


@pytest.fixture
def held() -> Iterator[int]:
    """A port another process (this test's socket) listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


Edit = Callable[[dict[str, Any]], None]


def envoy_mesh(tmp_path: pathlib.Path, edit: Edit | None = None) -> pathlib.Path:
    """The harness mesh with Envoy edges (two of them, on free ports), ``edit`` applied."""
    raw = up_mesh(tmp_path)
    raw.setdefault("edge", {})["engine"] = "envoy"
    ports = free_ports(4)
    raw["edges"] = [{"id": "edge-east", "region": "r-east", "port": ports[0],
                     "metrics_port": ports[1]},
                    {"id": "edge-west", "region": "r-west", "port": ports[2],
                     "metrics_port": ports[3]}]
    if edit is not None:
        edit(raw)
    path = tmp_path / "mesh.toml"
    path.write_text(dumps_toml(raw))
    return path


def up_err(capsys: pytest.CaptureFixture[str], path: pathlib.Path) -> str:
    code = cli.main(["up", "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(("key", "what"), [("port", "its Envoy's listener"),
                                           ("metrics_port", "its slow path's metrics")])
def test_a_held_envoy_edge_port_is_named_with_what_takes_it(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], held: int, key: str,
        what: str) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["edges"][1][key] = held
    path = envoy_mesh(tmp_path, edit)
    err = up_err(capsys, path)
    needs = f"edges[1].{key} (edge-west: {what})"
    assert (f"port {held} on 127.0.0.1 is already in use by another process; {needs} needs "
            "it") in err
    assert f"or change {needs} in {path}" in err
    assert not (tmp_path / "run" / "pids.json").exists()


def test_two_envoy_edges_on_one_port_are_refused(tmp_path: pathlib.Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["edges"][1]["port"] = raw["edges"][0]["port"]
    err = up_err(capsys, envoy_mesh(tmp_path, edit))
    assert ("edges[1].port (edge-west: its Envoy's listener) and edges[0].port (edge-east: its "
            "Envoy's listener) are both configured on port") in err


def test_an_envoy_listener_on_a_backends_port_is_refused(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["edges"][0]["port"] = raw["backends"][0]["grpc_port"]
    err = up_err(capsys, envoy_mesh(tmp_path, edit))
    assert ("edges[0].port (edge-east: its Envoy's listener) and backends[0].grpc_port "
            "(east-fast) are both configured on port") in err


@pytest.mark.parametrize("engine", ["envoy", "python"])
def test_a_held_relay_port_is_named(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
                                    engine: str) -> None:
    """The relay runs in either engine's mesh (an Envoy edge dials backends directly, its
    Python slow path too, but a Python edge uses the relay): its ports are checked."""
    def edit(raw: dict[str, Any]) -> None:
        raw["edge"]["engine"] = engine
    path = envoy_mesh(tmp_path, edit)
    routes = relay_routes(load_config(str(path), {}))
    assert len(routes) == 4  # two edge regions x the two backends outside each
    last = routes[-1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", last.listen_port))
        s.listen()
        err = up_err(capsys, path)
    assert (f"port {last.listen_port} on 127.0.0.1 is already in use by another process; "
            f"wan.relay_base_port + 3 (the emulated-WAN relay from {last.edge_region} to "
            f"{last.backend_id}) needs it") in err


def test_a_relay_port_configured_for_another_server_is_refused(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["wan"]["relay_base_port"] = raw["edges"][1]["metrics_port"] - 1
    err = up_err(capsys, envoy_mesh(tmp_path, edit))
    assert "wan.relay_base_port + 1 (the emulated-WAN relay from r-east to " in err
    assert "are both configured on port" in err


def test_no_relay_no_relay_ports(tmp_path: pathlib.Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """wan.emulate off: a port in the relay's block is nobody's; up goes on (to Mesh.start)."""
    def edit(raw: dict[str, Any]) -> None:
        raw["wan"]["emulate"] = False
    path = envoy_mesh(tmp_path, edit)
    base = load_config(str(path), {}).wan.relay_base_port
    with socket.socket() as s:
        s.bind(("127.0.0.1", base))
        s.listen()
        with pytest.raises(AssertionError, match="started the mesh"):
            cli.main(["up", "--config", str(path)])
