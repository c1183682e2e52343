"""A hostile caller against the edge's metrics, round 11, on both engines: one Envoy edge
(placement's config, the module where it loads) and its slow path (the co-located Python
edge, called directly as *the Python edge*); real Triton backends
(``envoy_harness.hostile_fixtures``), tenants known by their bearer tokens over plaintext.

- A ModelInfer the edge refuses before routing it, on its tenant (a credential it does not
  know, a tenant over its quota) or its size, is counted in ``switchyard_edge_calls_total``
  (and logged) under the model its message names, as every other call is. Before, such a call
  had no model and was counted under ``unknown``, the label README gives model names outside
  the route table: a tenant hammering ``summarize`` past its quota showed as calls to a model
  the mesh lacks, on both engines (Envoy sends a call with a credential to its slow path). A
  stream refused on its headers has read no message yet: ``unknown`` there is the truth.
"""
from __future__ import annotations

from typing import Any

import grpc
import pytest
from prometheus_client import generate_latest

from services.config import MeshConfig
from services.edge.tokens import llm_request
from services.edge.upstream import STREAM
from services.security.settings import SecuritySettings, TenantSettings
from tests.envoy_harness import EnvoyMesh, hostile_fixtures
from tests.mesh_harness import eventually, mesh_config, raw_infer, request_bytes
from tests.metrics_harness import Series, delta, parse, pick

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

_cfg, mesh, engines, records = hostile_fixtures("hostile11")

OPEN = "Bearer open-token"  # tenant open: anywhere
LIMITED = "Bearer limited-token"  # tenant limited: one call or stream at a time


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    base = mesh_config(tmp_path_factory.mktemp("hostile11"))
    sec = SecuritySettings(plaintext=True, tenants=[
        TenantSettings(name="open", token="open-token"),
        TenantSettings(name="limited", token="limited-token", max_concurrency=1),
    ])
    return base.model_copy(update={"security": sec})


def series(mesh: EnvoyMesh) -> Series:
    """The slow path's /metrics: what the Python edge counts, Envoy's slow-path calls too."""
    assert mesh.slow.metrics is not None
    return parse(generate_latest(mesh.slow.metrics.registry).decode())


def refused(d: Series, model: str, status: str) -> float:
    return pick(d, "switchyard_edge_calls_total", model=model, deployment="", status=status)


async def test_a_modelinfer_refused_on_its_tenant_is_counted_under_its_model_on_both(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel]) -> None:
    """A credential the edge does not know, and tenant ``limited`` past its one call at a time
    (a stream of its own held open), on each engine: counted under ``summarize``, nothing
    under ``unknown``. Fails on the old edge (both engines): 4 UNAUTHENTICATED and 2
    RESOURCE_EXHAUSTED under ``unknown``."""
    before = series(mesh)
    seen: list[str] = []
    for ch in engines.values():
        code, _, _ = await raw_infer(ch, [("authorization", "Bearer no-such-token")])
        seen.append(code.name)
        code, _, _ = await raw_infer(ch, [("authorization", "Bearer no-such-token")],
                                           request_bytes("generate"))
        seen.append(code.name)
        st: Any = ch.stream_stream(STREAM, request_serializer=None, response_deserializer=None)
        held = st(iter([llm_request("generate", [1, 2, 3], 40)]), timeout=20,
                  metadata=[("authorization", LIMITED)])
        responses = held.__aiter__()
        await anext(responses)  # the stream holds the tenant's one slot from here
        code, _, _ = await raw_infer(ch, [("authorization", LIMITED)])
        seen.append(code.name)
        async for _ in responses:
            pass
        assert await held.code() == grpc.StatusCode.OK
    assert seen == ["UNAUTHENTICATED", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED"] * 2, seen

    def counted() -> bool:
        return pick(delta(series(mesh), before), "switchyard_edge_calls_total") >= 8

    await eventually(counted, 5, "every call counted")
    d = delta(series(mesh), before)
    assert refused(d, "summarize", "UNAUTHENTICATED") == 2
    assert refused(d, "generate", "UNAUTHENTICATED") == 2
    assert refused(d, "summarize", "RESOURCE_EXHAUSTED") == 2
    assert pick(d, "switchyard_edge_calls_total", model="unknown") == 0
    assert pick(d, "switchyard_edge_calls_total") == 8  # and the two held streams, OK
    # refused before routing: no SLO, no attempt
    assert pick(d, "switchyard_edge_slo_calls_total", model="summarize") == 0
    assert pick(d, "switchyard_edge_attempts_total", model="summarize") == 0
