"""``exec_backend`` (``switchyard up``, drills) gives a backend's server a shared-memory prefix
of its run directory's, and removes what the previous, dead, server there left before it
execs. ``os.execve`` is replaced by a fake that records the argv instead of exec-ing."""

from __future__ import annotations

import pathlib
import uuid
from typing import Any

import pytest

from services.backends import triton
from services.backends.shm import SHM_DIR, shm_prefix_for
from tests.fixtures_backends import backend_mesh


class Execed(Exception):
    pass


def prefix_of(argv: list[str]) -> str:
    flag = "--backend-config=python,shm-region-prefix-name="
    (arg,) = [a for a in argv if a.startswith(flag)]
    return arg[len(flag):]


def test_a_restarted_backend_removes_its_dead_predecessors_files_only(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = backend_mesh(
        models=[{"name": "m", "default_slo_ms": 100, "variants": [
            {"name": "m-v", "quality": 0.5, "matmul_n": 8, "matmul_iters": 1}]}],
        backends=[{"id": "cpu-x", "variants": ["m-v"]}],
        base_dir=str(tmp_path), run_dir=str(tmp_path / "run"))

    def fake_execve(path: str, argv: list[str], env: Any) -> None:
        raise Execed(argv)

    monkeypatch.setattr(triton.os, "execve", fake_execve)
    with pytest.raises(Execed) as first:
        triton.exec_backend(cfg, cfg.backends[0])
    prefix = prefix_of(first.value.args[0])
    left = SHM_DIR / f"{prefix}{uuid.uuid4()}"  # what the SIGKILLed server left
    other = SHM_DIR / f"{shm_prefix_for('cpu-x')}{uuid.uuid4()}"  # another server's
    left.write_bytes(b"dead server's")
    other.write_bytes(b"live server's")
    try:
        with pytest.raises(Execed) as second:
            triton.exec_backend(cfg, cfg.backends[0])
        assert prefix_of(second.value.args[0]) == prefix
        assert not left.exists()
        assert other.exists()
    finally:
        left.unlink(missing_ok=True)
        other.unlink(missing_ok=True)
