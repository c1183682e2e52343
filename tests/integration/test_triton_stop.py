"""Several real tritonservers stopped together (``services.backends.triton.stop_all``).

Real tritonserver (the pinned pytriton wheel). One SIGTERM to each, then one shared grace:
within it an idle server exits on its own (code 0); past it, it is SIGKILLed with its
Python-backend stubs, and its shared-memory files are removed either way.
"""

from __future__ import annotations

import pathlib
import signal

import pytest

from services.backends.shm import SHM_DIR
from services.backends.triton import TritonProcess, stop_all
from tests.fixtures_backends import backend_mesh
from tests.mesh_harness import eventually_sync

pytestmark = pytest.mark.integration

MESH = backend_mesh(
    models=[{"name": "summarize", "default_slo_ms": 300, "variants": [
        {"name": "tiny", "quality": 0.5, "matmul_n": 32, "matmul_iters": 1}]}],
    backends=[{"id": "stop-a", "variants": ["tiny"]}, {"id": "stop-b", "variants": ["tiny"]}],
)


def alive_in_group(pgid: int) -> list[int]:
    """Processes of ``pgid`` that are not dead (zombies wait for init only)."""
    alive = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            alive.append(int(stat.parent.name))
    return alive


def started(tmp: pathlib.Path) -> list[TritonProcess]:
    procs = [TritonProcess.for_backend(MESH, b, tmp / b.id) for b in MESH.backends]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.wait_ready(90)
    except BaseException:
        stop_all(procs, 0)
        raise
    return procs


def shm_files(procs: list[TritonProcess]) -> list[pathlib.Path]:
    return [f for p in procs for f in SHM_DIR.glob(f"{p.shm_prefix}*")]


def test_past_the_grace_every_server_and_stub_is_killed_and_its_memory_removed(
        tmp_path: pathlib.Path) -> None:
    procs = started(tmp_path)
    groups = [p.pid for p in procs]
    assert all(alive_in_group(g)[1:] for g in groups), "each server runs its model's stub"
    assert shm_files(procs)
    codes = stop_all(procs, 0.0)
    assert codes == [-signal.SIGKILL] * len(procs)  # no grace: none had exited on its own
    assert not any(p.alive for p in procs)
    assert shm_files(procs) == []
    eventually_sync(lambda: not any(alive_in_group(g) for g in groups), 10,
                    "no stub of a stopped server left running")


def test_within_the_grace_idle_servers_exit_on_their_own_and_a_killed_one_is_cleaned_up(
        tmp_path: pathlib.Path) -> None:
    procs = started(tmp_path)
    never = TritonProcess.for_backend(MESH, MESH.backends[0], tmp_path / "never")
    procs[0].kill(signal.SIGKILL)  # a drill's kill: the server leaves its files behind
    eventually_sync(lambda: not procs[0].alive, 20, "tritonserver died")
    assert shm_files(procs[:1])
    codes = stop_all([*procs, never], 60.0)
    assert codes == [-signal.SIGKILL, 0, None], [p.log_tail() for p in procs]
    assert shm_files(procs) == []
    eventually_sync(lambda: not any(alive_in_group(p.pid) for p in procs), 10,
                    "no stub of a stopped server left running")
