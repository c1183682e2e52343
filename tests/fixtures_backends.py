"""Fixtures for tests that need real Triton backends (imported by tests/integration/conftest.py).

``triton_backend`` (per test) and ``triton_backend_module`` (per module) are factories:
``start(cfg, backend_id)`` writes the backend's repository under a temp dir, starts a real
tritonserver on free 127.0.0.1 ports, waits until every variant is ready, and returns the
:class:`TritonProcess`; everything started is stopped at teardown.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from services.backends.triton import TritonProcess
from services.config import MeshConfig

StartBackend = Callable[[MeshConfig, str], TritonProcess]


def backend_mesh(
    models: list[dict[str, Any]], backends: list[dict[str, Any]], **extra: Any
) -> MeshConfig:
    """A small two-region mesh around the given models and backends (ports default to 0)."""
    raw: dict[str, Any] = {
        "regions": [{"name": "r-east", "cloud": "aws"}, {"name": "r-west", "cloud": "gcp"}],
        "rtt": [{"a": "r-east", "b": "r-west", "ms": 40}],
        "models": models,
        "backends": [{"grpc_port": 0, "region": "r-east", "accelerator": "cpu", **b}
                     for b in backends],
        **extra,
    }
    return MeshConfig.model_validate(raw)


class _Backends:
    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.started: list[TritonProcess] = []

    def start(self, cfg: MeshConfig, backend_id: str, timeout: float = 90.0) -> TritonProcess:
        backend = next(b for b in cfg.backends if b.id == backend_id)
        proc = TritonProcess.for_backend(cfg, backend, self.root / backend_id)
        self.started.append(proc)
        proc.start()
        proc.wait_ready(timeout)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            proc.stop(grace=5.0)


@pytest.fixture
def triton_backend(tmp_path: pathlib.Path) -> Iterator[StartBackend]:
    """Factory for real Triton backends that live for one test."""
    backends = _Backends(tmp_path)
    yield backends.start
    backends.stop_all()


@pytest.fixture(scope="module")
def triton_backend_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartBackend]:
    """Factory for real Triton backends shared by a test module (startup is ~2-3 s each)."""
    backends = _Backends(tmp_path_factory.mktemp("triton"))
    yield backends.start
    backends.stop_all()
