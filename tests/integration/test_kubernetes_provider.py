"""The kubernetes provider over real HTTP against FakeKubernetes (the scale subresource)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.capacity.kubernetes import (
    DELETION_COST,
    LOWEST_COST,
    KubePool,
    KubernetesProvider,
    ProviderError,
)
from tests.kubernetes_fake import FakeKubernetes
from tests.mesh_harness import eventually

pytestmark = pytest.mark.integration

TOKEN = "t0ken"
SCALE = "/apis/apps/v1/namespaces/switchyard/deployments/triton-l4/scale"


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubernetes]:
    k = FakeKubernetes(token=TOKEN, ready_after_ticks=0)
    k.add_deployment("triton-l4", {"app": "triton", "pool": "l4"})
    k.add_deployment("triton-h100", {"app": "triton", "pool": "h100"})
    await k.start()
    yield k
    await k.stop()


def provider(fake: FakeKubernetes, token: str = TOKEN) -> KubernetesProvider:
    return KubernetesProvider(fake.address, "switchyard",
                              {"l4": KubePool("triton-l4"), "h100": KubePool("triton-h100")},
                              token=token, poll_s=0.01, timeout_s=5)


async def test_add_scales_up_and_returns_the_ready_pods(fake: FakeKubernetes) -> None:
    p = provider(fake)
    try:
        added = await p.add("l4", 2)
        assert [i.endpoint for i in added] == ["10.0.0.1:8001", "10.0.0.2:8001"]
        assert added[0].metrics_url == "http://10.0.0.1:8002/metrics"
        assert fake.deployments["triton-l4"].replicas == 2
        assert fake.deployments["triton-h100"].replicas == 0
        assert fake.patches == [(SCALE, {"spec": {"replicas": 2}})]
        assert p.instances("l4") == added
    finally:
        await p.close()


async def test_add_waits_until_the_new_pods_are_ready(fake: FakeKubernetes) -> None:
    fake.ready_after_ticks = 1
    p = provider(fake)
    try:
        adding = asyncio.create_task(p.add("h100", 1))
        await eventually(lambda: fake.pods, 2, "the pod exists, still not Ready", poll_s=0.01)
        seen = fake.pod_lists
        await eventually(lambda: fake.pod_lists >= seen + 2, 5,
                         "the provider looked twice more", poll_s=0.01)
        assert not adding.done()  # it saw the pod, not Ready: still waiting
        fake.tick()  # the kubelet reports it Ready
        (inst,) = await asyncio.wait_for(adding, 5)
        assert inst.pool == "h100"
    finally:
        await p.close()


async def test_remove_takes_exactly_the_drained_pod(fake: FakeKubernetes) -> None:
    p = provider(fake)
    try:
        first, second, third = await p.add("l4", 3)
        await p.remove(second)  # not the newest: the deletion cost decides
        assert [i.id for i in p.instances("l4")] == [first.id, third.id]
        assert set(fake.pods) == {first.id, third.id}
        assert fake.patches[-2:] == [
            (f"/api/v1/namespaces/switchyard/pods/{second.id}",
             {"metadata": {"annotations": {DELETION_COST: LOWEST_COST}}}),
            (SCALE, {"spec": {"replicas": 2}}),
        ]
    finally:
        await p.close()


async def test_api_errors_are_wrapped_with_the_reason(fake: FakeKubernetes) -> None:
    p = provider(fake, token="wrong")
    try:
        with pytest.raises(ProviderError, match="401 Unauthorized"):
            await p.add("l4", 1)
    finally:
        await p.close()
    fake.deployments.pop("triton-l4")
    p = provider(fake)
    try:
        with pytest.raises(ProviderError, match="404 NotFound"):
            await p.add("l4", 1)
    finally:
        await p.close()
