"""Shared fixtures for integration tests (real servers on 127.0.0.1).

``tritons`` starts the real Triton servers of the module's own ``cfg`` fixture (every module
that uses it defines ``cfg``: the mesh it needs) and stops them after the module; ``mesh``
runs placement, agents and an edge over them for the module, ``channel`` is a grpc.aio
channel to that edge. A module that needs another mesh defines its own ``mesh``.
"""

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import pytest_asyncio

from services.backends.triton import TritonProcess
from services.config import MeshConfig
from tests.fixtures_backends import triton_backend, triton_backend_module
from tests.mesh_harness import Mesh, running_mesh, running_tritons

__all__ = ["channel", "mesh", "triton_backend", "triton_backend_module", "tritons"]


@pytest.fixture(scope="module")
def tritons(cfg: MeshConfig, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[dict[str, TritonProcess]]:
    with running_tritons(cfg, tmp_path_factory.mktemp("tritons")) as procs:
        yield procs


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(cfg: MeshConfig, tritons: dict[str, TritonProcess]) -> AsyncIterator[Mesh]:
    async with running_mesh(cfg, tritons) as m:
        yield m


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def channel(mesh: Mesh) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(mesh.edge_address) as ch:
        yield ch
