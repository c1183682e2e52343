"""A hostile caller against the edge, round 9, on both engines: one Envoy edge (placement's
config, the module where it loads) and its slow path (the co-located Python edge, called
directly as *the Python edge*); real Triton backends (``envoy_harness.hostile_fixtures``).

- ``ModelStatistics`` for a model and a version: the backends' to answer, as ``ModelReady``'s
  version is. Before, the edge summed version 1's statistics for any version the caller
  named ("7", "abc", "-1": OK, named version 1), where Triton refuses each INVALID_ARGUMENT
  ("requested model version is not available for model ...", "failed to get model version
  from specified version string ...").
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2

from services.xds.lua import SERVICE_PATH as SERVICE
from tests.envoy_harness import hostile_fixtures

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

cfg, mesh, engines, records = hostile_fixtures("hostile9")


async def statistics(ch: grpc.aio.Channel, name: str, version: str) -> tuple[str, Any]:
    rpc: Any = ch.unary_unary(
        SERVICE + "ModelStatistics",
        request_serializer=service_pb2.ModelStatisticsRequest.SerializeToString,
        response_deserializer=service_pb2.ModelStatisticsResponse.FromString)
    try:
        resp = await rpc(service_pb2.ModelStatisticsRequest(name=name, version=version),
                         timeout=10)
    except grpc.aio.AioRpcError as err:
        return err.code().name, err.details()
    return "OK", [(s.name, s.version) for s in resp.model_stats]


@pytest.mark.parametrize(("version", "words"), [
    ("7", "requested model version is not available for model 'summarize-"),
    ("0", "requested model version is not available for model 'summarize-"),
    ("abc", "failed to get model version from specified version string 'abc'"),
    ("-1", "invalid model version specified '-1'")])
async def test_statistics_for_a_version_the_backends_lack_is_their_refusal_on_both_engines(
        engines: dict[str, grpc.aio.Channel], version: str, words: str) -> None:
    """Fails on the old edge (both engines): OK, [('summarize', '1')]."""
    got = {e: await statistics(ch, "summarize", version) for e, ch in engines.items()}
    for code, details in got.values():
        assert code == "INVALID_ARGUMENT", got
        assert details.startswith("ModelStatistics failed on ") and words in details, got


@pytest.mark.parametrize("version", ["", "1"])
async def test_statistics_for_no_version_or_one_served_sum_the_model_on_both_engines(
        engines: dict[str, grpc.aio.Channel], version: str) -> None:
    got = {e: await statistics(ch, "summarize", version) for e, ch in engines.items()}
    assert got == {"python": ("OK", [("summarize", "1")]),
                   "envoy": ("OK", [("summarize", "1")])}, got
