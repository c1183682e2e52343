"""Make before break in STATE-OF-THE-WORLD ADS (``services/xds/pushes.py`` over
``SotwSession``): every CDS response is the whole set, and Envoy removes what it leaves out,
so a response that "keeps" clusters for a route Envoy may still run must be the set Envoy
holds plus the new ones, not the set of the last compile pushed whole.

An EMULATED state-of-the-world Envoy applies each response as it comes (the clusters are
exactly the last CDS response; the route, the last RDS response) and after every response
each cluster the route it runs names, and each child of those aggregates, must be there, in
the version Envoy was last sent (never an older one sent again).

Fails on the code before (SotwSession merged a keep push with the last set pushed whole):
when a newer compile came while the break of the one before waited for its route's ACK, the
make step of the newer one sent the older compile's set plus its new clusters: the
aggregate the running route named was dropped, and a cluster changed in place sent back in
its older version."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.rpc import status_pb2

from services.xds.envoy_types import Resource, resource
from services.xds.pushes import PushOrder
from services.xds.resources import CLUSTER, LISTENER, ROUTE
from services.xds.session import SotwSession

ROUTES = "routes:r"


def _dep(name: str, content: str = "") -> Resource:
    return resource(name, cluster_pb2.Cluster(name=name, alt_stat_name=content))


def _agg(name: str, children: list[str]) -> Resource:
    typed = any_pb2.Any()
    typed.Pack(aggregate_pb2.ClusterConfig(clusters=children))
    return resource(name, cluster_pb2.Cluster(
        name=name, cluster_type=cluster_pb2.Cluster.CustomClusterType(
            name="envoy.clusters.aggregate", typed_config=typed)))


def _offer(clusters: list[Resource], target: str, tag: str = ""
           ) -> dict[str, dict[str, Resource]]:
    """The clusters, and a route whose one entry names ``target`` (``tag``: its content)."""
    route = route_pb2.RouteConfiguration(name=ROUTES, request_headers_to_remove=[tag],
                                         virtual_hosts=[route_components_pb2.VirtualHost(
        name="vh", domains=["*"], routes=[route_components_pb2.Route(
            name="m", route=route_components_pb2.RouteAction(cluster=target))])])
    return {CLUSTER: {c.name: c for c in clusters},
            LISTENER: {"ingress": resource("ingress", listener_pb2.Listener(name="ingress"))},
            ROUTE: {ROUTES: resource(ROUTES, route)}}


class SotwEnvoy:
    """EMULATED state-of-the-world Envoy: a CDS response replaces every cluster, an RDS
    response the route; checked after every response."""

    def __init__(self) -> None:
        self.clusters: dict[str, cluster_pb2.Cluster] = {}
        self.route: route_pb2.RouteConfiguration | None = None
        self.ran: route_pb2.RouteConfiguration | None = None  # the route before it
        self.versions: dict[str, list[str]] = {}  # cluster -> every content it was sent

    def apply(self, resp: discovery_pb2.DiscoveryResponse) -> None:
        if resp.type_url == CLUSTER:
            got = [cluster_pb2.Cluster.FromString(r.value) for r in resp.resources]
            self.clusters = {c.name: c for c in got}
            for c in got:
                seen = self.versions.setdefault(c.name, [])
                content = c.SerializeToString(deterministic=True).hex()
                if not seen or seen[-1] != content:
                    assert content not in seen, f"{c.name} sent back in an older version"
                    seen.append(content)
        elif resp.type_url == ROUTE:
            (r,) = resp.resources
            self.ran, self.route = self.route, route_pb2.RouteConfiguration.FromString(r.value)
        self.check()

    def reject_route(self) -> None:
        """Envoy NACKs the route it was sent: it runs the one before."""
        self.route = self.ran
        self.check()

    def check(self) -> None:
        if self.route is None:
            return
        for vh in self.route.virtual_hosts:
            for rt in vh.routes:
                name = rt.route.cluster
                assert name in self.clusters, f"the route names {name}; Envoy lost it"
                cfg = aggregate_pb2.ClusterConfig()
                if self.clusters[name].cluster_type.typed_config.Unpack(cfg):
                    for child in cfg.clusters:
                        assert child in self.clusters, f"{name} names {child}; Envoy lost it"


class Stream:
    def __init__(self) -> None:
        s = SotwSession("e1", "r")
        for t, names in ((CLUSTER, []), (LISTENER, []), (ROUTE, [ROUTES])):
            s.receive(discovery_pb2.DiscoveryRequest(type_url=t, resource_names=names))
        self.order, self.envoy, self.t = PushOrder(s), SotwEnvoy(), 100.0
        self.unanswered: list[Any] = []

    def push(self, offered: dict[str, dict[str, Resource]]) -> list[Any]:
        got = self.order.pushes(offered, "v", None, self.t)
        for resp in got:
            self.envoy.apply(resp)
        self.unanswered += got
        return got

    def answer(self, nack_route: bool = False) -> None:
        session = self.order.session
        assert isinstance(session, SotwSession)
        for resp in self.unanswered:  # an ACK repeats the subscription
            req = discovery_pb2.DiscoveryRequest(
                type_url=resp.type_url, response_nonce=resp.nonce,
                resource_names=sorted(session.names[resp.type_url]))
            if nack_route and resp.type_url == ROUTE:
                req.error_detail.CopyFrom(status_pb2.Status(code=3, message="rejected"))
                self.envoy.reject_route()
            session.receive(req)
            self.order.receive(req, self.t)
        self.unanswered = []
        self.t += 0.01

    def settle(self, offered: dict[str, dict[str, Resource]]) -> None:
        for _ in range(10):
            if not self.push(offered):
                return
            self.answer()
        raise AssertionError("the pushes never settled")


A = _offer([_dep("dep:a"), _dep("dep:old"), _agg("agg:x", ["dep:a", "dep:old"])], "agg:x")
# dep:old gone, dep:b new behind a new aggregate the route now names, dep:a changed in place
B = _offer([_dep("dep:a", "v2"), _dep("dep:b"), _agg("agg:y", ["dep:a", "dep:b"])], "agg:y")
# and one more deployment, not named yet (the route's content changed too: a NACKed
# route is not sent again unchanged)
C = _offer([*B[CLUSTER].values(), _dep("dep:c")], "agg:y", "c")


def test_a_newer_compile_during_the_break_keeps_what_the_running_route_names() -> None:
    stream = Stream()
    stream.settle(A)
    stream.push(B)  # make: dep:b, agg:y kept beside A's set
    stream.answer()
    sent = stream.push(B)  # dep:a changed in place, the route; the break waits for its ACK
    assert [r.type_url for r in sent][-1] == ROUTE
    assert "dep:old" in stream.envoy.clusters  # A's route may still run
    stream.answer()  # the route ACKed: Envoy runs B's route (agg:y)
    stream.push(C)  # a newer compile came meanwhile: its make step, then the rest
    stream.answer()
    stream.settle(C)
    assert set(stream.envoy.clusters) == set(C[CLUSTER])
    assert stream.envoy.clusters["dep:a"].alt_stat_name == "v2"


def test_a_nacked_route_then_a_newer_compile_keeps_both_routes_clusters() -> None:
    """Envoy NACKs B's route (it runs A's), then C comes: A's clusters stay until a route
    that does not name them is ACKed; what B sent is not dropped while B's make may still be
    what Envoy runs next."""
    stream = Stream()
    stream.settle(A)
    stream.push(B)
    stream.answer()
    stream.push(B)
    stream.answer(nack_route=True)  # Envoy keeps running A's route (agg:x)
    assert {"dep:old", "agg:x"} <= set(stream.envoy.clusters)
    stream.push(C)
    assert {"dep:old", "agg:x"} <= set(stream.envoy.clusters)
    stream.answer()
    stream.settle(C)
    assert set(stream.envoy.clusters) == set(C[CLUSTER])
