"""The ADS push at fleet scale: a session handed the region's ``Delta`` sends exactly what a
session walking every cluster sends, and the server compiles a region off the event loop,
once for all the region's streams."""

from __future__ import annotations

import asyncio
import random

from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2

from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.xds.resources import CLUSTER, EnvoySettings, Resource, resource
from services.xds.server import AdsServer
from services.xds.session import Delta, DeltaSession


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
