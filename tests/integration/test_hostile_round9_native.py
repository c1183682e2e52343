"""Hostile caller, round 9, on the Envoy edge's listener (the C module, native/, and its Lua
twin, services/xds/): each test runs on an Envoy given the module and on one given the Lua,
its slow path (the co-located Python edge, called directly) as *the Python edge*; real
Tritons, placement over ADS, a real gRPC client.

- A caller's ``x-request-id`` is echoed as its first ``hints.REQUEST_ID_CHARS`` (128) on both
  engines. Before, the Lua echoed it whole and the module its first 256 bytes, a Python edge
  its first 128; and an id long enough for the listener to refuse the call's metadata as over
  ``max_metadata_bytes`` was echoed whole in that refusal, whose trailers were then over the
  gRPC client's own limit: the caller saw RESOURCE_EXHAUSTED "Stream removed (received
  metadata size exceeds hard limit ...)", never the edge's words.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import pytest

from services.edge.hints import REQUEST_ID_CHARS
from tests.envoy_harness import EnvoyMesh
from tests.integration.test_hostile_round8_native import (  # noqa: F401 (fixtures)
    GRPC,
    cfg,
    frame,
    mesh,
    raw_call,
)
from tests.mesh_harness import INFER_PATH, request_bytes

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


async def answer(ch: grpc.aio.Channel, md: Sequence[tuple[str, str]]
                 ) -> tuple[str, str, list[str]]:
    """(status, details, the x-request-id trailers) of a ModelInfer with ``md``."""
    rpc: Any = ch.unary_unary(INFER_PATH, request_serializer=None, response_deserializer=None)
    call = rpc(request_bytes(), metadata=md, timeout=10)
    try:
        await call
    except grpc.aio.AioRpcError as err:
        code, details = err.code().name, err.details() or ""
    else:
        code, details = "OK", ""
    trailers = await call.trailing_metadata() or ()
    return code, details, [str(v) for k, v in trailers if k == "x-request-id"]


@pytest.mark.parametrize(("hint", "status"), [((), "OK"),  # served by a deployment
                                              ((("x-slo-ms", "abc"),), "INVALID_ARGUMENT"),
                                              ((("x-min-quality", "0.1"),), "OK")])  # slow
async def test_a_long_request_id_is_echoed_as_its_first_128_characters_alike(
        mesh: EnvoyMesh, hint: tuple[tuple[str, str], ...], status: str) -> None:  # noqa: F811
    """Fails on the old listener: the Lua echoed all 300 (served and refused), the module
    256 (served) and 300 (refused)."""
    rid = "".join(chr(ord("a") + i % 26) for i in range(300))
    async with mesh.engines() as chs:
        got = {name: await answer(ch, [("x-request-id", rid), *hint])
               for name, ch in chs.items()}
    assert {name: (c, ids) for name, (c, _, ids) in got.items()} == {
        "python": (status, [rid[:REQUEST_ID_CHARS]]),
        "envoy": (status, [rid[:REQUEST_ID_CHARS]])}, got


async def test_a_request_id_over_the_metadata_limit_gets_the_edges_refusal(
        mesh: EnvoyMesh) -> None:  # noqa: F811 (round 8's fixture)
    """An x-request-id of 20,000 characters (over max_metadata_bytes): Envoy's listener
    refuses it in its words, and the caller reads them. Fails on the old listener (both
    engines): RESOURCE_EXHAUSTED 'Stream removed (received metadata size exceeds hard limit
    (20308 vs. 16384) ...)', the refusal's echo over the client's trailer limit."""
    async with mesh.engines() as chs:
        code, details, ids = await answer(chs["envoy"], [("x-request-id", "r" * 20_000)])
    assert code == "RESOURCE_EXHAUSTED", details
    assert details.startswith("metadata of ") and "max_metadata_bytes" in details, details
    assert ids == ["r" * REQUEST_ID_CHARS]


@pytest.mark.parametrize("md", [
    [("x-slo-ms", "%" * 7000)], [("x-slo-ms", "a" * 7500)],
    [("x-slo-ms", "50"), ("x-slo-ms", "%" * 7000)],
    [("x-tenant", "%" * 3500), ("x-tenant", "&" * 3500)]],
    ids=["slo-percent", "slo-long", "slo-repeat", "tenant-contradiction"])
async def test_a_long_refused_hint_gets_the_python_edges_cut_message(
        mesh: EnvoyMesh, md: list[tuple[str, str]]) -> None:  # noqa: F811 (round 8's fixture)
    """Fails on the old listener (both engines): 'slo-long' 7,534 characters against the
    Python edge's 6,021, the others RESOURCE_EXHAUSTED 'Stream removed (received metadata
    size exceeds ... limit ...)'."""
    async with mesh.engines() as chs:
        got = {name: (await answer(ch, md))[:2] for name, ch in chs.items()}
    assert got["python"][0] == "INVALID_ARGUMENT", got
    assert got["python"][1].endswith(" characters)"), got
    assert got["envoy"] == got["python"], got


async def test_a_long_refused_non_ascii_hint_is_cut_at_the_same_character(
        mesh: EnvoyMesh) -> None:  # noqa: F811 (round 8's fixture)
    """x-slo-ms of 3,000 'e-acute' (two bytes each, six percent-encoded) from a raw HTTP/2
    caller (a gRPC client sends no such value): cut at the same character, counted in
    characters, on both engines. Fails on the old listener: the whole value quoted."""
    headers = [*GRPC, ("x-slo-ms", "\u00e9" * 3000)]
    got = {"python": await raw_call(f"127.0.0.1:{mesh.slow.port}", headers,
                                    frame(request_bytes())),
           "envoy": await raw_call(mesh.envoy.address, headers, frame(request_bytes()))}
    assert got["python"][0] == "3" and got["python"][1].endswith(" characters)"), got
    assert got["envoy"] == got["python"], got
