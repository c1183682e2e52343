"""ConsulDiscovery against FakeConsul over real HTTP on 127.0.0.1 (see tests/consul_fake.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest

from services.api.switchyard.v1 import fleet_pb2
from services.discovery import ConsulSettings, DiscoveryState, DiscoveryUnavailable, HealthCheck
from services.discovery.consul import ConsulDiscovery
from tests.consul_fake import FakeConsul, client_settings, running_fake
from tests.mesh_harness import eventually

TOKEN = "acl-token-for-tests"
BASE_PRICE = fleet_pb2.Price(accelerator="nvidia-l4", cloud="gcp", region="*",
                             price_class="spot", usd_per_gpu_hour=0.28, source="file",
                             as_of="2025-03-06")


def backend(bid: str, port: int, region: str = "gcp-us-central1") -> fleet_pb2.Backend:
    return fleet_pb2.Backend(
        id=bid, endpoint=f"127.0.0.1:{port}", cloud="gcp", region=region,
        accelerator="nvidia-l4", accelerator_count=1, price_class="spot", max_concurrency=4,
        variants=[fleet_pb2.VariantRef(logical_model="summarize", variant="summarize-small",
                                       quality=0.72)])


@pytest.fixture
async def fake() -> AsyncIterator[FakeConsul]:
    async with running_fake(token=TOKEN) as server:
        yield server


def settings(fake: FakeConsul, **over: object) -> ConsulSettings:
    return ConsulSettings.model_validate(client_settings(fake, **over))


@pytest.fixture
async def disco(fake: FakeConsul) -> AsyncIterator[ConsulDiscovery]:
    d = ConsulDiscovery(settings(fake), base_prices=[BASE_PRICE])
    yield d
    await d.close()


async def until(updates: AsyncIterator[DiscoveryState],
                pred: Callable[[DiscoveryState], bool], within_s: float = 5.0) -> DiscoveryState:
    """The first emitted state that satisfies ``pred``."""
    async def scan() -> DiscoveryState:
        async for state in updates:
            if pred(state):
                return state
        raise AssertionError("watch ended")
    return await asyncio.wait_for(scan(), within_s)


async def test_registered_backend_appears_when_passing_and_leaves_when_failing(
        fake: FakeConsul, disco: ConsulDiscovery) -> None:
    updates = disco.watch()
    first = await until(updates, lambda s: not s.stale)
    assert first.backends == ()
    await disco.register(backend("b1", 8101), HealthCheck("grpc", "127.0.0.1:8101"))
    service = fake.services["b1"]
    assert service.meta["region"] == "gcp-us-central1"
    assert service.checks[0]["Type"] == "grpc"
    assert service.checks[0]["Status"] == "critical"  # as in Consul: not routable until checked
    fake.set_check_status("b1", "passing")
    seen = await until(updates, lambda s: "b1" in s.backend_ids())
    assert seen.backends[0].backend == backend("b1", 8101)
    fake.set_check_status("b1", "critical")
    await until(updates, lambda s: "b1" not in s.backend_ids())


async def test_kv_prices_and_policies_apply_live(fake: FakeConsul,
                                                 disco: ConsulDiscovery) -> None:
    updates = disco.watch()
    state = await until(updates, lambda s: not s.stale)
    assert [p.usd_per_gpu_hour for p in state.prices] == [0.28]
    fake.put_kv("switchyard/prices/gcp-spot", json.dumps({"prices": [{
        "accelerator": "nvidia-l4", "cloud": "gcp", "region": "*", "price_class": "spot",
        "usd_per_gpu_hour": 0.19, "source": "ops override", "as_of": "2026-01-02"}]}))
    fake.put_kv("switchyard/tenants/acme", 'allowed_regions = ["gcp-us-central1"]\n')
    state = await until(updates, lambda s: s.prices[0].usd_per_gpu_hour == 0.19
                        and "acme" in s.policies)
    assert state.policies["acme"] == {"allowed_regions": ["gcp-us-central1"]}
    fake.put_kv("switchyard/prices/gcp-spot", "this is [not valid")
    fake.put_kv("switchyard/prices/aws", '[[prices]]\naccelerator = "nvidia-t4"\ncloud = "aws"\n'
                'region = "*"\nprice_class = "spot"\nusd_per_gpu_hour = 0.2\n')
    state = await until(updates, lambda s: len(s.prices) == 2)
    assert {p.accelerator: p.usd_per_gpu_hour for p in state.prices} == {
        "nvidia-l4": 0.19, "nvidia-t4": 0.2}  # the bad edit kept the last good value


async def test_index_reset_restarts_the_loop_and_keeps_delivering(
        fake: FakeConsul, disco: ConsulDiscovery) -> None:
    updates = disco.watch()
    await until(updates, lambda s: not s.stale)
    await disco.register(backend("b1", 8101), HealthCheck("tcp", "127.0.0.1:8101"))
    fake.set_check_status("b1", "passing")
    await until(updates, lambda s: "b1" in s.backend_ids())
    assert disco.health_index.index > 2
    fake.force_index_reset(to=2)
    # A query already blocked is woken at once; one sent just after the restore waits out
    # its `wait` (as in Consul) and then sees the lower index.
    await eventually(lambda: disco.health_index.resets >= 1, 3, "the index reset is seen")
    fake.set_check_status("b1", "critical")  # index 3: only seen if the loop really reset
    await until(updates, lambda s: "b1" not in s.backend_ids(), within_s=3)


async def test_consul_away_keeps_the_last_state_then_recovers(
        fake: FakeConsul, disco: ConsulDiscovery) -> None:
    updates = disco.watch()
    await disco.register(backend("b1", 8101), HealthCheck("grpc", "127.0.0.1:8101"))
    await disco.register_placement("placement-0", "127.0.0.1:50050",
                                   HealthCheck("grpc", "127.0.0.1:50050"))
    fake.set_check_status("b1", "passing")
    await until(updates, lambda s: "b1" in s.backend_ids() and not s.stale)
    assert await disco.placement_endpoints() == ["127.0.0.1:50050"]

    await fake.stop()
    stale = await until(updates, lambda s: s.stale)
    assert stale.backend_ids() == {"b1"}  # nothing dropped because Consul is away
    assert [p.usd_per_gpu_hour for p in stale.prices] == [0.28]
    assert await disco.placement_endpoints() == ["127.0.0.1:50050"]  # last known list
    with pytest.raises(DiscoveryUnavailable, match="register backend 'b2' failed"):
        await disco.register(backend("b2", 8102), HealthCheck("grpc", "127.0.0.1:8102"))
    assert (await disco.snapshot()).backend_ids() == {"b1"}

    await fake.start()
    fresh = await until(updates, lambda s: not s.stale)
    assert fresh.backend_ids() == {"b1"}


async def test_500_no_leader_is_stale_too(fake: FakeConsul, disco: ConsulDiscovery) -> None:
    updates = disco.watch()
    await disco.register(backend("b1", 8101), HealthCheck("grpc", "127.0.0.1:8101"))
    fake.set_check_status("b1", "passing")
    await until(updates, lambda s: "b1" in s.backend_ids())
    fake.set_unavailable(True)
    assert (await until(updates, lambda s: s.stale)).backend_ids() == {"b1"}
    fake.set_unavailable(False)
    await until(updates, lambda s: not s.stale and "b1" in s.backend_ids())


async def test_acl_token_is_sent_on_every_request(fake: FakeConsul,
                                                  disco: ConsulDiscovery) -> None:
    await disco.snapshot()
    await disco.register(backend("b1", 8101), HealthCheck("http", "http://127.0.0.1:8000/v2/health/ready"))
    assert fake.requests
    assert {token for _, _, token in fake.requests} == {TOKEN}
    assert fake.services["b1"].checks[0]["Type"] == "http"


async def test_wrong_token_is_refused_and_reported(fake: FakeConsul) -> None:
    d = ConsulDiscovery(settings(fake, token="wrong"))
    try:
        state = await d.snapshot()
        assert state.stale
        with pytest.raises(DiscoveryUnavailable, match="ACLPermissionDenied"):
            await d.register(backend("b1", 8101), HealthCheck("grpc", "127.0.0.1:8101"))
    finally:
        await d.close()


async def test_blocking_queries_block_and_carry_the_index(fake: FakeConsul,
                                                          disco: ConsulDiscovery) -> None:
    def health_reads() -> list[str]:
        return [path for method, path, _ in fake.requests if "/v1/health/service/" in path]

    await disco.snapshot()
    await eventually(lambda: fake.blocked >= 1 and any("index=" in p for p in health_reads()),
                     5, "a blocking health query held by Consul")
    health = health_reads()
    assert "index=" not in health[0]  # the first read does not block
    assert all("passing=1" in p for p in health)
    assert any("index=" in p and "wait=" in p for p in health[1:])
    assert len(health) < 10  # blocked, not polled


async def test_close_deregisters_what_it_registered(fake: FakeConsul) -> None:
    d = ConsulDiscovery(settings(fake))
    await d.register(backend("b1", 8101), HealthCheck("grpc", "127.0.0.1:8101"))
    assert "b1" in fake.services
    await d.close()
    assert "b1" not in fake.services
