"""Make before break across resource types (``services/xds/pushes.py``): what the ADS stream
sends, in order, with Envoy's ACKs, applied one response at a time by an EMULATED Envoy that
runs each response as it comes (Envoy's xDS types are eventually consistent with each other).
After every response, the share of the default class's first attempts each deployment gets
must lie between its share in the config before and the config after (never a state worse
than both), and every cluster a route or an aggregate names must be there.

The compiles are the real ones (``AdsServer`` over placement's tables, slow start on). All
but the drain test fail on the code before (d884d14's push order: every changed cluster, then
the route, then the removals, all in one batch): (a) an undrain ran the old route over the
reordered default aggregate (the returning deployment took the whole class), (c) a
deployment's cluster was removed before Envoy ACKed the route that stopped naming it, and
after a NACK of that route."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.xds.pushes import PushOrder
from services.xds.resources import CLUSTER, LISTENER, ROUTE, EnvoySettings, route_config_name
from services.xds.server import AdsServer
from services.xds.session import DeltaSession
from tests.xds_tables import cand

REGION = "r-east"
ROUTES = route_config_name(REGION)
SMALL, BIG = "small/s", "big/s"


class Hub:
    """What the ADS server reads of ``RouteHub``: one model, small/s (cheapest) and big/s;
    small/s drained or gone as the test says."""

    def __init__(self) -> None:
        self.version = 1
        self.small: str | None = ""  # its dropped_reason; None: no row at all

    def snapshot(self, region: str) -> list[placement_pb2.RouteTable]:
        rows = [cand(BIG, 2e-6, 60, 8)]
        if self.small is not None:
            small = cand(SMALL, 1e-6, 80, 4)
            small.dropped_reason = self.small
            rows.insert(0, small)
        return [placement_pb2.RouteTable(model="summarize", edge_region=region,
                                         default_slo_ms=300, candidates=rows)]

    def set(self, small: str | None) -> None:
        self.small, self.version = small, self.version + 1


class Envoy:
    """EMULATED Envoy: applies each delta response as it comes, in order."""

    def __init__(self) -> None:
        self.clusters: dict[str, cluster_pb2.Cluster] = {}
        self.route: route_pb2.RouteConfiguration | None = None
        self.log: list[tuple[str, list[str], list[str]]] = []  # what was sent, in order

    def apply(self, resp: discovery_pb2.DeltaDiscoveryResponse) -> None:
        kind = resp.type_url.rsplit(".", 1)[-1]
        names = sorted(r.name for r in resp.resources)
        self.log.append((kind, names, sorted(resp.removed_resources)))
        if resp.type_url == CLUSTER:
            for r in resp.resources:
                self.clusters[r.name] = cluster_pb2.Cluster.FromString(r.resource.value)
            for n in resp.removed_resources:
                del self.clusters[n]
        elif resp.type_url == ROUTE:
            for r in resp.resources:
                self.route = route_pb2.RouteConfiguration.FromString(r.resource.value)

    def children(self, name: str) -> list[str]:
        cfg = aggregate_pb2.ClusterConfig()
        assert name in self.clusters, f"{name} is named but Envoy does not hold it"
        self.clusters[name].cluster_type.typed_config.Unpack(cfg)
        for child in cfg.clusters:
            assert child in self.clusters, f"{name} names {child}, which Envoy does not hold"
        return list(cfg.clusters)

    def shares(self) -> dict[str, float]:
        """The default route's first attempts per deployment, as Envoy runs it now."""
        assert self.route is not None
        rt = next(r for r in self.route.virtual_hosts[0].routes if r.name == "summarize")
        a = rt.route
        targets = ([(a.cluster, 1.0)] if a.cluster else
                   [(w.name, float(w.weight.value)) for w in a.weighted_clusters.clusters])
        total = sum(w for _, w in targets)
        out: dict[str, float] = {}
        for name, w in targets:
            first = self.children(name)[0].removeprefix("dep:")
            out[first] = out.get(first, 0.0) + w / total
        return out


def _between(got: dict[str, float], old: dict[str, float], new: dict[str, float]) -> bool:
    return all(min(old.get(d, 0.0), new.get(d, 0.0)) - 1e-9 <= got.get(d, 0.0)
               <= max(old.get(d, 0.0), new.get(d, 0.0)) + 1e-9
               for d in {*got, *old, *new})


class Stream:
    """One delta ADS stream of the real ``PushOrder`` to the emulated Envoy."""

    def __init__(self, ads: AdsServer) -> None:
        self.ads, self.envoy, self.t = ads, Envoy(), 100.0
        s = DeltaSession("e1", REGION)
        for t, sub in ((CLUSTER, []), (LISTENER, []), (ROUTE, [ROUTES])):
            s.receive(discovery_pb2.DeltaDiscoveryRequest(type_url=t,
                                                          resource_names_subscribe=sub))
        self.order = PushOrder(s)
        self.nack_route = False

    def answer(self, resp: Any) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(type_url=resp.type_url,
                                                  response_nonce=resp.nonce)
        if self.nack_route and resp.type_url == ROUTE:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message="rejected"))
        self.order.session.receive(req)
        self.order.receive(req, self.t)

    def settle(self, check: bool = True) -> list[tuple[str, list[str], list[str]]]:
        """Push, apply and answer until nothing is left to send; every state Envoy passes
        through checked against the shares before and after. What was sent, with the
        answers marked ("ACK", nonce type)."""
        old = self.envoy.shares() if self.envoy.route is not None else None
        offered = self.ads.offer(REGION, "127.0.0.1", 50051)
        rc = self.ads.region_config(REGION)
        new = {d.removeprefix("dep:"): s for d, s in _shares_of(rc, offered).items()}
        start = len(self.envoy.log)
        for _ in range(10):
            got = self.order.pushes(offered, "v", None, self.t)
            if not got:
                break
            for resp in got:
                self.envoy.apply(resp)
                if check and old is not None and self.envoy.route is not None:
                    now = self.envoy.shares()
                    assert _between(now, old, new), (now, old, new, self.envoy.log[start:])
            for resp in got:  # Envoy answers after applying the batch
                self.answer(resp)
                self.envoy.log.append(("ACK" if not (self.nack_route and resp.type_url == ROUTE)
                                       else "NACK", [resp.type_url.rsplit(".", 1)[-1]], []))
            self.t += 0.01
        else:
            raise AssertionError("the pushes never settled")
        return self.envoy.log[start:]


def _shares_of(rc: Any, offered: dict[str, Any]) -> dict[str, float]:
    """The default route's first-attempt shares in a compiled config."""
    e = Envoy()
    e.clusters = {n: r.message for n, r in offered[CLUSTER].items()}
    e.route = rc.routes[ROUTES].message
    return e.shares()


def _mesh(slow_start_s: float = 8.0) -> tuple[Hub, Stream]:
    hub = Hub()
    ads = AdsServer(hub, build_profile("cheapest"),  # type: ignore[arg-type]
                    EnvoySettings(slow_start_s=slow_start_s))
    t = [100.0]
    ads.learning.clock = lambda: t[0]
    stream = Stream(ads)
    stream.settle()
    return hub, stream


def test_a_undrain_with_slow_start_never_runs_the_old_route_over_the_reordered_aggregate(
        ) -> None:
    hub, stream = _mesh()
    hub.set("backend drained by operator")
    stream.settle()
    assert stream.envoy.shares() == {BIG: 1.0}
    hub.set("")  # back: its share ramps from 10 %
    sent = stream.settle()
    got = stream.envoy.shares()
    assert 0.05 < got[SMALL] < 0.2, got
    # the default aggregate's new order (small/s first) only after Envoy ACKed the route
    route_at = sent.index(("RouteConfiguration", [ROUTES], []))
    ack_at = sent.index(("ACK", ["RouteConfiguration"], []), route_at)
    changed = [i for i, (kind, names, _) in enumerate(sent)
               if kind == "Cluster" and "model:summarize" in names]
    assert changed and all(i > ack_at for i in changed), sent


def test_b_a_drain_takes_the_deployment_out_no_later_than_the_route() -> None:
    """Passes on the old code too: the aggregate the route keeps naming changes first."""
    hub, stream = _mesh(slow_start_s=0.0)
    assert stream.envoy.shares() == {SMALL: 1.0}
    hub.set("backend drained by operator")
    sent = stream.settle()
    assert stream.envoy.shares() == {BIG: 1.0}
    first_cluster = next(i for i, (kind, names, _) in enumerate(sent)
                         if kind == "Cluster" and "model:summarize" in names)
    assert first_cluster < sent.index(("RouteConfiguration", [ROUTES], [])), sent
    assert "dep:small/s" in stream.envoy.clusters  # kept warm for its return


def test_c_a_removed_deployment_leaves_only_after_envoy_acked_the_route() -> None:
    hub, stream = _mesh(slow_start_s=0.0)
    hub.set(None)  # small/s deregistered: no row
    sent = stream.settle()
    removed = next(i for i, (kind, _, gone) in enumerate(sent)
                   if kind == "Cluster" and gone == ["dep:small/s"])
    route_at = sent.index(("RouteConfiguration", [ROUTES], []))
    assert sent.index(("ACK", ["RouteConfiguration"], []), route_at) < removed, sent
    assert "dep:small/s" not in stream.envoy.clusters


def test_c_a_nacked_route_keeps_the_clusters_the_route_envoy_runs_names() -> None:
    hub, stream = _mesh(slow_start_s=0.0)
    stream.nack_route = True
    hub.set(None)
    sent = stream.settle(check=False)
    assert ("NACK", ["RouteConfiguration"], []) in sent
    assert "dep:small/s" in stream.envoy.clusters, sent  # the old route may still reach it
    stream.nack_route = False
    hub.set("")  # back: a new route, ACKed; nothing is wedged
    stream.settle(check=False)
    assert stream.envoy.shares() == {SMALL: 1.0}
