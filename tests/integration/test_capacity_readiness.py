"""A managed Triton stays ready while the capacity loop loads and unloads variants on it.

Real tritonserver (the local provider's own instance, explicit model control), real
repository API, real gRPC ``ServerReady`` probes at the edges' health-check timeout. With
``--strict-readiness=true`` Triton answered "not ready" for the whole of every load (seconds
on this machine) and after an unload: the edges' health checks then blocked the instance, so
the variant it already served took no calls while the next one loaded (issue 13: capacity
dipped below both plans in the middle of a swap the actor orders to avoid exactly that).
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from tritonclient.grpc import service_pb2, service_pb2_grpc

from services.capacity.local import LocalProvider
from services.capacity.model_control import ModelControl, NoRouting
from services.capacity.provider import Instance
from services.config import BackendConfig, load_config
from tests.mesh_harness import eventually

pytestmark = pytest.mark.integration
ROOT = pathlib.Path(__file__).resolve().parents[2]
HEALTH_CHECK_TIMEOUT_S = 0.5  # services.edge.control.HealthChecker's default


@pytest_asyncio.fixture
async def instance(tmp_path: pathlib.Path) -> AsyncIterator[Instance]:
    cfg = load_config(ROOT / "examples" / "mesh-capacity.toml")
    p = cfg.capacity.pools[0]
    template = BackendConfig(id=p.id, region=p.region, accelerator=p.accelerator,
                             price_class=p.price_class, grpc_port=0, metrics_port=0,
                             variants=p.variants, max_concurrency=p.max_concurrency,
                             speed=p.speed)
    provider = LocalProvider(cfg, {p.id: template}, tmp_path)
    (inst,) = await provider.add(p.id, 1)
    try:
        yield inst
    finally:
        await provider.close()


async def test_a_managed_instance_answers_ready_through_loads_and_unloads(
        instance: Instance) -> None:
    answers: list[str] = []
    stop = asyncio.Event()
    async with grpc.aio.insecure_channel(instance.endpoint) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        async def probe() -> None:
            while not stop.is_set():
                try:
                    r = await stub.ServerReady(service_pb2.ServerReadyRequest(),
                                               timeout=HEALTH_CHECK_TIMEOUT_S * 4)
                    answers.append("ready" if r.ready else "not ready")
                except grpc.aio.AioRpcError as err:
                    answers.append(err.code().name)
                await asyncio.sleep(0.05)  # pacing: the probe interval

        control = ModelControl(instance, timeout_s=60.0, warm_calls=2, cold_calls=1)
        task = asyncio.create_task(probe())
        during: dict[str, int] = {}  # probes answered while each step ran
        try:
            await eventually(lambda: answers, 30, "the first probe answered")
            for step, run in (
                    ("load small", lambda: control.load("summarize-small")),
                    # the swap's load, beside a served one
                    ("load large", lambda: control.load("summarize-large")),
                    ("drain and unload small",
                     lambda: control.drain_and_unload("summarize-small", NoRouting()))):
                before = len(answers)
                await run()
                during[step] = len(answers) - before
            assert await control.loaded() == frozenset({"summarize-large"})
            after = len(answers)
            await eventually(lambda: len(answers) >= after + 5, 30,
                             "probes after the unload too")
        finally:
            stop.set()
            await task
            await control.close()
    # probes ran all along (a load takes seconds, a probe ~50 ms), and every one said ready
    assert during["load small"] >= 1 and during["load large"] >= 1, during
    assert set(answers) == {"ready"}, [a for a in answers if a != "ready"][:5]
