"""A hostile caller against the edge, round 7: what rounds 1-6 (test_edge_hostile,
test_hostile_engines, test_envoy_stream_hostile, test_envoy_hostile, test_hostile_round4/5/6)
left.

One mesh for the module, both engines, as round 6's (``envoy_harness.hostile_fixtures``), with
tenants known by their bearer tokens over plaintext: real Triton backends, placement serving
ADS, a node agent, the co-located Python edge (``<edge>-slow``, called directly as *the Python
edge*) and a real Envoy driven by placement, whose listener sends a call carrying
``authorization`` to that slow path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import grpc
import pytest

from services.config import MeshConfig
from services.edge.router import CallRecord
from services.edge.tokens import llm_request
from services.edge.upstream import STREAM
from services.security.settings import SecuritySettings, TenantSettings
from services.security.tenants import BINARY_CREDENTIAL, TWO_CREDENTIALS
from tests.envoy_harness import EnvoyMesh, hostile_fixtures
from tests.mesh_harness import eventually, mesh_config, raw_infer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

_cfg, mesh, engines, records = hostile_fixtures("hostile7")

WEST = "Bearer west-token"  # tenant west-only: served in r-west only
OPEN = "Bearer open-token"  # tenant open: anywhere


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    base = mesh_config(tmp_path_factory.mktemp("hostile7"))
    sec = SecuritySettings(plaintext=True, tenants=[
        TenantSettings(name="west-only", token="west-token", allowed_regions=["r-west"]),
        TenantSettings(name="open", token="open-token"),
        TenantSettings(name="limited", token="limited-token", max_concurrency=1),
    ])
    return base.model_copy(update={"security": sec})


def calls(mesh: EnvoyMesh, status: str) -> float:
    """The Python edge's ``switchyard_edge_calls_total`` for ``status`` (every model)."""
    assert mesh.slow.metrics is not None
    total = 0.0
    for family in mesh.slow.metrics.registry.collect():
        for s in family.samples:
            if s.name == "switchyard_edge_calls_total" and s.labels.get("status") == status:
                total += s.value
    return total


TWO = [
    [("authorization", WEST), ("authorization", OPEN)],
    [("authorization", OPEN), ("authorization", WEST)],
    [("authorization", WEST), ("authorization", WEST)],
    [("authorization", f"{WEST},{OPEN}")],  # as a proxy joins a repeated header
]


@pytest.mark.parametrize("md", TWO, ids=["west-open", "open-west", "west-west", "joined"])
async def test_a_call_with_two_credentials_is_unauthenticated_on_both_engines(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel], records: list[CallRecord],
        md: Sequence[tuple[str, str]]) -> None:
    """Two bearer tokens on one call: the Python edge served it as the tenant of the last one
    (west then open: served in r-central, outside west-only's residency), Envoy's slow path,
    sent the two joined with ',', answered 'unknown bearer token'. Now one rule on both:
    UNAUTHENTICATED, one credential per call; counted as its caller saw it. Fails on the old
    code (python: OK)."""
    before = calls(mesh, "UNAUTHENTICATED")
    for name, ch in engines.items():
        code, trailers, details = await raw_infer(ch, md)
        assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, TWO_CREDENTIALS), name
        assert "x-served-by" not in trailers, name
        if name == "envoy":
            assert trailers.get("x-switchyard-path") == "slow"
    await eventually(lambda: len(records) >= 2, 5, "both calls recorded")
    assert [r.status for r in records] == ["UNAUTHENTICATED"] * 2
    assert calls(mesh, "UNAUTHENTICATED") == before + 2


async def test_a_credential_sent_as_binary_is_unauthenticated_not_skipped(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel]) -> None:
    """``authorization-bin``: skipped, the call was served as no tenant at all, in r-central,
    outside west-only's residency (as a hint sent as -bin was, until refused). Refused on
    both engines (Envoy's listener sends it to its slow path since a527180). Fails on the
    old code (OK, served in r-central)."""
    md: Any = [("authorization-bin", WEST.encode())]
    for name, ch in engines.items():
        code, _, details = await raw_infer(ch, md)
        assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, BINARY_CREDENTIAL), name


async def test_one_credential_is_still_served_inside_its_residency(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel]) -> None:
    """The rule refuses only the ambiguous: one token is its tenant's on both engines."""
    for name, ch in engines.items():
        code, trailers, details = await raw_infer(ch, [("authorization", WEST)])
        assert code == grpc.StatusCode.OK, (name, details)
        assert trailers["x-served-region"] == "r-west", name


async def test_a_repeated_request_id_is_joined_on_both_engines(
        mesh: EnvoyMesh, engines: dict[str, grpc.aio.Channel], records: list[CallRecord]
        ) -> None:
    """``x-request-id: a`` then ``b``: Envoy joins a repeated header into one value before
    any filter, so it served the call as 'a,b' while the Python edge refused it
    (INVALID_ARGUMENT, 'contradicts an earlier x-request-id'). An id is no limit: both now
    serve it as 'a,b', echoed and logged so. Fails on the old code (python: INVALID_ARGUMENT)."""
    md = [("x-request-id", "a"), ("x-request-id", "b")]
    for name, ch in engines.items():
        code, trailers, details = await raw_infer(ch, md)
        assert (code, trailers.get("x-request-id")) == (grpc.StatusCode.OK, "a,b"), (
            name, details)
    await eventually(lambda: len(records) >= 1, 5, "the Python edge's call recorded")
    assert [r.request_id for r in records] == ["a,b"]  # Envoy's fast path records none


async def stream_status(ch: grpc.aio.Channel, md: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """(status, details) of a short generation on ``ch``."""
    st: Any = ch.stream_stream(STREAM, request_serializer=None, response_deserializer=None)
    call = st(iter([llm_request("generate", [1, 2, 3], 2)]), timeout=20, metadata=md)
    with contextlib.suppress(grpc.aio.AioRpcError):
        async for _ in call:
            pass
    return (await call.code()).name, await call.details() or ""


async def test_envoys_own_headers_are_not_counted_as_the_callers_metadata(
        mesh: EnvoyMesh, cfg: MeshConfig, engines: dict[str, grpc.aio.Channel]) -> None:
    """A call at ``max_metadata_count`` custom entries is served on both engines and both
    paths. Envoy adds x-request-id, x-forwarded-proto and the slow-path route's deadline
    headers, which its listener does not count, and the slow path counted them as the
    caller's: a stream with 64 entries, or a tenant's ModelInfer with 63 and its credential,
    was refused through Envoy 'call carries 68 metadata entries (limit 64)' and served by
    the Python edge. One more entry is still refused on both, named by its count. Fails on
    the old code (envoy: INVALID_ARGUMENT, 68 entries)."""
    limit = cfg.security.limits.max_metadata_count
    ks = [(f"x-k{i}", "v") for i in range(limit)]
    tenant = [("authorization", OPEN), *ks[:limit - 1]]
    for name, ch in engines.items():
        assert await stream_status(ch, ks) == ("OK", ""), name
        code, _, details = await raw_infer(ch, tenant)
        assert code == grpc.StatusCode.OK, (name, details)
        code, _, details = await raw_infer(ch, [*tenant, ("x-one-more", "v")])
        assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT,
                                   f"call carries {limit + 1} metadata entries (limit {limit})")
    assert await stream_status(engines["python"], [*ks, ("x-one-more", "v")]) == (
        "INVALID_ARGUMENT", f"call carries {limit + 1} metadata entries (limit {limit})")
