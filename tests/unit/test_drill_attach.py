"""``switchyard drill --attach`` with no mesh running: exit 3 (nothing to reach, as for a
placement or an edge that does not answer) and the command that starts the mesh."""

from __future__ import annotations

import json
import pathlib

import pytest

from services import cli, logs
from services.cli import main as switchyard
from services.config import load_config
from services.drills.cli import main as drills
from services.drills.sandbox import sandbox_config
from services.up import Mesh

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_process_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both mains configure process-wide logging (the drill's at "warning"): not in tests,
    where later tests read info-level events."""
    monkeypatch.setattr(cli, "configure", lambda *_a, **_k: None)
    monkeypatch.setattr(logs, "configure", lambda *_a, **_k: None)


@pytest.fixture
def cfg(tmp_path: pathlib.Path) -> str:
    return str(sandbox_config(ROOT / "examples" / "mesh.toml", tmp_path))


def drill_attached(entry: str, cfg: str) -> int:
    """``switchyard drill kill-backend --attach`` or ``python -m services.drills``'s own."""
    if entry == "switchyard":
        return switchyard(["drill", "kill-backend", "--attach", "--config", cfg])
    return drills(["--config", cfg, "kill-backend", "--attach"])


@pytest.mark.parametrize("entry", ["switchyard", "python-m"])
def test_attach_with_no_mesh_running_is_exit_3_with_the_command_that_starts_it(
        cfg: str, entry: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = drill_attached(entry, cfg)
    err = capsys.readouterr().err
    assert code == 3, err
    assert f"no mesh of {cfg} is running" in err
    assert f"next: start it with `switchyard up --config {cfg}`" in err
    assert "Traceback" not in err


def test_attach_to_a_mesh_whose_processes_are_gone_names_the_first(
        cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(cfg)
    mesh = Mesh(config, cfg)
    gone = 2 ** 22 + 12345  # above Linux's largest pid_max (4,194,304): no such process
    mesh.run_dir.mkdir(parents=True, exist_ok=True)
    (mesh.run_dir / "pids.json").write_text(json.dumps({c.name: gone for c in mesh.plan()}))
    assert drill_attached("switchyard", cfg) == 3
    err = capsys.readouterr().err
    first = mesh.plan()[0].name
    assert f"--attach: {first} of the mesh of {cfg} (pid {gone}) is not running" in err
    assert f"next: start it with `switchyard up --config {cfg}`" in err
