"""The edge's contract with callers, against a running in-process mesh (real Triton, real gRPC,
tritonclient): /metrics over HTTP, hints that cannot be weakened, policies nothing meets,
limits that answer with trailers, and the control RPCs tritonclient expects (issue 10)."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from services.config import MeshConfig
from services.edge.main import RunningEdge, start_edge
from services.ports import free_port
from tests.mesh_harness import (
    Mesh,
    eventually,
    mesh_config,
    request_bytes,
    summarize_input,
)
from tests.mesh_harness import raw_infer as infer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    return mesh_config(tmp_path_factory.mktemp("contract"), max_message_bytes=64 * 1024)


# -- /metrics over HTTP ------------------------------------------------------------------

def scrape(port: int) -> dict[tuple[str, str, str], float]:
    """switchyard_edge_calls_total by (model, deployment, status), read over HTTP."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.labels["model"], s.labels["deployment"], s.labels["status"]): s.value
            for fam in text_string_to_metric_families(text)
            if fam.name == "switchyard_edge_calls" for s in fam.samples
            if s.name == "switchyard_edge_calls_total"}


def scrape_slo(port: int) -> dict[tuple[str, str], float]:
    """switchyard_edge_slo_calls_total by (model, met), read over HTTP."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.labels["model"], s.labels["met"]): s.value
            for fam in text_string_to_metric_families(text)
            if fam.name == "switchyard_edge_slo_calls" for s in fam.samples
            if s.name == "switchyard_edge_slo_calls_total"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def metered_edge(mesh: Mesh, cfg: MeshConfig) -> AsyncIterator[tuple[RunningEdge, int]]:
    """A second edge, serving /metrics on a real port; it counts only this module's calls."""
    edge_cfg = cfg.edges[0].model_copy(update={"id": "edge-metered"})
    mport = free_port()
    edge = await start_edge(cfg, edge_cfg, port=0,
                            placement=[f"127.0.0.1:{mesh.placement.port}"], metrics_port=mport)
    try:
        await eventually(lambda: edge.router.store.candidates.get("summarize"), 30,
                         "the metered edge gets its route table")
        yield edge, mport
    finally:
        await edge.stop(0.5)


async def test_metrics_count_every_call_once_with_its_status_and_bounded_labels(
        metered_edge: tuple[RunningEdge, int], cfg: MeshConfig) -> None:
    edge, mport = metered_edge
    async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as ch:
        ok, tr, _ = await infer(ch, [("x-slo-ms", "400")])
        assert ok is grpc.StatusCode.OK
        served = tr["x-served-by"]
        # The backend's own error (wrong tensor shape) passes through and is counted as such.
        bad, tr_bad, _ = await infer(ch, [("x-allowed-regions", "r-east")],
                                     raw=request_bytes(dim=8))
        assert bad is grpc.StatusCode.INVALID_ARGUMENT
        # A model name the caller made up: NOT_FOUND, and never a label value.
        missing, _, _ = await infer(ch, raw=request_bytes('evil"} 1\n# model-{{x}}'))
        assert missing is grpc.StatusCode.NOT_FOUND
        # Calls the edge refuses before routing (metadata count, size) are counted too, under
        # the model their message names (before: ``unknown``, a model the mesh lacks).
        count = cfg.security.limits.max_metadata_count
        refused, _, _ = await infer(ch, [(f"x-k{i}", "v") for i in range(count + 1)])
        assert refused is grpc.StatusCode.INVALID_ARGUMENT
        big, _, _ = await infer(ch, raw=request_bytes(dim=cfg.edge.max_message_bytes // 4 + 16))
        assert big is grpc.StatusCode.RESOURCE_EXHAUSTED
        # A call the caller cancels while the edge waits on the (40 ms away) backend.
        call = ch.unary_unary(INFER)(request_bytes(),
                                     metadata=(("x-allowed-regions", "r-west"),))
        await eventually(lambda: any(edge.router.inflight.values()), 5,
                         "the call reached the backend", poll_s=0.001)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        west = "west-cheap/summarize-small"
        await eventually(lambda: (("summarize", west, "CANCELLED") in scrape(mport)), 10,
                         "the cancelled call is counted")
    got = scrape(mport)
    failed = [d for (m, d, s) in got if (m, s) == ("summarize", "INVALID_ARGUMENT") and d]
    assert len(failed) == 1 and failed[0].startswith("east-fast/"), got
    assert got == {("summarize", served, "OK"): 1.0,
                   ("summarize", failed[0], "INVALID_ARGUMENT"): 1.0,
                   ("unknown", "", "NOT_FOUND"): 1.0,
                   ("summarize", "", "INVALID_ARGUMENT"): 1.0,
                   ("summarize", "", "RESOURCE_EXHAUSTED"): 1.0,
                   ("summarize", west, "CANCELLED"): 1.0}, got
    assert tr_bad["x-request-id"]
    # Routed calls only, each by whether it met its own SLO: the served one as its
    # x-slo-met trailer says; the backend's error and the cancelled call missed theirs.
    assert tr["x-slo-met"] == "true"
    slo = {k: v for k, v in scrape_slo(mport).items() if v}  # unrouted calls: 0 series
    assert slo == {("summarize", "true"): 1.0, ("summarize", "false"): 2.0}, slo


# -- policies and hints ------------------------------------------------------------------

async def test_a_quality_floor_nothing_meets_is_failed_precondition_without_retry(
        channel: grpc.aio.Channel) -> None:
    code, tr, details = await infer(channel, [("x-min-quality", "1.0"),
                                              ("x-request-id", "q1")])
    assert code is grpc.StatusCode.FAILED_PRECONDITION, details
    assert "best quality 0.9" in details and "regions" in details
    assert "retry-after-ms" not in tr and tr["x-request-id"] == "q1"


async def test_a_zero_cost_cap_is_a_cap(channel: grpc.aio.Channel) -> None:
    code, tr, details = await infer(channel, [("x-max-cost-usd", "0")])
    assert code is grpc.StatusCode.FAILED_PRECONDITION, (code, tr)
    assert "lowest cost $" in details and "retry-after-ms" not in tr


async def test_disagreeing_repeated_hints_are_rejected(channel: grpc.aio.Channel) -> None:
    code, _, details = await infer(channel, [("x-min-quality", "0.9"),
                                             ("x-min-quality", "0.1")])
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "x-min-quality" in details and "'0.9'" in details and "'0.1'" in details
    code, tr, _ = await infer(channel, [("x-min-quality", "0.9"), ("x-min-quality", "0.9"),
                                        ("x-slo-ms", "400")])
    assert code is grpc.StatusCode.OK and tr["x-served-by"].endswith("summarize-large")


# -- limits ------------------------------------------------------------------------------

async def test_metadata_count_limit_is_exact_and_the_rejection_has_trailers(
        channel: grpc.aio.Channel, cfg: MeshConfig) -> None:
    limit = cfg.security.limits.max_metadata_count
    md = [("x-request-id", "count-1"), *((f"x-k{i}", "v") for i in range(limit - 1))]
    code, tr, details = await infer(channel, md)
    assert code is grpc.StatusCode.OK, details  # exactly the limit of custom entries
    code, tr, details = await infer(channel, [*md, ("x-one-more", "v")])
    assert code is grpc.StatusCode.INVALID_ARGUMENT and f"{limit + 1} metadata" in details
    assert tr["x-request-id"] == "count-1"
    code, tr, _ = await infer(channel, [(f"x-k{i}", "v") for i in range(limit + 1)])
    assert code is grpc.StatusCode.INVALID_ARGUMENT and len(tr["x-request-id"]) == 16


# -- control RPCs through tritonclient ---------------------------------------------------

async def test_server_metadata_and_statistics_answer_for_logical_models(mesh: Mesh) -> None:
    def control() -> tuple[object, int, int, set[str], str]:
        c = mesh.client()
        meta = c.get_server_metadata()
        before = c.get_inference_statistics(model_name="summarize")
        x = summarize_input()
        for _ in range(3):
            c.infer("summarize", [x], headers={"x-slo-ms": "400"})
        after = c.get_inference_statistics(model_name="summarize")
        every = c.get_inference_statistics()
        try:
            c.get_inference_statistics(model_name="no-such-model")
        except InferenceServerException as exc:
            missing = str(exc.status())
        else:
            missing = "answered"
        assert [s.name for s in after.model_stats] == ["summarize"]
        return (meta, before.model_stats[0].inference_count,
                after.model_stats[0].inference_count,
                {s.name for s in every.model_stats}, missing)

    meta, before, after, every, missing = await asyncio.to_thread(control)
    assert meta.name == "switchyard-edge" and "statistics" in meta.extensions
    assert after >= before + 3  # the calls just made, summed over the serving deployments
    assert every == {"summarize", "generate"}
    assert "NOT_FOUND" in missing


async def test_an_oversized_request_is_refused_with_the_limit_and_trailers(
        channel: grpc.aio.Channel, cfg: MeshConfig) -> None:
    limit = cfg.edge.max_message_bytes
    big = request_bytes(dim=limit // 4 + 16)  # FP32: just over the limit
    code, tr, details = await infer(channel, [("x-request-id", "big-1")], raw=big)
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and str(limit) in details, details
    assert tr["x-request-id"] == "big-1"
    stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")(
        metadata=(("x-request-id", "big-2"),), timeout=5)
    await stream.write(request_bytes("generate", dim=limit // 4 + 16))
    await stream.done_writing()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stream:
            pass
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(err.value.trailing_metadata() or ())["x-request-id"] == "big-2"
