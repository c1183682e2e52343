"""Resuming an LLM stream when no other deployment serves its variant: it moves to another
variant of the model only when the caller allows it (``x-allow-variant-change: true``);
otherwise it ends with the backend's status. Real Triton, real edge, SIGKILL mid-stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from services.backends.triton import TritonProcess
from services.config import MeshConfig
from tests import llm_harness
from tests.llm_harness import PROMPT, direct, kill_when, run_stream
from tests.mesh_harness import Mesh, mesh_config, running_mesh

pytestmark = pytest.mark.integration
killed = llm_harness.killed  # the fixture: backends a test killed, restarted after it

VARIANT_OF = {"west-cheap": "generate-small", "central-cheap": "generate-alt"}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    """Two variants of ``generate``, each on one backend (10 ms/token, emulated)."""
    raw = mesh_config(tmp_path_factory.mktemp("llm-variants")).model_dump()
    gen = next(m for m in raw["models"] if m["name"] == "generate")
    gen["variants"][0]["matmul_iters"] = 5
    gen["variants"].append({**gen["variants"][0], "name": "generate-alt"})
    for b in raw["backends"]:
        b["variants"] = [v for v in b["variants"] if not v.startswith("generate")]
        if b["id"] in VARIANT_OF:
            b["variants"].append(VARIANT_OF[b["id"]])
    return MeshConfig.model_validate(raw)


@pytest.fixture
async def mesh(cfg: MeshConfig, tritons: dict[str, TritonProcess]) -> AsyncIterator[Mesh]:
    async with running_mesh(cfg, tritons) as m:
        yield m


async def test_without_permission_the_stream_ends_with_the_backends_status(
        mesh: Mesh, killed: list[str]) -> None:
    s = await asyncio.to_thread(run_stream, mesh.edge_address, PROMPT, 200, [],
                                kill_when(30, mesh, killed))
    assert killed, "the backend was never killed"
    assert s.code is grpc.StatusCode.UNAVAILABLE, (s.code, s.details)
    assert killed[0] in s.details and 30 <= len(s.tokens) < 200
    assert s.trailers["x-resumed"] == "0"


async def test_with_permission_it_continues_on_the_other_variant(
        mesh: Mesh, killed: list[str]) -> None:
    expected = {b: await asyncio.to_thread(direct, mesh.tritons[b].endpoint, v, PROMPT, 200)
                for b, v in VARIANT_OF.items()}
    s = await asyncio.to_thread(run_stream, mesh.edge_address, PROMPT, 200,
                                [("x-allow-variant-change", "true")],
                                kill_when(30, mesh, killed))
    assert s.code is grpc.StatusCode.OK, s.details
    assert len(s.tokens) == 200 and s.trailers["x-resumed"] == "1"
    other = next(b for b in VARIANT_OF if b != killed[0])
    assert s.trailers["x-served-by"] == f"{other}/{VARIANT_OF[other]}"
    # The killed variant's tokens up to the failure, then the other variant's continuation
    # of exactly those (prompt + delivered): nothing missing, nothing repeated.
    k = next((i for i, (a, b) in enumerate(zip(s.tokens, expected[killed[0]], strict=True))
              if a != b), 200)
    assert 30 <= k < 200
    rest = await asyncio.to_thread(direct, mesh.tritons[other].endpoint, VARIANT_OF[other],
                                   [*PROMPT, *s.tokens[:k]], 200 - k)
    assert s.tokens[k:] == rest
