"""The order of one Envoy stream's pushes: make before break, by what the routes name.

No I/O and no clock here: ``server.py`` feeds each request in (``receive``), asks for what
to send now (``pushes``, with the loop's time) and waits at most ``wait_s`` for Envoy's next
request while a hold is on.

Envoy's xDS types are eventually consistent with each other: each response is applied as it
comes, so between a cluster response and the route response after it Envoy runs the old
routes over the new clusters (Envoy's "xDS REST and gRPC protocol", "Eventual consistency
considerations": clusters before the routes that name them, routes changed before the
clusters they stop naming are changed or removed). One push of a region's compile is three
steps, each only once Envoy answered the one before when the next depends on it:

1. **make**: the clusters Envoy does not hold (deployments, aggregates: a weighted route's
   rotations), sent alone (the clusters it holds unchanged); the rest waits for Envoy's
   answer. A new deployment cluster has active health checks (``clusters.health_checks``)
   and is warming, invisible to routing, until its first check is done; an aggregate or a
   route pushed in the same response as the cluster it names answered "no healthy
   upstream" meanwhile (1-2 calls per run of ``tests/integration/test_envoy_edge_clusters.py``'s
   mid-traffic test). Envoy keeps CDS paused, its ACK unsent, while any cluster is warming
   (Envoy's cluster manager, "CDS paused during warming"), so the ACK means the new
   clusters are usable.
2. **route**: the clusters Envoy holds that change in place, except those a route entry
   Envoy may run names and the same entry of the new routes no longer names (``_left``),
   then the listener and the route configuration. A cluster whose entries keep naming it
   changes before the route: the change is the new routing (a drain takes its deployment
   out of the aggregate at once; the route's own change is its prices). One an entry leaves
   must not: Envoy would run the old entry over the new cluster, e.g. an undrain with slow
   start reorders the default aggregate (the returning deployment first) while the new
   route splits the class over rotations, so the old route sent the whole class to the
   returning deployment until the route came (``tests/unit/test_xds_push_order.py``).
3. **break**: once Envoy ACKed that route, those clusters changed and the clusters no route
   names any more removed. A route NACKed leaves Envoy on the route it ran, which may name
   them: they wait for the next route Envoy ACKs (nothing else waits on them).

A NACK ends a hold (Envoy would not warm what it rejected; the rest goes out and is judged
on its own), and so does ``hold_s`` without an answer (logged: a cluster that never warms,
e.g. a name that never resolves, must not hold every later change of the region). A stream
that ends ends its hold with it: a new stream starts from what Envoy says it holds (delta) or
from nothing (state of the world).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from envoy.config.route.v3 import route_pb2

from services.xds.envoy_types import CLUSTER, LISTENER, ROUTE, Resource
from services.xds.session import Delta, DeltaSession, SotwSession

log = structlog.get_logger("switchyard.xds")

Session = DeltaSession | SotwSession
# Longest wait for Envoy's answer to a held response: a first health check ends within its
# timeout (1 s) after the cluster is added, a refused connection within the connect timeout,
# a route is ACKed once parsed; well past all, and short enough that a cluster that never
# warms delays the region's next changes by seconds, not for good.
WARM_HOLD_S = 10.0

Entries = Mapping[str, frozenset[str]]  # route entry (vhost/route name) -> clusters it names
_ENTRIES: dict[tuple[str, str], Entries] = {}  # (route config name, version) -> its entries
ENTRIES_KEPT = 4096


def route_entries(r: Resource) -> Entries:
    """What each entry of a route configuration names: its cluster, or its weighted
    clusters (read once per version, for every stream)."""
    got = _ENTRIES.get((r.name, r.version))
    if got is None:
        if len(_ENTRIES) >= ENTRIES_KEPT:
            _ENTRIES.clear()
        out: dict[str, frozenset[str]] = {}
        msg = r.message
        assert isinstance(msg, route_pb2.RouteConfiguration)
        for vh in msg.virtual_hosts:
            for i, rt in enumerate(vh.routes):
                a = rt.route
                names = frozenset([a.cluster] if a.cluster else
                                  [w.name for w in a.weighted_clusters.clusters])
                out[f"{r.name}/{vh.name}/{rt.name or i}"] = names
        got = _ENTRIES[(r.name, r.version)] = out
    return got


def _left(old: list[Entries], new: Entries) -> set[str]:
    """Clusters an entry of a route Envoy may run names that the same entry of ``new``
    does not; of an entry ``new`` has not (an SLO class's range is in its name), those no
    entry of ``new`` names."""
    out: set[str] = set()
    named = frozenset().union(*new.values())
    for entries in old:
        for key, names in entries.items():
            out |= names - new.get(key, named)
    return out


@dataclass(eq=False)  # one per stream
class PushOrder:
    session: Session
    hold_s: float = WARM_HOLD_S
    warming: str | None = None  # nonce of the held response (new clusters or the route)
    warm: bool = False  # the held response is new clusters (not a route)
    since: float = 0.0  # when it was sent
    holds: int = 0  # responses of new clusters sent alone
    route_holds: int = 0  # route responses whose ACK the break waited for
    timeouts: int = 0  # holds ended by ``hold_s`` without an answer
    # the route configurations Envoy runs (ACKed), and the one sent and not answered yet
    running: dict[str, Resource] = field(default_factory=dict)
    sent_route: tuple[str, Mapping[str, Resource]] | None = None
    given_up: str | None = None  # a route's nonce whose hold ended without an answer

    def receive(self, req: Any, now: float) -> float | None:
        """A request of Envoy's: its answer to the held response ends the hold; then how
        long the hold lasted (Envoy's warming plus the round trip), else None."""
        if self.sent_route is not None and req.response_nonce == self.sent_route[0]:
            if not req.HasField("error_detail"):  # a NACKed route leaves Envoy on its last
                self.running = dict(self.sent_route[1])
            self.sent_route = None
        if self.warming is not None and req.response_nonce == self.warming:
            self.warming = None
            return now - self.since if self.warm else None
        return None

    def wait_s(self, now: float) -> float | None:
        """How long the stream may still wait for the held response's answer; None: no
        hold."""
        if self.warming is None:
            return None
        return max(0.0, self.since + self.hold_s - now)

    def _hold(self, nonce: str, now: float, warm: bool) -> None:
        self.warming, self.since, self.warm = nonce, now, warm

    def pushes(self, offered: Mapping[str, Mapping[str, Resource]], version: str,
               delta: Delta | None, now: float) -> list[Any]:
        """What to send now to bring this Envoy towards ``offered`` (type -> resources;
        ``delta``: how its clusters differ from the compile before, a shortcut), in order."""
        if self.warming is not None:
            if now < self.since + self.hold_s:
                return []
            self.timeouts += 1
            log.warning("xds_warm_timeout", node=self.session.node_id, nonce=self.warming,
                        waited_s=round(now - self.since, 3))
            if not self.warm:  # a late answer still counts; the break is not held again
                self.given_up = self.warming
            self.warming = None
        session = self.session
        clusters = offered[CLUSTER]
        new = {n: clusters[n] for n in session.new_names(CLUSTER, clusters, delta)}
        if new:  # 1. make
            first = session.push(CLUSTER, new, version, keep=True)
            if first is not None:
                self._hold(first.nonce, now, warm=True)
                self.holds += 1
                return [first]
        routes = offered[ROUTE]
        may_run = [route_entries(r) for r in (*self.running.values(), *(
            self.sent_route[1].values() if self.sent_route is not None else ()))
            if (n := routes.get(r.name)) is None or n.version != r.version]
        left = (_left(may_run, {k: v for r in routes.values()
                                for k, v in route_entries(r).items()})
                if may_run else set())
        held = session.held_versions(CLUSTER)
        later = {n for n in left if n in clusters and n in held
                 and held[n] != clusters[n].version}
        now_clusters = clusters if not later else {n: r for n, r in clusters.items()
                                                   if n not in later}
        out = []
        for t, resources in ((CLUSTER, now_clusters), (LISTENER, offered[LISTENER]),
                             (ROUTE, routes)):  # 2. route
            resp = session.push(t, resources, version, keep=t == CLUSTER,
                                delta=delta if resources is clusters else None)
            if resp is not None:
                out.append(resp)
                if t == ROUTE:
                    self.sent_route = (resp.nonce, routes)
        if later or session.held_beyond(CLUSTER, clusters):
            pending = self.sent_route[0] if self.sent_route is not None else None
            if pending is not None and pending != self.given_up:  # 3. break after its ACK
                self._hold(pending, now, warm=False)
                self.route_holds += 1
                return out
            if self.running and any((r := self.running.get(n)) is None
                                    or r.version != want.version
                                    for n, want in routes.items()):
                return out  # a route NACKed (or unanswered): Envoy may run what names them
        resp = session.push(CLUSTER, clusters, version, delta=delta)
        if resp is not None:
            out.append(resp)
        return out
