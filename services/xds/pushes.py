"""The order of one Envoy stream's pushes: nothing names a cluster Envoy cannot route to yet.

No I/O and no clock here: ``server.py`` feeds each request in (``receive``), asks for what
to send now (``pushes``, with the loop's time) and waits at most ``wait_s`` for Envoy's next
request while a hold is on.

Make before break, per resource type: clusters new or changed (kept beside the ones they
replace) before the listener and the route configuration that name them, and the clusters no
route names any more removed last.

Warm first: a deployment cluster has active health checks (``clusters.health_checks``), and a
NEW cluster with active checks is warming, invisible to routing, until its first check is
done. An aggregate or a route pushed in the same response as the cluster it names answered
"no healthy upstream" meanwhile (1-2 calls per run of
``tests/integration/test_envoy_edge_clusters.py``'s mid-traffic test). So a deployment cluster
this Envoy does not hold yet is sent first and alone (the clusters it holds unchanged), and
everything else waits for Envoy's answer to that response: Envoy keeps CDS paused, its ACK
unsent, while any cluster is warming (Envoy's cluster manager, "CDS paused during warming"),
so the ACK means the new clusters are usable. A NACK ends the hold too (Envoy would not warm
what it rejected; the rest goes out and is judged on its own), and so does ``hold_s`` without
an answer (logged: a cluster that never warms, e.g. a name that never resolves, must not
hold every later change of the region). A stream that ends ends its hold with it: a new
stream starts from what Envoy says it holds (delta) or from nothing (state of the world).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from services.xds.envoy_types import CLUSTER, LISTENER, ROUTE, Resource, is_deployment_cluster
from services.xds.session import Delta, DeltaSession, SotwSession

log = structlog.get_logger("switchyard.xds")

Session = DeltaSession | SotwSession
# Longest wait for Envoy's answer to a response of new deployment clusters: a first health
# check ends within its timeout (1 s) after the cluster is added, a refused connection within
# the connect timeout; well past both, and short enough that a cluster that never warms
# delays the region's next changes by seconds, not for good.
WARM_HOLD_S = 10.0


@dataclass(eq=False)  # one per stream
class PushOrder:
    session: Session
    hold_s: float = WARM_HOLD_S
    warming: str | None = None  # nonce of the response of new clusters not answered yet
    since: float = 0.0  # when it was sent
    holds: int = 0  # responses of new clusters sent alone
    timeouts: int = 0  # holds ended by ``hold_s`` without an answer

    def receive(self, req: Any, now: float) -> float | None:
        """A request of Envoy's: its answer to the held response ends the hold; then how
        long the hold lasted (Envoy's warming plus the round trip), else None."""
        if self.warming is not None and req.response_nonce == self.warming:
            self.warming = None
            return now - self.since
        return None

    def wait_s(self, now: float) -> float | None:
        """How long the stream may still wait for the held response's answer; None: no
        hold."""
        if self.warming is None:
            return None
        return max(0.0, self.since + self.hold_s - now)

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
            self.warming = None
        clusters = offered[CLUSTER]
        new = {n: clusters[n] for n in self.session.new_names(CLUSTER, clusters, delta)
               if is_deployment_cluster(n)}
        if new:
            first = self.session.push(CLUSTER, new, version, keep=True)
            if first is not None:
                self.warming, self.since = first.nonce, now
                self.holds += 1
                return [first]
        out = []
        for t, resources, keep in ((CLUSTER, clusters, True), (LISTENER, offered[LISTENER], False),
                                   (ROUTE, offered[ROUTE], False), (CLUSTER, clusters, False)):
            resp = self.session.push(t, resources, version,
                                     delta=delta if t == CLUSTER else None, keep=keep)
            if resp is not None:
                out.append(resp)
        return out
