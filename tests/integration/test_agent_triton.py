"""The node agent reading a real tritonserver and streaming to a fake placement server."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tritonclient.grpc.aio as aioclient

from services.agent.agent import NodeAgent
from services.agent.fake_nvml import FakeNvml
from services.agent.triton_stats import TritonStatsReader
from services.api.switchyard.v1 import telemetry_pb2
from tests.fake_placement import FakePlacement, serve_placement, wait_until
from tests.fixtures_backends import StartBackend, backend_mesh

pytestmark = pytest.mark.integration

INPUT_DIM = 16
MESH = backend_mesh(
    models=[{"name": "summarize", "default_slo_ms": 300, "input_dim": INPUT_DIM,
             "variants": [{"name": "tiny", "quality": 0.5, "matmul_n": 32, "matmul_iters": 1},
                          {"name": "busy", "quality": 0.9, "matmul_n": 256,
                           "matmul_iters": 20}]}],
    backends=[{"id": "cpu-a", "variants": ["tiny", "busy"], "accelerator": "nvidia-l4"}],
)


async def _load(endpoint: str, model: str, calls: int) -> None:
    x = np.ones((1, INPUT_DIM), np.float32)
    async with aioclient.InferenceServerClient(endpoint) as client:
        for _ in range(calls):
            inp = aioclient.InferInput("INPUT0", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            await client.infer(model, [inp])


async def test_reader_reports_triton_statistics(triton_backend: StartBackend) -> None:
    proc = triton_backend(MESH, "cpu-a")
    await _load(proc.endpoint, "busy", 5)
    reader = TritonStatsReader(proc.endpoint, ["tiny", "busy"], metrics_url=proc.metrics_url)
    snap = await reader.read()
    await reader.close()
    assert snap.ready, snap.error
    by = {m.variant: m for m in snap.models}
    assert by["busy"].ready
    assert by["tiny"].ready
    assert by["busy"].inference_count == 5
    assert by["busy"].success_count == 5
    assert by["busy"].compute_infer_ns > 0
    assert by["tiny"].inference_count == 0
    assert snap.inflight == 0


async def test_agent_streams_simulated_load_from_real_triton(
        triton_backend: StartBackend) -> None:
    proc = triton_backend(MESH, "cpu-a")
    fake = FakePlacement()
    server, port = await serve_placement(fake)
    agent = NodeAgent(
        MESH, ["cpu-a"], placement=[f"127.0.0.1:{port}"], interval_s=0.2,
        nvml=FakeNvml(0, init_error=12),  # no NVML, as on this machine
        stats_factory=lambda b: TritonStatsReader(proc.endpoint, b.variants,
                                                  metrics_url=proc.metrics_url))
    await agent.start()
    try:
        load = asyncio.create_task(_load(proc.endpoint, "busy", 200))

        def busy_seen() -> bool:
            return any(r.gpus and r.gpus[0].gpu_util_pct > 0 for r in fake.reports)

        await wait_until(busy_seen, 30)
        load.cancel()
        proc.stop(grace=5.0)  # Triton goes away: the next reports say not ready
        await wait_until(lambda: not fake.reports[-1].backend_ready, 10)
    finally:
        await agent.stop()
        await server.stop(None)
    assert [r.backend.id for r in fake.registered] == ["cpu-a"]
    ready = [r for r in fake.reports if r.backend_ready]
    assert ready
    assert all(r.source == telemetry_pb2.TELEMETRY_SOURCE_SIMULATED for r in fake.reports)
    busy = [m for r in ready for m in r.models if m.variant == "busy"]
    assert max(m.inference_count for m in busy) > 0
    assert max(m.compute_infer_ns for m in busy) > 0
    assert max(r.gpus[0].gpu_util_pct for r in ready) > 0
