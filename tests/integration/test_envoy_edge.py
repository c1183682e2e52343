"""Envoy as the edge: real Triton backends, placement serving delta ADS, a real Envoy process
configured only by placement, and an unmodified tritonclient calling a logical model name."""

from __future__ import annotations

import asyncio
import pathlib
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from envoy.data.accesslog.v3 import accesslog_pb2
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from services.api.switchyard.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc
from services.backends.triton import TritonProcess
from services.config import MeshConfig
from services.demo import infer_with_trailers
from services.edge.envoy.bootstrap import EnvoyNode
from services.edge.envoy.launcher import EnvoyEdge, prepare
from services.edge.envoy.supervisor import Supervisor
from services.placement.main import RunningPlacement, start_placement
from services.ports import free_port
from services.xds.learning import call_class
from tests.envoy_harness import running_envoy_edge
from tests.h2_client import h2_infer
from tests.mesh_harness import eventually, mesh_config, request_bytes, summarize_input

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    return mesh_config(tmp_path_factory.mktemp("envoy-mesh"))


@dataclass
class EnvoyMesh:
    placement: RunningPlacement
    envoy: EnvoyEdge

    def call(self, model: str = "summarize", metadata: Sequence[tuple[str, str]] = (),
             timeout_s: float = 5.0) -> tuple[tc.InferResult, dict[str, str]]:
        client = tc.InferenceServerClient(self.envoy.address)
        try:
            return infer_with_trailers(client, model, [summarize_input()], metadata, timeout_s)
        finally:
            client.close()

    def order(self) -> list[str]:
        assert self.placement.ads is not None
        return self.placement.ads.region_config(self.envoy.node.region).orders["summarize"]


# Placement pushes the listener's work as the C dynamic module to an Envoy that loads it
# ([edge] envoy_filters = "auto", the default, with native/build.sh's module built) and as the
# Lua otherwise: every contract here holds on both.
@pytest.fixture(params=["module", "lua"])
async def mesh(request: pytest.FixtureRequest, cfg: MeshConfig,
               tritons: dict[str, TritonProcess],
               tmp_path: pathlib.Path) -> AsyncIterator[EnvoyMesh]:
    filters = request.param
    cfg = cfg.model_copy(update={"edge": cfg.edge.model_copy(
        update={"envoy_filters": filters})})
    async with running_envoy_edge(cfg, tmp_path) as (placement, envoy):
        assert envoy.node.module is (filters == "module")
        pushed = envoy.admin("/config_dump?resource=dynamic_listeners")
        assert ("DynamicModuleFilter" in pushed) is (filters == "module"), pushed[:2000]
        # the aggregates over two variants: the upstream rewrite of the same kind, no other
        upstream = envoy.admin("/config_dump?resource=dynamic_active_clusters")
        assert "switchyard.variant_rewrite" in upstream
        assert "DynamicModuleFilter" not in upstream if filters == "lua" else (
            "lua.v3.Lua" not in upstream)
        yield EnvoyMesh(placement, envoy)


async def test_a_logical_name_is_served_by_the_variant_of_the_deployment_envoy_chose(
        mesh: EnvoyMesh) -> None:
    result, trailers = await asyncio.to_thread(mesh.call)
    served = trailers["x-served-by"]
    backend, variant = served.split("/", 1)
    # The upstream Lua rewrote the name to the variant in the chosen endpoint's metadata:
    # Triton answered as that variant, on the backend the trailer names.
    assert result.get_response().model_name == variant
    assert served in mesh.order()
    assert trailers["x-served-region"] == (
        mesh.placement.service.fleet.backends[backend].backend.region)
    assert trailers["x-attempts"] == "1" and trailers["x-request-id"]
    _, mine = await asyncio.to_thread(mesh.call, "summarize", [("x-request-id", "req-42")])
    assert mine["x-request-id"] == "req-42"
    assert result.as_numpy("OUTPUT0") is not None
    assert mesh.placement.ads is not None
    (session,) = mesh.placement.ads.sessions
    assert session.replies.acks >= 3 and not session.replies.nacks  # Envoy took every push


async def _drain_and_watch_calls_move(mesh: EnvoyMesh) -> None:
    _, trailers = await asyncio.to_thread(mesh.call)
    drained = trailers["x-served-by"].split("/", 1)[0]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.placement.port}") as ch:
        await placement_pb2_grpc.PlacementStub(ch).SetAvailability(
            placement_pb2.SetAvailabilityRequest(
                scope=placement_pb2.AVAILABILITY_SCOPE_BACKEND, target=drained,
                availability=fleet_pb2.AVAILABILITY_DRAINED))
    seen: list[str] = []

    def moved() -> bool:
        _, tr = mesh.call()
        seen.append(tr["x-served-by"])
        return not tr["x-served-by"].startswith(drained + "/")

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while not await asyncio.to_thread(moved):
        assert loop.time() - t0 < 10, f"calls still served by drained {drained}: {seen}"
    after = [(await asyncio.to_thread(mesh.call))[1]["x-served-by"] for _ in range(5)]
    assert not any(s.startswith(drained + "/") for s in after), after
    assert all(s.split("/", 1)[0] != drained for s in mesh.order())


async def test_envoys_calls_reach_placement_as_observations_and_call_rates(
        mesh: EnvoyMesh) -> None:
    ads, edge = mesh.placement.ads, mesh.envoy.node
    assert ads is not None
    logged: list[object] = []  # what reached the region's learning, as Envoy logged it
    observe = ads.learning.observe

    def keep(region: str, entry: accesslog_pb2.HTTPAccessLogEntry) -> bool:
        logged.append(entry)
        return observe(region, entry)

    ads.learning.observe = keep  # type: ignore[method-assign]
    served = {(await asyncio.to_thread(mesh.call))[1]["x-served-by"] for _ in range(12)}
    for _ in range(3):  # a tight class (nothing fits 1 ms: its own order)
        await asyncio.to_thread(mesh.call, "summarize", [("x-slo-ms", "1.5")])
    fleet = mesh.placement.service.fleet
    key = (edge.region, edge.edge_id)

    def reported() -> bool:
        return all(fleet.use.get(d, {}).get(key, (0.0, 0.0))[0] > 0
                   and fleet.observed.get((edge.region, d)) is not None for d in served)

    await eventually(reported, 10, f"placement saw the Envoy edge's calls to {served}")
    for d in served:
        assert fleet.observed[(edge.region, d)].p95_ms > 0
    # Each entry names its call's class (model, whole-ms SLO from the hint or the deadline),
    # which placement learns for the region's next compile (keyed by that SLO: the 1 ms hint,
    # and the deadlines' whole ms): a rate for both classes called.
    await eventually(lambda: ads.learning.calls >= 15, 10, "placement learned the calls")
    models = ads.region_config(edge.region).models
    headers = [e.request.request_headers for e in logged]  # type: ignore[attr-defined]
    classes = {call_class(models, h["x-switchyard-model"], h["x-switchyard-slo-ms"])
               for h in headers if "x-switchyard-model" in h}
    assert None not in classes and {k.slo_ms == 1 for k in classes if k} == {True, False}, classes
    rates = ads.learning.learned(edge.region, {}).rates
    assert all(rates.get(k.key, 0) > 0 for k in classes if k is not None), rates
    slos = {e.common_properties.metadata.filter_metadata["switchyard"]  # type: ignore[attr-defined]
            .fields["slo_ms"].number_value for e in logged
            if e.request.request_headers.get("x-switchyard-slo-ms") == "1"}  # type: ignore[attr-defined]
    assert slos == {1.5}  # the call's own SLO, for its miss verdict


async def test_a_drained_backend_stops_serving_and_calls_move_to_another_deployment(
        mesh: EnvoyMesh) -> None:
    await _drain_and_watch_calls_move(mesh)


async def test_state_of_the_world_ads_configures_an_envoy_the_same_way(
        cfg: MeshConfig, mesh: EnvoyMesh, tmp_path: pathlib.Path) -> None:
    node, bootstrap = prepare(cfg, cfg.edges[0], placement=[f"127.0.0.1:{mesh.placement.port}"],
                              port=free_port(), run_dir=tmp_path, delta=False, name="sotw")
    sotw = EnvoyEdge(node, bootstrap, concurrency=1)
    sotw.start()
    try:
        await eventually(sotw.ready, 20, "the SotW Envoy listens")
        only_sotw = EnvoyMesh(mesh.placement, sotw)
        result, trailers = await asyncio.to_thread(only_sotw.call)
        assert result.get_response().model_name == trailers["x-served-by"].split("/", 1)[1]
        assert mesh.placement.ads is not None
        assert {type(s).__name__ for s in mesh.placement.ads.sessions} == {"DeltaSession",
                                                                            "SotwSession"}
        await _drain_and_watch_calls_move(only_sotw)
    finally:
        sotw.stop()


async def test_the_slo_hint_picks_its_class_and_hints_envoy_cannot_honour_are_refused(
        mesh: EnvoyMesh) -> None:
    # 1 ms: nothing fits, so the fastest (the expensive backend next to the edge) serves;
    # without a hint (a 5 s deadline) the cheapest that fits, a cheap remote one.
    _, tight = await asyncio.to_thread(mesh.call, "summarize", [("x-slo-ms", "1")])
    _, loose = await asyncio.to_thread(mesh.call)
    assert tight["x-served-by"].startswith("east-fast/"), tight
    assert not loose["x-served-by"].startswith("east-fast/"), loose
    # Repeating the same value is fine; fractions round down (never looser).
    _, again = await asyncio.to_thread(mesh.call, "summarize",
                                       [("x-slo-ms", "1.9"), ("x-slo-ms", "1.9")])
    assert again["x-served-by"].startswith("east-fast/"), again
    refused = {
        "x-slo-ms=abc": ([("x-slo-ms", "abc")], "StatusCode.INVALID_ARGUMENT"),
        "disagreeing x-slo-ms": ([("x-slo-ms", "40"), ("x-slo-ms", "4000")],
                                 "StatusCode.INVALID_ARGUMENT"),
        "x-min-quality": ([("x-min-quality", "0.9")], "StatusCode.UNIMPLEMENTED"),
        "x-allowed-regions": ([("x-allowed-regions", "r-east")], "StatusCode.UNIMPLEMENTED"),
    }
    for name, (md, status) in refused.items():
        with pytest.raises(InferenceServerException) as err:
            await asyncio.to_thread(mesh.call, "summarize", md)
        assert err.value.status() == status, (name, err.value)


async def test_liveness_readiness_and_model_rpcs_go_where_the_models_calls_go(
        mesh: EnvoyMesh) -> None:
    def ask() -> tuple[bool, bool, bool, str]:
        client = tc.InferenceServerClient(mesh.envoy.address)
        try:
            return (client.is_server_live(), client.is_server_ready(),
                    client.is_model_ready("summarize"),
                    client.get_model_metadata("summarize").name)
        finally:
            client.close()

    live, ready, model_ready, name = await asyncio.to_thread(ask)
    assert live and ready and model_ready
    assert name in {"summarize-small", "summarize-large"}  # the variant that would serve
    with pytest.raises(InferenceServerException) as err:
        await asyncio.to_thread(
            lambda: tc.InferenceServerClient(mesh.envoy.address).is_model_ready("nope"))
    assert err.value.status() == "StatusCode.NOT_FOUND"


def _infer_request(model: str, floats: int = 16) -> bytes:
    req = service_pb2.ModelInferRequest(model_name=model)
    x = req.inputs.add(name="INPUT0", datatype="FP32", shape=[1, floats])
    assert x is not None
    req.raw_input_contents.append(np.ones((1, floats), np.float32).tobytes())
    return req.SerializeToString()


async def test_what_envoy_cannot_route_gets_the_documented_grpc_status_never_unknown(
        mesh: EnvoyMesh) -> None:
    limit = 16 * 1024 * 1024
    cases = {  # name: (request bytes, call options, expected status, words in the message)
        "unknown model": (_infer_request("no-such-model"), {}, grpc.StatusCode.NOT_FOUND,
                          "model 'no-such-model' is not served by this mesh (known: "
                          "generate, summarize)"),
        "bytes that do not parse": (b"\xff\xff\xff", {}, grpc.StatusCode.INVALID_ARGUMENT,
                                    "do not parse"),
        "no model name": (b"", {}, grpc.StatusCode.INVALID_ARGUMENT, "model name is empty"),
        "gzip": (_infer_request("summarize"), {"compression": grpc.Compression.Gzip},
                 grpc.StatusCode.UNIMPLEMENTED, "uncompressed"),
        "over 16 MiB": (_infer_request("summarize", limit // 4 + 100_000), {},
                        grpc.StatusCode.RESOURCE_EXHAUSTED, "max_message_bytes"),
    }
    got = {}
    async with grpc.aio.insecure_channel(
            mesh.envoy.address, options=[("grpc.max_send_message_length", 2 * limit)]) as ch:
        infer = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for name, (body, options, _, _) in cases.items():
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await infer(body, timeout=10, **options)
            got[name] = (err.value.code(), err.value.details() or "")
    assert {n: c for n, (c, _) in got.items()} == {n: c[2] for n, c in cases.items()}
    for name, (_, _, _, words) in cases.items():
        assert words in got[name][1], (name, got[name])


async def test_a_message_just_under_16_mib_reaches_triton_as_the_variant(
        mesh: EnvoyMesh) -> None:
    body = _infer_request("summarize", 4_000_000)  # 16 MB of floats: a shape Triton refuses
    async with grpc.aio.insecure_channel(
            mesh.envoy.address, options=[("grpc.max_send_message_length", 32 << 20)]) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")(body, timeout=10)
    # Triton's own answer, naming the variant the upstream Lua rewrote the request to.
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unexpected shape" in (err.value.details() or "")
    assert "'summarize-" in (err.value.details() or "")


async def test_a_restarted_envoy_edge_serves_from_its_snapshot_while_placement_is_down(
        cfg: MeshConfig, tritons: dict[str, TritonProcess], tmp_path: pathlib.Path) -> None:
    placement = await start_placement(cfg, port=0, metrics_port=0)
    port = placement.port
    edge = cfg.edges[0]
    node = EnvoyNode(edge.id, edge.region, "127.0.0.1", free_port(), 0)

    async def supervised() -> tuple[Supervisor, threading.Event, asyncio.Future[None]]:
        sup = Supervisor(node, [f"127.0.0.1:{port}"], tmp_path, concurrency=1,
                         interval_s=0.1)
        stop = threading.Event()
        running = asyncio.ensure_future(asyncio.to_thread(sup.run, stop))
        await eventually(lambda: sup.envoy is not None and sup.serving(), 20, "Envoy serves")
        return sup, stop, running

    sup, stop, running = await supervised()
    try:
        assert sup.mode == "ads"
        envoy_mesh = EnvoyMesh(placement, sup.envoy)  # type: ignore[arg-type]
        _, before = await asyncio.to_thread(envoy_mesh.call)
        await eventually(sup.snapshot_path.exists, 10, "the snapshot is saved")
        await placement.stop(0.5)
        _, alone = await asyncio.to_thread(envoy_mesh.call)  # Envoy keeps its last config
        assert alone["x-served-by"] == before["x-served-by"]
    finally:
        stop.set()
        await running
        await placement.stop(0.5)

    # Placement is down; a fresh Envoy starts from the snapshot and serves the same way.
    sup, stop, running = await supervised()
    restarted: RunningPlacement | None = None
    try:
        assert sup.mode == "snapshot"
        assert sup.envoy is not None
        result, during = await asyncio.to_thread(EnvoyMesh(placement, sup.envoy).call)
        assert during["x-served-by"] == before["x-served-by"]
        assert result.get_response().model_name == during["x-served-by"].split("/", 1)[1]
        # Placement comes back on its address: an ADS Envoy takes the port over.
        restarted = await start_placement(cfg, port=port, metrics_port=0)
        await eventually(lambda: sup.mode == "ads", 30, "the supervisor hands over to ADS")
        assert restarted.ads is not None and restarted.ads.sessions
        assert sup.envoy is not None
        _, after = await asyncio.to_thread(EnvoyMesh(restarted, sup.envoy).call)
        assert after["x-served-by"]
    finally:
        stop.set()
        await running
        if restarted is not None:
            await restarted.stop(0.5)


# What a backend's gRPC server resets the stream for, sent by the caller (native/rules.c
# sy_wire_refusal, lua_checks.py wire_fault): Envoy forwarded it, took Triton's reset for the
# backend's failure, retried it at the next deployment and counted it there: 4 calls each
# answered UNAVAILABLE and ejected 3 deployments, six snappy calls all 5 of summarize's (a
# content-type that is not gRPC's too; h2_infer sends the one given in place of gRPC's).
WIRE = [([("grpc-encoding", "snappy")], "12", "grpc-encoding snappy is not supported"),
        ([("x-junk-bin", "!!!")], "3", "x-junk-bin is not base64"),
        ([("grpc-tags-bin", "!!!")], "3", "grpc-tags-bin is not base64"),
        ([("grpc-previous-rpc-attempts", "x")], "3", "is not a count of attempts"),
        ([("grpc-status", "x")], "3", "grpc-status is a response's"),
        ([("content-type", "text/plain")], "3", "content-type text/plain is not gRPC's")]


async def test_a_callers_malformed_metadata_is_refused_and_ejects_no_backend(
        mesh: EnvoyMesh) -> None:
    """Each refused by the listener with a status naming it (UNIMPLEMENTED for an unknown
    encoding, as gRPC's spec says), no deployment ejected; the same headers well formed are
    served. Fails on the old listener: UNAVAILABLE 'remote reset', deployments ejected."""
    def ejections() -> int:
        return sum(int(line.rpartition(": ")[2]) for line in
                   mesh.envoy.admin("/stats?filter=ejections_enforced_total").splitlines())

    before = ejections()
    for extra, code, words in WIRE:
        for _ in range(3):
            status, message = await h2_infer(mesh.envoy.address, extra, request_bytes())
            assert status == code and words in message, (extra, status, message)
    assert ejections() == before
    fine = [("grpc-encoding", "identity"), ("x-trace-bin", "AAEC"), ("x-pad-bin", "AAE="),
            ("grpc-previous-rpc-attempts", "1")]
    assert (await h2_infer(mesh.envoy.address, fine, request_bytes()))[0] == "0"


async def test_envoy_ejects_a_dead_backend_on_its_own_and_calls_keep_succeeding(
        cfg: MeshConfig, tritons: dict[str, TritonProcess], tmp_path: pathlib.Path) -> None:
    # No agent: placement never learns of the death, so only Envoy's outlier detection and
    # retries (to the next deployment in placement's order) keep calls succeeding.
    placement = await start_placement(cfg, port=0, metrics_port=0)
    node, bootstrap = prepare(cfg, cfg.edges[0], placement=[f"127.0.0.1:{placement.port}"],
                              port=free_port(), run_dir=tmp_path)
    envoy = EnvoyEdge(node, bootstrap, concurrency=1)
    envoy.start()
    victim = ""
    try:
        await eventually(envoy.ready, 20, "Envoy listens")
        m = EnvoyMesh(placement, envoy)
        _, first = await asyncio.to_thread(m.call)
        victim = first["x-served-by"].split("/", 1)[0]
        await tritons[victim].stop_async(0.5)
        answers = [(await asyncio.to_thread(m.call))[1] for _ in range(6)]
        served = [a["x-served-by"] for a in answers]
        assert not any(s.startswith(victim + "/") for s in served), served
        assert int(answers[0]["x-attempts"]) > 1  # the first call after the kill retried

        def ejected() -> bool:
            return any(line.startswith(f"dep:{victim}/") and "failed_outlier_check" in line
                       for line in envoy.admin("/clusters").splitlines())

        await eventually(ejected, 5, f"Envoy ejected {victim}")
    finally:
        envoy.stop()
        await placement.stop(0.5)
        if victim:
            tritons[victim].start()
            await tritons[victim].wait_ready_async(60)


async def test_a_running_envoy_reconnects_to_a_restarted_placement_and_follows_it(
        cfg: MeshConfig, tritons: dict[str, TritonProcess], tmp_path: pathlib.Path) -> None:
    placement = await start_placement(cfg, port=0, metrics_port=0)
    port = placement.port
    node, bootstrap = prepare(cfg, cfg.edges[0], placement=[f"127.0.0.1:{port}"],
                              port=free_port(), run_dir=tmp_path)
    envoy = EnvoyEdge(node, bootstrap, concurrency=1)
    envoy.start()
    restarted: RunningPlacement | None = None
    try:
        await eventually(envoy.ready, 20, "Envoy listens")
        _, before = await asyncio.to_thread(EnvoyMesh(placement, envoy).call)
        await placement.stop(0.5)
        restarted = await start_placement(cfg, port=port, metrics_port=0)
        assert restarted.ads is not None
        ads = restarted.ads
        await eventually(lambda: any(s.replies.acks for s in ads.sessions), 20,
                         "Envoy reconnected (delta ADS, with the versions it holds)")
        (session,) = ads.sessions
        assert not session.replies.nacks
        await _drain_and_watch_calls_move(EnvoyMesh(restarted, envoy))
        assert before["x-served-by"]
    finally:
        envoy.stop()
        await placement.stop(0.5)
        if restarted is not None:
            await restarted.stop(0.5)
