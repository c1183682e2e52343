"""Envoy edges' control plane: from a placement change to Envoy using it, and bytes per change.

A real Envoy edge (1 worker) bootstrapped with only placement's address; placement (in this
process, so its ADS sessions can be read) serves delta ADS; two real Triton backends serve
the model, the spot one cheaper. Each change alternately drains and restores the cheap
backend through placement's own ``SetAvailability`` RPC and measures, from the RPC's start:

- ``ack``: until the Envoy has ACKed every response the change caused (no nonce outstanding
  and the ACK count moved), i.e. the new clusters and routes are applied;
- ``first call``: until a tritonclient call through the Envoy is served by the deployment
  the change should move calls to (calls are made back to back until one is);
- the bytes of the xDS responses the change caused.

    python -m benchmarks.xds_push [--quick]
"""

from __future__ import annotations

import asyncio
import pathlib
import tempfile
import time
from typing import Any

import grpc
import tritonclient.grpc as tc

from benchmarks.common import Section, command_for, main, md_table, percentile, progress
from services.api.switchyard.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc
from services.backends.triton import TritonProcess
from services.config import MeshConfig
from services.demo import infer_with_trailers
from services.edge.envoy.launcher import EnvoyEdge, prepare
from services.placement.main import start_placement
from services.ports import free_port
from tests.mesh_harness import eventually, summarize_input

PRICES = """
[[prices]]
accelerator = "gpu"
cloud = "aws"
region = "*"
price_class = "on-demand"
usd_per_gpu_hour = 2.0

[[prices]]
accelerator = "gpu"
cloud = "aws"
region = "*"
price_class = "spot"
usd_per_gpu_hour = 0.5
"""


def mesh(tmp: pathlib.Path) -> MeshConfig:
    (tmp / "prices.toml").write_text(PRICES)
    raw: dict[str, Any] = {
        "base_dir": str(tmp), "run_dir": str(tmp / "run"), "prices_file": "prices.toml",
        "regions": [{"name": "r1", "cloud": "aws"}],
        "models": [{"name": "tiny", "default_slo_ms": 1000, "variants": [
            {"name": "tiny-v1", "quality": 0.8, "matmul_n": 8, "matmul_iters": 1}]}],
        "backends": [
            {"id": "cheap", "region": "r1", "accelerator": "gpu", "price_class": "spot",
             "grpc_port": free_port(), "variants": ["tiny-v1"]},
            {"id": "dear", "region": "r1", "accelerator": "gpu", "grpc_port": free_port(),
             "variants": ["tiny-v1"]}],
        "edges": [{"id": "edge-r1", "region": "r1", "port": free_port()}],
        "placement": {"port": 0},
        "wan": {"emulate": False},
    }
    return MeshConfig.model_validate(raw)


def served_by(address: str) -> str:
    client = tc.InferenceServerClient(address)
    try:
        _, trailers = infer_with_trailers(client, "tiny", [summarize_input()], (), 5.0)
    finally:
        client.close()
    return trailers["x-served-by"]


async def measure(changes: int) -> dict[str, list[float]]:
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="switchyard-xds-"))
    cfg = mesh(tmp)
    tritons = [TritonProcess.for_backend(cfg, b, tmp / b.id) for b in cfg.backends]
    for t in tritons:
        t.start()
    placement = await start_placement(cfg, port=0, metrics_port=0)
    node, bootstrap = prepare(cfg, cfg.edges[0], placement=[f"127.0.0.1:{placement.port}"],
                              run_dir=tmp)
    envoy = EnvoyEdge(node, bootstrap, concurrency=1)
    out: dict[str, list[float]] = {"ack_ms": [], "first_call_ms": [], "bytes": []}
    try:
        for t in tritons:
            await t.wait_ready_async(120)
        envoy.start()
        await eventually(envoy.ready, 30, "Envoy listens")
        assert placement.ads is not None
        (session,) = placement.ads.sessions
        applied = asyncio.Event()

        def on_reply(s: object) -> None:
            if s is session and not session.replies.outstanding:
                applied.set()

        placement.ads.on_reply = on_reply
        progress(f"{changes} changes: drain/restore the cheap backend through placement")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{placement.port}") as ch:
            stub = placement_pb2_grpc.PlacementStub(ch)
            for i in range(changes):
                drain = i % 2 == 0
                want = "dear/tiny-v1" if drain else "cheap/tiny-v1"
                acks, sent = session.replies.acks, placement.ads.pushed_bytes
                applied.clear()
                t0 = time.perf_counter()
                await stub.SetAvailability(placement_pb2.SetAvailabilityRequest(
                    scope=placement_pb2.AVAILABILITY_SCOPE_BACKEND, target="cheap",
                    availability=(fleet_pb2.AVAILABILITY_DRAINED if drain
                                  else fleet_pb2.AVAILABILITY_ACTIVE)))
                await asyncio.wait_for(applied.wait(), 10)
                assert session.replies.acks > acks and not session.replies.nacks
                out["ack_ms"].append((time.perf_counter() - t0) * 1e3)
                out["bytes"].append(placement.ads.pushed_bytes - sent)
                while await asyncio.to_thread(served_by, envoy.address) != want:
                    pass
                out["first_call_ms"].append((time.perf_counter() - t0) * 1e3)
    finally:
        envoy.stop()
        await placement.stop(0.5)
        for t in tritons:
            t.stop(5)
    return out


def run(quick: bool) -> Section:
    changes = 20 if quick else 100
    t0 = time.monotonic()
    out = asyncio.run(measure(changes))
    rows = []
    for key, unit in (("ack_ms", "ms"), ("first_call_ms", "ms"), ("bytes", "B")):
        v = sorted(out[key])
        rows.append([key.replace("_ms", ""), unit, len(v), percentile(v, 50),
                     percentile(v, 99), max(v)])
    table = md_table(["from SetAvailability to", "unit", "changes", "p50", "p99", "max"],
                     rows, "llrrrr")
    notes = [
        "Each change drains or restores one backend: placement publishes at once (no "
        "coalescing wait for operator changes), recompiles the region, and sends what "
        "changed: the model's aggregate clusters (new failover orders, one per SLO class; "
        "most of their bytes are the upstream filters' Lua source), the route configuration "
        "when the SLO classes moved, and the removal of clusters no route names any more.",
        "Placement runs in the benchmark's process (an ADS hook marks the ACK); Envoy, the "
        "two Tritons and tritonclient calls are real; everything shares 2 cores.",
    ]
    return Section("Envoy edges: placement change to Envoy using it (delta ADS)",
                   command_for(__name__, quick), table, notes,
                   elapsed_s=time.monotonic() - t0)


if __name__ == "__main__":
    main(run, __doc__)
