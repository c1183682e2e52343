"""A hostile caller against the edge, round 8: what round 7 left open (the slow path's header
bytes, a stream Envoy refuses, the engines' parity on odd calls) and what rounds 1-7 did not
probe.

One mesh for the module, both engines (``envoy_harness.hostile_fixtures``), with tenants known
by their bearer tokens over plaintext: real Triton backends, placement serving ADS, a node
agent, the co-located Python edge (``<edge>-slow``, called directly as *the Python edge*) and
a real Envoy driven by placement, whose listener sends a stream and a call carrying
``authorization`` to that slow path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import grpc
import pytest

from services.config import MeshConfig
from services.edge.tokens import llm_request
from services.edge.upstream import STREAM
from services.security.settings import SecuritySettings, TenantSettings
from tests.envoy_harness import EnvoyMesh, hostile_fixtures
from tests.mesh_harness import INFER_PATH, mesh_config, raw_infer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

_cfg, mesh, engines, records = hostile_fixtures("hostile8")

OPEN = "Bearer open-token"  # tenant open: anywhere


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    base = mesh_config(tmp_path_factory.mktemp("hostile8"))
    sec = SecuritySettings(plaintext=True, tenants=[
        TenantSettings(name="open", token="open-token"),
        TenantSettings(name="limited", token="limited-token", max_concurrency=1),
    ])
    return base.model_copy(update={"security": sec})


async def stream_status(ch: grpc.aio.Channel, md: Sequence[tuple[str, str]],
                        timeout: float | None = 20.0) -> tuple[str, str]:
    """(status, details) of a short generation on ``ch``."""
    st: Any = ch.stream_stream(STREAM, request_serializer=None, response_deserializer=None)
    call = st(iter([llm_request("generate", [1, 2, 3], 2)]), timeout=timeout, metadata=md)
    with contextlib.suppress(grpc.aio.AioRpcError):
        async for _ in call:
            pass
    return (await call.code()).name, await call.details() or ""


def listener_size(details: str) -> int:
    """The header list's size in the Envoy listener's refusal ('metadata of N bytes is ...')."""
    assert details.startswith("metadata of "), details
    return int(details.split(" ", 3)[2])


async def test_a_header_list_the_listener_lets_through_is_not_refused_by_the_slow_path(
        mesh: EnvoyMesh, cfg: MeshConfig, engines: dict[str, grpc.aio.Channel]) -> None:
    """A stream (always the slow path) and a tenant's ModelInfer whose header list is exactly
    ``max_metadata_bytes`` as Envoy's listener counts it (name + value + 32 per entry,
    native/rules.c) are served; a tenant's call one byte over is the listener's
    RESOURCE_EXHAUSTED naming its size. The slow path's gRPC server held the list with what
    Envoy adds (x-request-id, x-forwarded-proto, the deadline headers) to the same number and
    refused calls within ~200 bytes of it: 'received metadata size exceeds hard limit (8225
    vs. 8192)'. Fails on the old code. (hostile7's pending test, finished.)"""
    limit = cfg.security.limits.max_metadata_bytes
    ch = engines["envoy"]
    pad = limit - 600  # over the limit once the call's other headers are counted

    # No deadline: a grpc-timeout's digits, and so the list's size, change from call to call.
    # A plain ModelInfer over the limit is the listener's answer on the fast path, whose size
    # the other two follow: a longer :path, or one more entry.
    async def infer(n: int, *md: tuple[str, str]) -> tuple[str, str]:
        code, _, details = await raw_infer(ch, [*md, ("x-pad", "p" * n)], timeout=None)
        return code.name, details

    code, details = await infer(pad)
    assert (code, details.startswith("metadata of ")) == ("RESOURCE_EXHAUSTED", True), details
    fits = pad - (listener_size(details) - limit)
    stream_fits = fits - (len(STREAM) - len(INFER_PATH))
    auth = ("authorization", OPEN)
    tenant_fits = fits - (len(auth[0]) + len(auth[1]) + 32)
    assert await stream_status(ch, [("x-pad", "p" * stream_fits)], timeout=None) == ("OK", "")
    assert await infer(tenant_fits, auth) == ("OK", "")
    code, details = await infer(tenant_fits + 1, auth)
    assert (code, listener_size(details)) == ("RESOURCE_EXHAUSTED", limit + 1), details
