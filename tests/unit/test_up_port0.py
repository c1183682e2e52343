"""``switchyard up`` refuses port 0 for a server it waits on and the others dial (review11
finding 5): before, ``placement.port = 0`` passed the checks (whose own message said "0 = any
free port"), placement listened on a port its OS picked, and ``up`` waited 120 s on
``127.0.0.1:0`` before "did not become ready". The real ``switchyard up`` command, in-process;
``Mesh.start`` is replaced by one that fails the test at once, so nothing is ever started."""

from __future__ import annotations

import pathlib
import re
import tomllib

import pytest

from placement.errors import ConfigError
from services import cli
from services.cli_preflight import check_ports, check_up
from services.config import load_config
from services.drills.sandbox import dumps_toml, sandbox_config
from services.up import Mesh

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def never_started(monkeypatch: pytest.MonkeyPatch) -> None:
    def start(self: Mesh, progress: bool = True) -> None:
        raise AssertionError("switchyard up started the mesh of a config it must refuse")

    monkeypatch.setattr(Mesh, "start", start)
    monkeypatch.setattr(cli, "configure", lambda *_a, **_k: None)


def with_zero(tmp_path: pathlib.Path, table: str, key: str) -> pathlib.Path:
    """The example mesh on free ports, then ``key`` of ``table`` (or its first row) = 0."""
    path = sandbox_config(ROOT / "examples" / "mesh.toml", tmp_path)
    raw = tomllib.loads(path.read_text())
    (raw[table][0] if isinstance(raw[table], list) else raw[table])[key] = 0
    path.write_text(dumps_toml(raw))
    return path


@pytest.mark.parametrize(("table", "key", "named"), [
    ("placement", "port", "placement.port"),
    ("edges", "port", "edges[0].port"),
    ("backends", "grpc_port", "backends[0].grpc_port"),
])
def test_up_refuses_port_0_where_it_waits_naming_the_key_and_a_port_to_write(
        tmp_path: pathlib.Path, table: str, key: str, named: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = with_zero(tmp_path, table, key)
    assert cli.main(["up", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"\n    {named}\n" in err, err
    written = re.search(rf"free right now: {re.escape(named)} = (\d+)", err)
    assert written and 0 < int(written[1]) < 65536, err


def test_a_metrics_port_of_0_serves_no_metrics_and_is_accepted(tmp_path: pathlib.Path) -> None:
    path = with_zero(tmp_path, "placement", "metrics_port")
    check_up(load_config(path), str(path))  # raises ConfigError when refused


def test_two_servers_on_one_port_are_not_told_to_use_port_0(tmp_path: pathlib.Path) -> None:
    cfg = load_config(sandbox_config(ROOT / "examples" / "mesh.toml", tmp_path))
    cfg = cfg.model_copy(update={"edges": [cfg.edges[0].model_copy(
        update={"port": cfg.placement.port}), *cfg.edges[1:]]})
    with pytest.raises(ConfigError) as exc:
        check_ports(cfg, "mesh.toml")
    assert "are both configured on port" in str(exc.value)
    assert "0 = any free port" not in str(exc.value)
