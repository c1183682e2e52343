"""A drill interrupted (Ctrl-C, SIGTERM) with its fault in place undoes the fault.

With ``--attach`` the mesh is the operator's ``switchyard up``: nothing stops it after the
drill, so a backend the drill killed (and *held*, so ``up``'s supervisor leaves it down) stays
dead until restored (review11 finding 1). The runner and the ``kill-backend`` scenario are
real; the handle is a stand-in holding and releasing exactly as ``MeshHandle`` does (no
Triton), and the load goes to a port nothing listens on (its calls fail at once)."""

from __future__ import annotations

import pathlib
import signal
import types
from collections.abc import Iterator

import pytest

from services import logs
from services.config import MeshConfig, load_config
from services.drills import runner
from services.drills.cli import main as drills
from services.drills.sandbox import sandbox_config
from services.drills.scenarios import KillBackend
from services.supervisor import held, hold, release

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUSIEST = "use1-h100"


class Handle:
    """``MeshHandle``'s surface that ``kill-backend`` uses; ``interrupt_in`` names the call
    that raises the operator's Ctrl-C."""

    def __init__(self, cfg: MeshConfig, run_dir: pathlib.Path, interrupt_in: str) -> None:
        self.cfg, self.run_dir, self.interrupt_in = cfg, run_dir, interrupt_in
        self.restarted: list[str] = []

    def settle(self, timeout_s: float, on_wait: object = None) -> list[str]:
        return []

    def kill_backend(self, backend_id: str) -> int:
        hold(self.run_dir, f"backend {backend_id}", "drill sent SIGKILL")  # as MeshHandle does
        if self.interrupt_in == "inject":
            raise KeyboardInterrupt
        return 2 ** 22 + 1  # above Linux's largest pid_max: "died" at once

    def backend_status(self) -> dict[str, object]:
        raise KeyboardInterrupt  # during the fault (the scenario's `during` asks placement)

    def backend_child(self, backend_id: str) -> types.SimpleNamespace:
        return types.SimpleNamespace(name=f"backend {backend_id}")

    def restart(self, child: types.SimpleNamespace) -> None:
        self.restarted.append(child.name)
        release(self.run_dir, child.name)  # as MeshHandle.restart does


@pytest.fixture
def cfg() -> MeshConfig:
    cfg = load_config(ROOT / "examples" / "mesh.toml")
    return cfg.model_copy(update={"edges": [e.model_copy(update={"port": 1}) for e in cfg.edges]})


@pytest.fixture(autouse=True)
def busiest_is_fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    """No call succeeds here (no edge listens): the backend serving most is fixed instead."""
    monkeypatch.setattr(runner, "_busiest", lambda calls: BUSIEST)


@pytest.mark.parametrize("interrupt_in", ["during", "inject"])
def test_a_drill_interrupted_with_its_fault_in_place_restores_the_backend(
        cfg: MeshConfig, tmp_path: pathlib.Path, interrupt_in: str) -> None:
    h = Handle(cfg, tmp_path, interrupt_in)
    said: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        runner._run(h, KillBackend(), 0.6, 5.0, 0.5, None, said.append, 1.0, 10)  # type: ignore[arg-type]
    assert held(tmp_path, f"backend {BUSIEST}") is None, said
    assert h.restarted == [f"backend {BUSIEST}"], said
    assert any("interrupted with its fault in place" in m for m in said), said


def test_a_drill_interrupted_before_its_fault_touches_nothing(
        cfg: MeshConfig, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(calls: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_busiest", interrupted)
    h = Handle(cfg, tmp_path, "during")
    said: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        runner._run(h, KillBackend(), 0.6, 5.0, 0.5, None, said.append, 1.0, 10)  # type: ignore[arg-type]
    assert h.restarted == [] and "drill aborted before the fault; mesh untouched" in said


@pytest.fixture
def default_sigterm() -> Iterator[None]:
    old = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, old)


def test_an_attached_drill_makes_sigterm_unwind_so_its_fault_is_undone(
        tmp_path: pathlib.Path, default_sigterm: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python's default SIGTERM ends the process with no ``finally``: the restore above
    never runs. ``--attach`` (no mesh running here: exit 3) installs the unwinding handler
    before it looks for the mesh, as a private drill does."""
    monkeypatch.setattr(logs, "configure", lambda *_a, **_k: None)
    cfg_path = str(sandbox_config(ROOT / "examples" / "mesh.toml", tmp_path))
    assert drills(["--config", cfg_path, "kill-backend", "--attach"]) == 3
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler), f"SIGTERM handler after `drill --attach`: {handler!r}"
    with pytest.raises(SystemExit) as exc:
        handler(signal.SIGTERM, None)
    assert exc.value.code == 128 + signal.SIGTERM


def test_a_private_drill_interrupted_leaves_the_fault_to_the_mesh_stop(
        cfg: MeshConfig, tmp_path: pathlib.Path) -> None:
    """Its mesh is stopped right after: restarting a Triton first only delays the Ctrl-C."""
    h = Handle(cfg, tmp_path, "during")
    with pytest.raises(KeyboardInterrupt):
        runner._run(h, KillBackend(), 0.6, 5.0, 0.5, None, lambda _m: None, 1.0, 10,  # type: ignore[arg-type]
                    undo_interrupted=False)
    assert h.restarted == []
