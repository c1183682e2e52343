"""Shared fixtures for integration tests (real servers on 127.0.0.1).

``tritons`` starts the real Triton servers of the module's own ``cfg`` fixture (every module
that uses it defines ``cfg``: the mesh it needs) and stops them after the module.
"""

from collections.abc import Iterator

import pytest

from services.backends.triton import TritonProcess
from services.config import MeshConfig
from tests.fixtures_backends import triton_backend, triton_backend_module
from tests.mesh_harness import running_tritons

__all__ = ["triton_backend", "triton_backend_module", "tritons"]


@pytest.fixture(scope="module")
def tritons(cfg: MeshConfig, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[dict[str, TritonProcess]]:
    with running_tritons(cfg, tmp_path_factory.mktemp("tritons")) as procs:
        yield procs
