"""An edge gets the deployment clusters its routes can reach, not the fleet's (issues 12 + 15):
those its aggregates name and those placement keeps with a reason no call may use them. Over
a delta or state-of-the-world stream, a cluster arrives no later than the aggregate that
names it, and one no aggregate names any more is removed after the routes: replayed as Envoy
applies the responses, no held route or aggregate ever names a cluster the edge lacks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.service.discovery.v3 import discovery_pb2

from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.xds.resources import (
    CLUSTER,
    LISTENER,
    ROUTE,
    SLOW_PATH_CLUSTER,
    EnvoySettings,
    RegionConfig,
    cluster_name,
    compile_region,
    route_config_name,
)
from services.xds.server import AdsServer

PROFILE = build_profile("cheapest")
REGION = "r-east"
CAP = 3  # deployments per order: most of the 12 rows are past every cut


def _rows(costs: dict[int, float], drained: frozenset[int] = frozenset()
          ) -> list[placement_pb2.Candidate]:
    return [placement_pb2.Candidate(
        deployment_id=f"b{i}/s", backend_id=f"b{i}", endpoint=f"10.0.0.{i + 1}:8001",
        variant="s", region=REGION, cloud="aws", quality=0.9, latency_p95_ms=50.0,
        cost_usd=cost, compute_ms=20.0, spare_capacity=100.0, concurrency=4,
        dropped_reason="backend drained by operator" if i in drained else "")
        for i, cost in sorted(costs.items())]


def _table(rows: list[placement_pb2.Candidate]) -> placement_pb2.RouteTable:
    return placement_pb2.RouteTable(model="m", edge_region=REGION, default_slo_ms=300,
                                    candidates=rows)


def _children(c: cluster_pb2.Cluster) -> set[str]:
    if not c.HasField("cluster_type"):
        return set()
    agg = aggregate_pb2.ClusterConfig()
    c.cluster_type.typed_config.Unpack(agg)
    return set(agg.clusters)


def _route_targets(rc: route_pb2.RouteConfiguration) -> set[str]:
    out: set[str] = set()
    for vh in rc.virtual_hosts:
        for r in vh.routes:
            if r.HasField("route"):
                out.add(r.route.cluster)
                out.update(w.name for w in r.route.weighted_clusters.clusters)
    # the slow-path route is taken only on nodes with a slow path, which get that cluster
    # (``AdsServer.offer``); these nodes have none, and their listener never marks a call slow
    return out - {"", SLOW_PATH_CLUSTER}


def _deployments(rc: RegionConfig) -> set[str]:
    return {n for n in rc.clusters if n.startswith("dep:")}


def test_an_edge_gets_the_clusters_its_orders_reach_and_the_unusable_rows_only() -> None:
    costs = {i: 1e-6 * (i + 1) for i in range(12)}
    rc = compile_region(REGION, [_table(_rows(costs, drained=frozenset({0, 11})))], PROFILE,
                        EnvoySettings(order_cap=CAP))
    named = set().union(*(_children(r.message) for r in rc.clusters.values()))
    assert named and named <= set(rc.clusters)  # nothing named is missing
    # what the orders reach, plus the two drained rows (kept warm for their return)
    assert _deployments(rc) == named | {cluster_name("b0/s"), cluster_name("b11/s")}
    assert len(_deployments(rc)) < 12  # the rows past every cut have none
    routes = rc.routes[route_config_name(REGION)].message
    assert _route_targets(routes) <= set(rc.clusters)


class _Watcher:
    def __init__(self) -> None:
        self.wake = asyncio.Event()

    def take(self) -> list[object]:
        self.wake.clear()
        return []


class _Hub:
    """What the ADS server reads of a ``RouteHub``: a version, a region's tables, watchers
    woken by ``publish``."""

    def __init__(self, rows: list[placement_pb2.Candidate]) -> None:
        self.version = 1
        self.rows = rows
        self.watchers: list[_Watcher] = []

    def snapshot(self, region: str) -> list[placement_pb2.RouteTable]:
        return [_table(self.rows)]

    def subscribe(self, edge_id: str, region: str) -> _Watcher:
        self.watchers.append(_Watcher())
        return self.watchers[-1]

    def unsubscribe(self, w: _Watcher) -> None:
        self.watchers.remove(w)

    def publish(self, rows: list[placement_pb2.Candidate]) -> None:
        self.rows, self.version = rows, self.version + 1
        for w in self.watchers:
            w.wake.set()


class _Envoy:
    """What an Envoy holds after applying responses in order, and the one rule checked after
    each: every cluster a held route or aggregate names is held."""

    def __init__(self) -> None:
        self.clusters: dict[str, cluster_pb2.Cluster] = {}
        self.routes: dict[str, route_pb2.RouteConfiguration] = {}
        self.order: list[tuple[str, set[str], set[str]]] = []  # (type, added, removed)

    def apply(self, type_url: str, added: dict[str, Any], removed: list[str],
              whole: bool) -> None:
        held: dict[str, Any] = self.clusters if type_url == CLUSTER else self.routes
        if type_url == LISTENER:
            return
        gone = set(held) - set(added) if whole else set(removed)
        for n in gone:
            held.pop(n, None)
        held.update(added)
        self.order.append((type_url, set(added), gone))
        named = set().union(*(_children(c) for c in self.clusters.values()),
                            *(_route_targets(r) for r in self.routes.values()))
        missing = named - set(self.clusters)
        assert not missing, f"after a {type_url} response the edge lacks {sorted(missing)}"


def _unpack(type_url: str, packed: Any) -> Any:
    msg = cluster_pb2.Cluster() if type_url == CLUSTER else route_pb2.RouteConfiguration()
    packed.Unpack(msg)
    return msg


async def _stream(sotw: bool, hub: _Hub, ads: AdsServer, envoy: _Envoy,
                  changes: list[Callable[[], None]]) -> None:
    """One stream: subscribe, then after the responses of each step, the next change."""
    requests: asyncio.Queue[Any] = asyncio.Queue()
    for t, names in ((CLUSTER, []), (LISTENER, []), (ROUTE, [route_config_name(REGION)])):
        if sotw:
            req: Any = discovery_pb2.DiscoveryRequest(type_url=t, resource_names=names)
        else:
            req = discovery_pb2.DeltaDiscoveryRequest(type_url=t, resource_names_subscribe=names)
        req.node.id, req.node.cluster = "e1", REGION
        req.node.metadata.update({"listen_host": "127.0.0.1", "listen_port": 50051})
        await requests.put(req)

    async def incoming() -> AsyncIterator[Any]:
        while (r := await requests.get()) is not None:
            yield r

    serve = ads.StreamAggregatedResources if sotw else ads.DeltaAggregatedResources
    out = serve(incoming(), None)
    steps = [None, *changes]
    for change in steps:
        if change is not None:
            change()
        got: set[str] = set()
        # every step ends with a route response: the routes of each change differ (prices)
        while ROUTE not in got or _pending_removal(ads, envoy):
            resp = await asyncio.wait_for(anext(out), 30)
            got.add(resp.type_url)
            if sotw:
                msgs = [_unpack(resp.type_url, a) for a in resp.resources]
                added = {m.name: m for m in msgs}
                envoy.apply(resp.type_url, added, [], whole=True)
                ack: Any = discovery_pb2.DiscoveryRequest(
                    type_url=resp.type_url, version_info=resp.version_info,
                    response_nonce=resp.nonce,
                    resource_names=[route_config_name(REGION)] if resp.type_url == ROUTE
                    else [])
            else:
                added = {r.name: _unpack(resp.type_url, r.resource) for r in resp.resources}
                envoy.apply(resp.type_url, added, list(resp.removed_resources), whole=False)
                ack = discovery_pb2.DeltaDiscoveryRequest(type_url=resp.type_url,
                                                          response_nonce=resp.nonce)
            await requests.put(ack)
        want = set((ads.region_config(REGION)).clusters)
        assert set(envoy.clusters) == want  # nothing the edge does not need is left
    await requests.put(None)
    await out.aclose()


def _pending_removal(ads: AdsServer, envoy: _Envoy) -> bool:
    return bool(set(envoy.clusters) - set(ads.region_config(REGION).clusters))


def _scenario(sotw: bool) -> tuple[_Envoy, list[RegionConfig]]:
    """A row past every cut becomes the cheapest (its cluster enters, the last of the
    order's leaves), then a drained row comes back (its cluster was held all along)."""
    costs = {i: 1e-6 * (i + 1) for i in range(12)}
    hub = _Hub(_rows(costs, drained=frozenset({5})))
    ads = AdsServer(hub, PROFILE, EnvoySettings(order_cap=CAP))  # type: ignore[arg-type]
    envoy = _Envoy()
    seen: list[RegionConfig] = []
    cheaper = {**costs, 9: 1e-8}
    back = {**cheaper, 5: 1e-9}

    def step(rows: list[placement_pb2.Candidate]) -> Callable[[], None]:
        def go() -> None:
            seen.append(ads.region_config(REGION))
            hub.publish(rows)
        return go

    asyncio.run(_stream(sotw, hub, ads, envoy, [
        step(_rows(cheaper, drained=frozenset({5}))), step(_rows(back))]))
    seen.append(ads.region_config(REGION))
    return envoy, seen


def test_a_delta_stream_adds_a_cluster_with_its_aggregate_and_removes_one_after_the_routes(
        ) -> None:
    envoy, (first, second, third) = _scenario(sotw=False)
    entered = _deployments(second) - _deployments(first)
    left = _deployments(first) - _deployments(second)
    assert entered == {cluster_name("b9/s")} and left
    cds = [(i, a, r) for i, (t, a, r) in enumerate(envoy.order) if t == CLUSTER]
    rds = [i for i, (t, _, _) in enumerate(envoy.order) if t == ROUTE]
    # the change: its cluster arrived in a cluster response before the routes, the leaving
    # one was removed in the response after them (make before break)
    (add_at, added, _), = [(i, a, r) for i, a, r in cds if entered <= a]
    (rm_at, _, removed), = [(i, a, r) for i, a, r in cds if left & r]
    assert add_at < rds[1] < rm_at and left == removed
    assert not added & left
    # the drained row's return changed only aggregates: its cluster was held all along
    assert cluster_name("b5/s") in _deployments(first)
    assert _deployments(third) - _deployments(second) == set()
    assert all(not {n for n in a if n.startswith("dep:")} for i, a, _ in cds if i > rds[1])


def test_state_of_the_world_holds_the_same_clusters_and_never_lacks_a_named_one() -> None:
    envoy, (_, _, third) = _scenario(sotw=True)
    assert set(envoy.clusters) == set(third.clusters)
    assert any(t == CLUSTER and r for t, _, r in envoy.order)  # something left, whole-set
