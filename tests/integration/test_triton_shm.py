"""A killed tritonserver's Python-backend shared memory is removed by ``TritonProcess``.

Real tritonserver (the pinned pytriton wheel). Its Python backend keeps each model instance's
memory in ``/dev/shm/<prefix><uuid>``; SIGKILLed, the server cannot remove them (1,039 were
left after one session). Each start now has its own prefix, and ``stop()`` (or the next
``start()``) removes the files of its dead servers, and no one else's.
"""

from __future__ import annotations

import pathlib
import signal
import uuid

import pytest

from services.backends.shm import SHM_DIR
from tests.fixtures_backends import StartBackend, backend_mesh
from tests.mesh_harness import eventually_sync

pytestmark = pytest.mark.integration

MESH = backend_mesh(
    models=[{"name": "summarize", "default_slo_ms": 300, "variants": [
        {"name": "tiny", "quality": 0.5, "matmul_n": 32, "matmul_iters": 1},
        {"name": "tiny2", "quality": 0.6, "matmul_n": 32, "matmul_iters": 1}]}],
    backends=[{"id": "cpu-shm", "variants": ["tiny", "tiny2"]}],
)


def files(prefix: str) -> list[pathlib.Path]:
    return sorted(SHM_DIR.glob(f"{prefix}*"))


def test_a_killed_servers_shared_memory_is_removed_and_nobody_elses(
        triton_backend: StartBackend) -> None:
    # Another server's file, named as Triton's default names them: must stay.
    other = SHM_DIR / f"triton_python_backend_shm_region_{uuid.uuid4()}"
    other.write_bytes(b"not ours")
    try:
        proc = triton_backend(MESH, "cpu-shm")
        first = proc.shm_prefix
        assert len(files(first)) >= 2, (files(first), proc.log_tail())  # one per instance
        proc.kill(signal.SIGKILL)
        eventually_sync(lambda: not proc.alive, 20, "tritonserver died")
        assert files(first), "a SIGKILLed server leaves its files (what is cleaned up)"

        proc.start()  # a drill's restart: the dead server's files go first
        proc.wait_ready(90)
        assert files(first) == []
        second = proc.shm_prefix
        assert second != first and files(second)

        proc.kill(signal.SIGKILL)
        eventually_sync(lambda: not proc.alive, 20, "tritonserver died")
        proc.stop(5)
        assert files(second) == []
        assert other.exists()
    finally:
        other.unlink(missing_ok=True)
