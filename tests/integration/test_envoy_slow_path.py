"""The Envoy edge's named slow path: streams, the hints compiled config cannot express and the
RPCs that answer for the whole mesh go to the co-located Python edge; the fast path carries
the Python edge's cost and SLO trailers; each answer names its path.

One mesh for the module: real Triton backends, placement serving ADS, a node agent, the
slow-path Python edge and a real Envoy whose node metadata names it; unmodified tritonclient
and raw gRPC callers."""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
import tritonclient.grpc as tc

from services.backends.triton import TritonProcess
from services.config import MeshConfig
from services.edge.envoy.launcher import EnvoyEdge, prepare
from services.edge.envoy.slowpath import SUFFIX
from services.ports import free_port
from tests.envoy_harness import EnvoyMesh, running_envoy_mesh
from tests.llm_harness import PROMPT, direct, run_stream
from tests.mesh_harness import (
    eventually,
    eventually_sync,
    mesh_config,
    raw_infer,
    request_bytes,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

# The trailers a served unary call carries on either path (README, "Trailers").
SERVED_TRAILERS = {"x-served-by", "x-served-region", "x-cost-usd", "x-slo-met", "x-attempts",
                   "x-request-id", "x-switchyard-path"}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    return mesh_config(tmp_path_factory.mktemp("envoy-slow"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(cfg: MeshConfig, tritons: dict[str, TritonProcess],
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EnvoyMesh]:
    async with running_envoy_mesh(cfg, tmp_path_factory.mktemp("envoy")) as m:
        yield m


async def test_a_stream_through_envoy_takes_the_slow_path_and_every_token_arrives(
        mesh: EnvoyMesh, tritons: dict[str, TritonProcess]) -> None:
    before = await asyncio.to_thread(mesh.envoy_stat, "cluster.slow-path.upstream_rq_total")
    arrived: list[float] = []
    stream = await asyncio.to_thread(run_stream, mesh.envoy.address, PROMPT, 40, [],
                                     lambda n, s: arrived.append(time.perf_counter()))
    assert stream.code is grpc.StatusCode.OK, stream.details
    assert stream.trailers["x-switchyard-path"] == "slow"
    backend, variant = stream.trailers["x-served-by"].split("/", 1)
    # Exactly the tokens the serving backend generates for this prompt, none lost or repeated.
    expected = await asyncio.to_thread(direct, tritons[backend].endpoint, variant, PROMPT, 40)
    assert stream.tokens == expected and len(expected) == 40
    assert stream.trailers["x-tokens-out"] == "40"
    # As they are generated, not buffered to the end: 39 decode steps of at least 0.5 ms
    # (emulated, the fastest backend) lie between the first token and the last.
    assert arrived[-1] - arrived[0] > 0.010
    after = await asyncio.to_thread(mesh.envoy_stat, "cluster.slow-path.upstream_rq_total")
    assert after == before + 1  # Envoy's own counter of slow-path calls


async def test_each_hint_envoy_cannot_compile_is_honoured_exactly_on_the_slow_path(
        mesh: EnvoyMesh) -> None:
    plain = await asyncio.to_thread(mesh.call)
    assert plain["x-switchyard-path"] == "envoy"
    assert plain["x-served-by"].endswith("/summarize-small"), plain  # the cheapest quality

    async def served(md: list[tuple[str, str]], n: int = 4) -> list[dict[str, str]]:
        answers = [await asyncio.to_thread(mesh.call, md) for _ in range(n)]
        assert {a["x-switchyard-path"] for a in answers} == {"slow"}, answers
        return answers

    # A quality floor is never served below it: only summarize-large has quality 0.9.
    for a in await served([("x-min-quality", "0.8")]):
        assert a["x-served-by"].endswith("/summarize-large"), a
    # A region set is never left, even where the cheaper deployments are elsewhere.
    for a in await served([("x-allowed-regions", "r-west")]):
        assert a["x-served-region"] == "r-west", a
    # A routing profile is the Python edge's own (its choice is tested with the Python edge;
    # here: it is served there, not compiled away).
    await served([("x-routing-profile", "fastest")], n=1)
    # A cost cap holds: under a generous one the answer costs no more than it.
    for a in await served([("x-max-cost-usd", "0.001")], n=2):
        assert float(a["x-cost-usd"]) <= 0.001
    refused = {  # hints whose exact answer is a refusal
        "x-max-cost-usd=0 (no deployment is free)": (
            [("x-max-cost-usd", "0")], "StatusCode.FAILED_PRECONDITION"),
        "quality 0.8 only in r-west (which has only the 0.7 variant)": (
            [("x-min-quality", "0.8"), ("x-allowed-regions", "r-west")],
            "StatusCode.FAILED_PRECONDITION"),
        "fail fast when nothing meets 1 ms": (
            [("x-fail-fast", "true"), ("x-slo-ms", "1")], "StatusCode.RESOURCE_EXHAUSTED"),
        "a malformed hint": ([("x-min-quality", "high")], "StatusCode.INVALID_ARGUMENT"),
    }
    for name, (md, status) in refused.items():
        assert await asyncio.to_thread(mesh.status, md) == status, name
    # An error answer names its path too (trailers-only: Envoy's Lua adds it).
    async with grpc.aio.insecure_channel(mesh.envoy.address) as ch:
        code, trailers, _ = await raw_infer(ch, [("x-max-cost-usd", "0")])
        assert code is grpc.StatusCode.FAILED_PRECONDITION
        assert trailers["x-switchyard-path"] == "slow" and trailers["x-request-id"]
        code, trailers, _ = await raw_infer(ch, raw=request_bytes(dim=8))  # a wrong shape
        assert code is grpc.StatusCode.INVALID_ARGUMENT  # Triton's own answer, fast path
        assert trailers["x-switchyard-path"] == "envoy"


async def test_a_fast_path_call_carries_the_python_edges_cost_and_slo_trailers(
        mesh: EnvoyMesh) -> None:
    assert mesh.placement.ads is not None
    ads, region = mesh.placement.ads, mesh.envoy.node.region

    def costs() -> dict[str, str]:
        m = ads.region_config(region).models["summarize"]
        return {d: f"{c:.10f}" for d, c in m.cost_usd.items()}

    before = costs()
    loose = await asyncio.to_thread(mesh.call, [("x-slo-ms", "5000")])
    after = costs()
    assert set(loose) >= SERVED_TRAILERS and loose["x-switchyard-path"] == "envoy"
    served = loose["x-served-by"]
    assert loose["x-cost-usd"] in {before.get(served), after.get(served)}  # the table's price
    assert float(loose["x-cost-usd"]) > 0
    assert loose["x-slo-met"] == "true"  # a deployment that fits, well within 5 s
    # 1 ms: nothing fits (the margin alone is 2 ms), the fastest serves as a best effort:
    # not met, however fast it was.
    tight = await asyncio.to_thread(mesh.call, [("x-slo-ms", "1")])
    assert tight["x-switchyard-path"] == "envoy" and tight["x-slo-met"] == "false"
    # No hint but the deadline (5 s): met too, and the slow path's answer has the same keys.
    assert (await asyncio.to_thread(mesh.call))["x-slo-met"] == "true"
    slow = await asyncio.to_thread(mesh.call, [("x-allowed-regions", "r-east,r-central")])
    assert set(slow) >= SERVED_TRAILERS and slow["x-switchyard-path"] == "slow"


async def test_repository_index_statistics_and_server_metadata_answer_for_the_mesh(
        mesh: EnvoyMesh) -> None:
    def ask() -> tuple[set[str], str, int, str]:
        client = tc.InferenceServerClient(mesh.envoy.address)
        try:
            index = client.get_model_repository_index()
            stats = client.get_inference_statistics("summarize")
            return ({m.name for m in index.models}, stats.model_stats[0].name,
                    stats.model_stats[0].inference_stats.success.count,
                    client.get_server_metadata().name)
        finally:
            client.close()

    await asyncio.to_thread(mesh.call)
    models, name, successes, server = await asyncio.to_thread(ask)
    assert models == {"summarize", "generate"}  # logical models, not variants
    assert name == "summarize" and successes > 0  # summed over its deployments
    assert server == "switchyard-edge"


async def test_control_rpcs_answer_as_a_python_edge_does_for_the_logical_model(
        mesh: EnvoyMesh) -> None:
    def ask() -> tuple[bool, bool, bool, bool, str, str]:
        client = tc.InferenceServerClient(mesh.envoy.address)
        try:
            return (client.is_server_live(), client.is_server_ready(),
                    client.is_model_ready("summarize"), client.is_model_ready("nope"),
                    client.get_model_metadata("summarize").name,
                    client.get_model_config("summarize").config.name)
        finally:
            client.close()

    before = await asyncio.to_thread(mesh.envoy_stat, "cluster.slow-path.upstream_rq_total")
    live, ready, model_ready, unknown_ready, name, config_name = await asyncio.to_thread(ask)
    assert live and ready and model_ready
    assert not unknown_ready  # not ready, as a Python edge says (Envoy alone: NOT_FOUND)
    assert (name, config_name) == ("summarize", "summarize")  # the logical name, not a variant
    after = await asyncio.to_thread(mesh.envoy_stat, "cluster.slow-path.upstream_rq_total")
    assert after == before + 6


async def test_slow_path_calls_are_reported_once_by_the_python_edge_not_by_envoys_log(
        mesh: EnvoyMesh) -> None:
    feedback = mesh.placement.ads.feedback if mesh.placement.ads is not None else None
    assert feedback is not None

    def all_logged() -> bool:  # every request Envoy finished has reached placement's log
        return feedback.entries == mesh.envoy_stat("http.switchyard.downstream_rq_total")

    await eventually(lambda: all_logged() and feedback.entries > 0, 10, "Envoy's log caught up")
    fast0, slow0 = feedback.calls, feedback.slow_calls
    for _ in range(3):
        await asyncio.to_thread(mesh.call)
    for _ in range(2):
        await asyncio.to_thread(mesh.call, [("x-min-quality", "0.8")])
    await eventually(all_logged, 10, "Envoy logged the five calls")
    # Envoy's feedback counted its own three; the two slow-path calls were logged, not counted.
    assert (feedback.calls - fast0, feedback.slow_calls - slow0) == (3, 2)
    # Placement's /metrics counts them by path.
    registry = mesh.placement.service.metrics.registry
    by_path = {p: registry.get_sample_value("switchyard_envoy_requests_total",
                                            {"edge": mesh.envoy.node.edge_id, "path": p})
               for p in ("envoy", "slow")}
    assert by_path["slow"] == feedback.slow_calls
    assert (by_path["envoy"] or 0) >= feedback.calls  # also errors no deployment claimed
    fleet, edge = mesh.placement.service.fleet, mesh.envoy.node
    slow_edge = (edge.region, edge.edge_id + SUFFIX)

    def reported() -> bool:  # the slow path reports its own calls, under its own id
        return any(slow_edge in users and users[slow_edge][0] > 0
                   for dep, users in fleet.use.items() if dep.endswith("/summarize-large"))

    await eventually(reported, 10, "placement saw the slow path's own report")


async def test_envoys_own_replies_are_documented_statuses_when_the_slow_path_is_down(
        cfg: MeshConfig, mesh: EnvoyMesh, tmp_path: pathlib.Path) -> None:
    # An Envoy whose slow path is not listening: its slow calls are UNAVAILABLE (Envoy's
    # local 503, mapped), never UNKNOWN, never served on the fast path instead.
    node, bootstrap = prepare(cfg, cfg.edges[0], placement=[f"127.0.0.1:{mesh.placement.port}"],
                              port=free_port(), run_dir=tmp_path, name="dead-slow",
                              slow_path_port=free_port())
    dead = EnvoyEdge(node, bootstrap, concurrency=1)
    dead.start()
    try:
        await eventually(dead.ready, 20, "the second Envoy listens")
        assert (await asyncio.to_thread(mesh.call, (), "summarize", dead.address)
                )["x-switchyard-path"] == "envoy"
        status = await asyncio.to_thread(mesh.status, [("x-min-quality", "0.8")], dead.address)
        assert status == "StatusCode.UNAVAILABLE"
        stream = await asyncio.to_thread(run_stream, dead.address, PROMPT, 4, [])
        assert stream.code is grpc.StatusCode.UNAVAILABLE and not stream.tokens
        eventually_sync(lambda: "upstream_cx_connect_fail: 0" not in dead.admin(
            "/stats?filter=cluster.slow-path.upstream_cx_connect_fail"), 5,
            "Envoy counted the refused connections to its slow path")
    finally:
        dead.stop()
