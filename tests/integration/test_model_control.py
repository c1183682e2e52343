"""Explicit model control on a real Triton: the local provider, load, drain, unload, remove.

One pool whose repository holds two variants; the provider starts one real tritonserver in
explicit mode with nothing loaded; the actor loads a variant (and warms it: ten real calls
before it is handed to routing), tritonclient calls it, then a plan without it drains (calls
queued in Triton finish) and unloads it.
"""

from __future__ import annotations

import asyncio
import pathlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from services.backends.repository import INPUT_NAME, OUTPUT_NAME, set_control
from services.capacity.actor import CapacityActor, PoolTarget
from services.capacity.local import LocalProvider
from services.capacity.model_control import DrainReport, ModelControl, NoRouting
from services.capacity.provider import Instance
from tests.fixtures_backends import backend_mesh

pytestmark = pytest.mark.integration

INPUT_DIM = 16
MESH = backend_mesh(
    models=[{
        "name": "summarize", "default_slo_ms": 300, "input_dim": INPUT_DIM,
        "variants": [
            {"name": "tiny", "quality": 0.5, "matmul_n": 32, "matmul_iters": 1},
            {"name": "mid", "quality": 0.8, "matmul_n": 128, "matmul_iters": 20},
        ],
    }],
    backends=[{"id": "pool-a", "variants": ["tiny", "mid"]}],
)


def infer(endpoint: str, variant: str) -> np.ndarray:
    client = grpcclient.InferenceServerClient(endpoint)
    try:
        inp = grpcclient.InferInput(INPUT_NAME, [1, INPUT_DIM], "FP32")
        inp.set_data_from_numpy(np.ones((1, INPUT_DIM), dtype=np.float32))
        result = client.infer(variant, [inp], client_timeout=20.0)
        return np.asarray(result.as_numpy(OUTPUT_NAME))
    finally:
        client.close()


async def inference_count(endpoint: str, variant: str) -> int:
    client = grpcclient.InferenceServerClient(endpoint)
    try:
        stats = await asyncio.to_thread(client.get_inference_statistics, variant, as_json=True)
        return int(stats["model_stats"][0].get("inference_count", 0))
    finally:
        client.close()


class RecordingGate(NoRouting):
    """NoRouting (what it routes follows start and stop) that records each call."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str]] = []
        self.stopped = asyncio.Event()

    async def stop(self, instance: Instance, variant: str) -> None:
        await super().stop(instance, variant)
        self.events.append(("stop", variant))
        self.stopped.set()

    async def start(self, instance: Instance, variant: str) -> None:
        await super().start(instance, variant)
        self.events.append(("start", variant))


async def test_load_serve_drain_unload_remove(tmp_path: pathlib.Path) -> None:
    provider = LocalProvider(MESH, {"pool-a": MESH.backends[0]}, tmp_path)
    gate = RecordingGate()
    drains: list[DrainReport] = []

    class Recording(ModelControl):
        async def drain_and_unload(self, variant: str, g: NoRouting) -> DrainReport:
            report = await super().drain_and_unload(variant, g)
            drains.append(report)
            return report

    actor = CapacityActor(provider, gate, Recording)
    try:
        report = await actor.apply({"pool-a": PoolTarget(1, frozenset({"mid"}))})
        (inst,) = provider.instances("pool-a")
        assert report.actions == [("add", inst.id, ""), ("load", inst.id, "mid")]
        assert gate.events == [("start", "mid")]
        control = ModelControl(inst)
        assert await control.loaded() == frozenset({"mid"})  # explicit mode: tiny is not
        assert await inference_count(inst.endpoint, "mid") == 10  # warmed before routing
        warmed = actor._control(inst)
        assert isinstance(warmed, ModelControl)
        assert warmed.baselines[(inst.id, "mid")].inference_count == 2  # after the cold calls
        assert infer(inst.endpoint, "mid").shape == (1, INPUT_DIM)
        with pytest.raises(InferenceServerException):
            infer(inst.endpoint, "tiny")

        # Park mid's calls (one executing, the rest queued in Triton), then swap it for tiny.
        # The knob parks every model of the repository, warm-up calls too: tiny goes unwarmed.
        warmed.warm_calls = warmed.cold_calls = 0
        repo = tmp_path / inst.id / "repo"
        set_control(repo, hang=True)
        with ThreadPoolExecutor(16) as pool:
            calls = []
            # The model notices the knob within ~200 ms: keep calling until calls pile up.
            for _ in range(15):
                calls.append(pool.submit(infer, inst.endpoint, "mid"))
                if await control.pending("mid") >= 2:
                    break
                await asyncio.sleep(0.05)  # pacing: one more call every 50 ms, not a wait
            else:
                raise AssertionError("calls of mid never queued in Triton")
            swap = asyncio.create_task(
                actor.apply({"pool-a": PoolTarget(1, frozenset({"tiny"}))}))
            await asyncio.wait_for(gate.stopped.wait(), 20)  # tiny is loaded, mid drains
            assert "mid" in await control.loaded()  # queued calls hold the unload back
            assert not swap.done()
            set_control(repo, hang=False)
            report = await asyncio.wait_for(swap, 20)
            outputs = [c.result(timeout=20) for c in calls]
        assert all(o.shape == (1, INPUT_DIM) for o in outputs)  # no call lost to the unload
        assert report.actions == [("load", inst.id, "tiny"), ("unload", inst.id, "mid")]
        assert gate.events[-2:] == [("start", "tiny"), ("stop", "mid")]
        (drain,) = drains
        assert drain.max_pending >= 1  # the drain really waited on queued calls
        assert await control.loaded() == frozenset({"tiny"})
        with pytest.raises(InferenceServerException):
            infer(inst.endpoint, "mid")
        assert infer(inst.endpoint, "tiny").shape == (1, INPUT_DIM)
        await control.close()

        report = await actor.apply({"pool-a": PoolTarget(0, frozenset())})
        assert report.actions == [("unload", inst.id, "tiny"), ("remove", inst.id, "")]
        assert provider.instances("pool-a") == []
        with pytest.raises(InferenceServerException):
            infer(inst.endpoint, "tiny")
    finally:
        await actor.close()
        await provider.close()
