"""The ADS push at fleet scale: a session handed the region's ``Delta`` sends exactly what a
session walking every cluster sends, and the server compiles a region off the event loop,
once for all the region's streams."""

from __future__ import annotations

import asyncio
import random

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2

from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.xds.resources import CLUSTER, EnvoySettings, Resource, resource
from services.xds.server import AdsServer
from services.xds.session import Delta, DeltaSession
from tests.mesh_harness import eventually


def _set(rng: random.Random, n: int) -> dict[str, Resource]:
    return {f"c{i}": resource(f"c{i}", cluster_pb2.Cluster(name=f"c{i}",
                                                           alt_stat_name=str(rng.randrange(3))))
            for i in sorted(rng.sample(range(n), rng.randrange(1, n)))}


def _wire(resp: discovery_pb2.DeltaDiscoveryResponse | None) -> tuple[object, ...] | None:
    if resp is None:
        return None
    return ([(r.name, r.version) for r in resp.resources], list(resp.removed_resources))


def test_a_session_given_the_delta_sends_what_a_full_walk_sends() -> None:
    rng = random.Random(1)
    walk, short = DeltaSession("a", "r"), DeltaSession("b", "r")
    for s in (walk, short):
        s.receive(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER))
    before: dict[str, Resource] = {}
    shortcuts = 0
    for step in range(40):
        after = _set(rng, 30)
        delta = Delta.between(before, after)
        for keep in (True, False):  # make before break, as the server pushes
            want = walk.push(CLUSTER, after, str(step), keep=keep)
            holds = short._holds.get(CLUSTER)
            got = short.push(CLUSTER, after, str(step), delta=delta, keep=keep)
            shortcuts += holds is not None and holds[0] != "unknown"
            assert _wire(got) == _wire(want), f"step {step}, keep {keep}"
        assert short.sent == walk.sent
        if step % 7 == 3:  # Envoy unsubscribes a name: the shortcut is off until a full push
            for s in (walk, short):
                s.receive(discovery_pb2.DeltaDiscoveryRequest(
                    type_url=CLUSTER, resource_names_unsubscribe=[next(iter(after))]))
        before = after
    assert shortcuts > 40  # it was used, not only the fallback


class _Hub:
    def __init__(self) -> None:
        self.version = 1
        self.cost = 1e-6

    def snapshot(self, region: str) -> list[placement_pb2.RouteTable]:
        return [placement_pb2.RouteTable(model="m", edge_region=region, default_slo_ms=300,
                                         candidates=[placement_pb2.Candidate(
                                             deployment_id=f"b{i}/v", backend_id=f"b{i}",
                                             endpoint=f"10.0.0.{i}:900{i}", variant="v",
                                             region=region, latency_p95_ms=50,
                                             cost_usd=self.cost * (i + 1),
                                             spare_capacity=10, concurrency=4)
                                             for i in range(5)])]


def test_streams_of_a_region_share_one_compile_on_the_worker_thread() -> None:
    hub = _Hub()
    ads = AdsServer(hub, build_profile("cheapest"), EnvoySettings())  # type: ignore[arg-type]

    async def main() -> None:
        first = await asyncio.gather(*(ads.region_config_async("r") for _ in range(5)))
        assert all(rc is first[0] for rc in first) and ads.compiles == 1
        hub.version, hub.cost = 2, 2e-6
        again = await asyncio.gather(*(ads.region_config_async("r") for _ in range(5)))
        assert all(rc is again[0] for rc in again) and again[0] is not first[0]
        assert ads.compiles == 2 and ads.compile_s > 0
        # only the prices moved: the deployment clusters are the ones compiled before
        assert ads._compiled["r"].delta.changed == ()
        assert all(again[0].clusters[n] is r for n, r in first[0].clusters.items())

    asyncio.run(main())


class _ReadHub(_Hub):
    read: asyncio.Event | None = None

    def snapshot(self, region: str) -> list[placement_pb2.RouteTable]:
        if self.read is not None:
            self.read.set()
        return super().snapshot(region)


def test_streams_asking_during_a_compile_share_it_and_those_woken_after_it_began_ask_again(
        ) -> None:
    """With 100 Envoys and a hub publishing all the time, a stream that waited for its
    region's compile must not start one of its own (each stream compiled once more, one
    after the other); one woken by a publish the shared compile did not read asks again."""
    hub = _ReadHub()
    ads = AdsServer(hub, build_profile("cheapest"), EnvoySettings())  # type: ignore[arg-type]

    async def main() -> None:
        await ads.region_config_async("r")
        assert ads.compiles == 1
        hub.version, hub.cost = 2, 2e-6
        hub.read = asyncio.Event()
        ads._compile_lock.acquire()  # the worker's compile waits until the others asked
        first = asyncio.create_task(ads.region_config_async("r"))
        await hub.read.wait()  # the first stream's compile has read the tables
        hub.version, hub.cost = 3, 3e-6  # published while it compiles
        asked = hub.version
        rest = [asyncio.create_task(ads.region_config_async("r")) for _ in range(5)]
        await eventually(lambda: ads.shared == 5, 10, "the five streams wait for the compile "
                         "under way", poll_s=0)  # loop turns until each reaches its wait
        ads._compile_lock.release()
        got = await first
        rest = await asyncio.gather(*rest)
        assert all(rc is got for rc in rest) and ads.compiles == 2  # shared, not 6 more
        assert ads.stale("r", asked) and not ads.stale("r", 2)
        again = await ads.region_config_async("r")  # what a re-woken stream asks
        assert again is not got and ads.compiles == 3 and not ads.stale("r", asked)

    asyncio.run(main())


def test_the_worker_compiles_at_most_its_share_of_the_time() -> None:
    ads = AdsServer(_Hub(), build_profile("cheapest"), EnvoySettings(),  # type: ignore[arg-type]
                    compile_share=0.5)
    assert ads.compile_wait(100.0) == 0.0  # nothing compiled yet
    ads._last_compile = (100.0, 0.4)  # a compile that took 0.4 s ended at 100.0
    assert ads.compile_wait(100.0) == pytest.approx(0.4)
    assert ads.compile_wait(100.3) == pytest.approx(0.1)
    assert ads.compile_wait(100.5) == 0.0
    ads.compile_share = 0.25
    assert ads.compile_wait(100.0) == pytest.approx(1.2)
