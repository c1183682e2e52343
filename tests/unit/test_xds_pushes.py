"""A new deployment cluster is sent to Envoy alone, and what names it (the aggregate, the
routes) only once Envoy has answered that response: Envoy holds its CDS ACK back while a
cluster is warming (its first active health check), so the ACK means "usable". A NACK, a
hold past ``hold_s`` or a lost stream never wedges the stream (``services/xds/pushes.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2
from structlog.testing import capture_logs

from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.xds.clusters import health_checks
from services.xds.pushes import PushOrder
from services.xds.resources import (
    CLUSTER,
    LISTENER,
    ROUTE,
    EnvoySettings,
    Resource,
    resource,
    route_config_name,
)
from services.xds.server import AdsServer
from services.xds.session import Delta, DeltaSession, SotwSession
from tests.mesh_harness import eventually

ROUTES = route_config_name("r")


def _offer(deps: list[str], names: str) -> dict[str, dict[str, Resource]]:
    """Deployment clusters ``deps``, an aggregate naming them (its content ``names``) and a
    route configuration naming the aggregate (same content)."""
    clusters = {f"dep:{d}": resource(f"dep:{d}", cluster_pb2.Cluster(name=f"dep:{d}"))
                for d in deps}
    clusters["model:m"] = resource("model:m", cluster_pb2.Cluster(name="model:m",
                                                                  alt_stat_name=names))
    return {CLUSTER: clusters,
            LISTENER: {"ingress": resource("ingress", listener_pb2.Listener(name="ingress"))},
            ROUTE: {ROUTES: resource(ROUTES, route_pb2.RouteConfiguration(
                name=ROUTES, request_headers_to_remove=[names]))}}


def _subscribed() -> DeltaSession:
    s = DeltaSession("e1", "r")
    s.receive(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER))
    s.receive(discovery_pb2.DeltaDiscoveryRequest(type_url=LISTENER))
    s.receive(discovery_pb2.DeltaDiscoveryRequest(type_url=ROUTE,
                                                  resource_names_subscribe=[ROUTES]))
    return s


def _ack(order: PushOrder, resp: Any, error: str = "", now: float = 0.0) -> float | None:
    req: Any
    if isinstance(order.session, SotwSession):  # an ACK repeats the subscription
        req = discovery_pb2.DiscoveryRequest(
            type_url=resp.type_url, response_nonce=resp.nonce,
            resource_names=sorted(order.session.names[resp.type_url]))
    else:
        req = discovery_pb2.DeltaDiscoveryRequest(type_url=resp.type_url,
                                                  response_nonce=resp.nonce)
    if error:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    order.session.receive(req)
    return order.receive(req, now)


def _names(resp: Any) -> tuple[str, list[str], list[str]]:
    return (resp.type_url.rsplit(".", 1)[-1], sorted(r.name for r in resp.resources),
            sorted(resp.removed_resources))


def _settle(order: PushOrder, offered: dict[str, dict[str, Resource]], now: float) -> None:
    """Push and ACK until Envoy holds ``offered``."""
    for _ in range(5):
        got = order.pushes(offered, "v", None, now)
        if not got:
            return
        for resp in got:
            _ack(order, resp)
    raise AssertionError("the pushes never settled")


def test_a_new_deployment_cluster_goes_alone_and_what_names_it_waits_for_the_ack() -> None:
    order = PushOrder(_subscribed())
    _settle(order, _offer(["b1/v"], "b1"), 0.0)
    # b3 enters (the aggregate and the routes now name it), b1 leaves
    after = _offer(["b3/v"], "b3")
    first = order.pushes(after, "v2", None, 1.0)
    assert [_names(r) for r in first] == [("Cluster", ["dep:b3/v"], [])]  # alone, b1 kept
    assert order.wait_s(1.0) == order.hold_s
    assert order.pushes(after, "v2", None, 2.0) == []  # no answer yet: nothing names b3
    assert _ack(order, first[0], now=2.25) == 1.25  # how long Envoy took to warm it
    assert order.wait_s(2.5) is None
    rest = order.pushes(after, "v2", None, 2.5)
    assert [_names(r) for r in rest] == [
        ("Cluster", ["model:m"], []), ("RouteConfiguration", [ROUTES], [])]
    assert order.pushes(after, "v2", None, 2.6) == []  # b1 leaves once the route is ACKed
    assert _ack(order, rest[1], now=2.7) is None  # not a warm wait
    assert [_names(r) for r in order.pushes(after, "v2", None, 2.7)] == [
        ("Cluster", [], ["dep:b1/v"])]  # make before break
    assert order.holds == 2 and order.route_holds == 1 and order.timeouts == 0


def test_a_changed_cluster_or_a_change_without_new_clusters_is_not_held() -> None:
    order = PushOrder(_subscribed())
    _settle(order, _offer(["b1/v", "b2/v"], "b1,b2"), 0.0)
    again = _offer(["b1/v", "b2/v"], "b2,b1")  # the order moved, no cluster is new
    again[CLUSTER]["dep:b1/v"] = resource("dep:b1/v", cluster_pb2.Cluster(
        name="dep:b1/v", alt_stat_name="changed"))  # Envoy keeps the old one while it warms
    got = order.pushes(again, "v2", None, 1.0)
    assert [_names(r) for r in got] == [("Cluster", ["dep:b1/v", "model:m"], []),
                                       ("RouteConfiguration", [ROUTES], [])]
    assert order.wait_s(1.0) is None and order.holds == 1


def test_a_nack_of_the_new_clusters_ends_the_hold() -> None:
    order = PushOrder(_subscribed())
    _settle(order, _offer(["b1/v"], "b1"), 0.0)
    after = _offer(["b1/v", "b3/v"], "b1,b3")
    first = order.pushes(after, "v2", None, 1.0)
    _ack(order, first[0], error="rejected")
    rest = order.pushes(after, "v2", None, 1.1)
    assert [_names(r)[0] for r in rest] == ["Cluster", "RouteConfiguration"]
    assert order.session.replies.nacks[0].message == "rejected"


def test_a_hold_without_an_answer_ends_after_hold_s_and_is_logged() -> None:
    order = PushOrder(_subscribed(), hold_s=10.0)
    _settle(order, _offer(["b1/v"], "b1"), 0.0)
    after = _offer(["b1/v", "b3/v"], "b1,b3")
    order.pushes(after, "v2", None, 100.0)
    assert order.pushes(after, "v2", None, 109.9) == []
    assert order.wait_s(109.9) is not None and order.wait_s(110.0) == 0.0
    with capture_logs() as logs:
        rest = order.pushes(after, "v2", None, 110.0)
    assert [_names(r)[0] for r in rest] == ["Cluster", "RouteConfiguration"]
    assert order.timeouts == 1 and logs[0]["event"] == "xds_warm_timeout"


def test_a_reconnecting_envoy_holds_nothing_back_for_clusters_it_already_has() -> None:
    offered = _offer(["b1/v"], "b1")
    s = DeltaSession("e1", "r")
    s.receive(discovery_pb2.DeltaDiscoveryRequest(
        type_url=CLUSTER, initial_resource_versions={
            n: r.version for n, r in offered[CLUSTER].items()}))
    got = PushOrder(s).pushes(offered, "v", None, 0.0)
    # the first request of a type is answered (empty): nothing new to warm, nothing held
    assert [_names(r) for r in got] == [("Cluster", [], [])]


def test_state_of_the_world_sends_the_clusters_it_held_plus_the_new_one_then_the_rest(
        ) -> None:
    s = SotwSession("e1", "r")
    for t, names in ((CLUSTER, []), (LISTENER, []), (ROUTE, [ROUTES])):
        s.receive(discovery_pb2.DiscoveryRequest(type_url=t, resource_names=names))
    order = PushOrder(s)
    _settle(order, _offer(["b1/v"], "b1"), 0.0)
    after = _offer(["b3/v"], "b3")
    first = order.pushes(after, "v2", None, 1.0)
    assert len(first) == 1 and first[0].type_url == CLUSTER
    sent = {cluster_pb2.Cluster.FromString(a.value).name: cluster_pb2.Cluster.FromString(a.value)
            for a in first[0].resources}
    # the whole set as Envoy held it (b1, the old aggregate) plus b3
    assert sorted(sent) == ["dep:b1/v", "dep:b3/v", "model:m"]
    assert sent["model:m"].alt_stat_name == "b1"
    assert order.pushes(after, "v2", None, 2.0) == []
    _ack(order, first[0])
    rest = order.pushes(after, "v2", None, 2.0)
    assert [r.type_url for r in rest] == [CLUSTER, ROUTE]
    _ack(order, rest[1])
    last = order.pushes(after, "v2", None, 2.0)
    assert [r.type_url for r in last] == [CLUSTER]  # the whole set without b1
    assert len(last[0].resources) == 2


def test_the_delta_shortcut_finds_the_same_new_clusters_as_a_walk() -> None:
    before, after = _offer(["b1/v", "b2/v"], "x")[CLUSTER], _offer(["b2/v", "b3/v"], "y")[CLUSTER]
    s = _subscribed()
    s.push(CLUSTER, before, "1")  # holds exactly ``before``
    delta = Delta.between(before, after)
    assert s.new_names(CLUSTER, after, delta) == ["dep:b3/v"]
    assert s.new_names(CLUSTER, after) == ["dep:b3/v"]
    assert s.new_names(CLUSTER, before, None) == []


def test_deployment_clusters_carry_grpc_health_checks_and_can_be_turned_off() -> None:
    checks = health_checks(EnvoySettings())
    assert len(checks) == 1 and "grpc_health_check" in checks[0]
    assert checks[0]["interval"] == "2.0s" and checks[0]["no_traffic_interval"] == "5.0s"
    assert health_checks(EnvoySettings(health_interval_s=None)) == []


class _FakeHub:
    """EMULATED placement tables for the server: one model, rows set by the test."""

    def __init__(self) -> None:
        self.version = 1
        self.rows: list[placement_pb2.Candidate] = []
        self.wakes: list[asyncio.Event] = []

    def snapshot(self, region: str) -> list[placement_pb2.RouteTable]:
        return [placement_pb2.RouteTable(model="m", edge_region=region, default_slo_ms=300,
                                         candidates=self.rows)]

    def subscribe(self, edge_id: str, region: str) -> Any:
        w = type("W", (), {"wake": asyncio.Event(), "take": lambda self: self.wake.clear()})()
        self.wakes.append(w.wake)
        return w

    def unsubscribe(self, w: Any) -> None:
        pass

    def publish(self, rows: list[placement_pb2.Candidate]) -> None:
        self.rows, self.version = rows, self.version + 1
        for wake in self.wakes:
            wake.set()


def _row(b: str, cost: float) -> placement_pb2.Candidate:
    return placement_pb2.Candidate(
        deployment_id=f"{b}/m-v1", backend_id=b, endpoint="127.0.0.1:9", variant="m-v1",
        region="r", cloud="aws", quality=0.9, latency_p95_ms=20.0, cost_usd=cost,
        compute_ms=5.0, spare_capacity=100.0, concurrency=4)


class _FakeEnvoy:
    """The requests of an EMULATED Envoy, as the server's request iterator."""

    def __init__(self) -> None:
        self.q: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest | None] = asyncio.Queue()

    def send(self, type_url: str, nonce: str = "", **kw: Any) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=nonce, **kw)
        req.node.id, req.node.cluster = "e1", "r"
        req.node.metadata.fields["listen_port"].number_value = 50051
        self.q.put_nowait(req)

    async def requests(self) -> AsyncIterator[discovery_pb2.DeltaDiscoveryRequest]:
        while (req := await self.q.get()) is not None:
            yield req


async def test_the_server_sends_a_new_cluster_alone_and_a_lost_stream_ends_its_hold() -> None:
    hub = _FakeHub()
    hub.rows = [_row("b1", 1e-6)]
    ads = AdsServer(hub, build_profile("cheapest"), EnvoySettings(order_cap=1))
    envoy = _FakeEnvoy()
    stream = ads.DeltaAggregatedResources(envoy.requests(), None)  # type: ignore[arg-type]
    envoy.send(CLUSTER)
    first = await anext(stream)
    # every cluster new to Envoy first (the aggregates naming b1 with it), then the rest
    assert first.resources[0].name == "dep:b1/m-v1"
    assert all(r.name.startswith("model:m") for r in first.resources[1:])
    envoy.send(CLUSTER, first.nonce)
    envoy.send(LISTENER)
    envoy.send(ROUTE, resource_names_subscribe=[route_config_name("r")])
    got = [await anext(stream) for _ in range(2)]
    assert [r.type_url for r in got] == [LISTENER, ROUTE]
    for r in got:
        envoy.send(r.type_url, r.nonce)
    hub.publish([_row("b1", 1e-6), _row("b3", 1e-8)])  # b3, new, becomes the cheapest
    alone = await anext(stream)
    assert [r.name for r in alone.resources] == ["dep:b3/m-v1"] and not alone.removed_resources
    nxt = asyncio.ensure_future(anext(stream))
    envoy.send(LISTENER, got[0].nonce)  # another answer: the stream turns, still held
    await eventually(lambda: ads.sessions and next(iter(ads.sessions)).replies.acks == 4, 5,
                     "the server took Envoy's other answer")
    assert not nxt.done()
    envoy.send(CLUSTER, alone.nonce)  # warm: the aggregate and the routes naming b3 follow
    after = [await nxt, await anext(stream)]
    assert [r.type_url for r in after] == [CLUSTER, ROUTE]
    assert any(r.name.startswith("model:m") for r in after[0].resources)
    envoy.send(ROUTE, after[1].nonce)
    hub.publish([_row("b3", 1e-8), _row("b4", 1e-9)])
    held = await anext(stream)
    assert [r.name for r in held.resources] == ["dep:b4/m-v1"]
    envoy.q.put_nowait(None)  # the stream ends while held: the server's side ends with it
    rest = [r async for r in stream]
    assert rest == [] and not ads.sessions
