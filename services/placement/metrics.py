"""Prometheus metrics of the placement service.

``published`` is the route hub's ``on_published`` hook: how long a fleet change took to
reach the watchers (coalescing wait plus rebuild), and the per-call cost of every row pushed,
which the edges' per-deployment call counts turn into dollars per 1k calls on a dashboard
(a removed row keeps its last cost while its backend is registered; a deregistered
backend's series are removed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.placement import plausible
from services.placement.bands import REASONS
from services.placement.hub import Push

PUSH_BUCKETS = (.005, .01, .025, .05, .075, .1, .25, .5, 1.0, 2.5)


class PlacementMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.telemetry = Counter("switchyard_placement_telemetry_reports_total",
                                 "Telemetry reports accepted from agents",
                                 registry=self.registry)
        self.telemetry_refused = Counter(
            "switchyard_placement_telemetry_refused_total",
            "Agent reports refused, not used: counters no backend could produce "
            "(services.placement.plausible)", ["reason"], registry=self.registry)
        for reason in plausible.REASONS:  # every series from the start
            self.telemetry_refused.labels(reason)
        self.watchers = Gauge("switchyard_placement_watchers",
                              "Edges currently watching route tables (WatchRoutes or ADS)",
                              registry=self.registry)
        self.pushes = Counter("switchyard_placement_route_tables_pushed_total",
                              "Route tables whose content changed and were pushed",
                              registry=self.registry)
        self.backends = Gauge("switchyard_placement_backends", "Registered backends",
                              registry=self.registry)
        self.publishes = Counter(
            "switchyard_placement_route_publishes_total",
            "Publishes of changed route rows, once under each reason among their rows: "
            "added, removed, the first field that differs of those an edge reads exactly "
            "(availability, dropped_reason, edge_slots, ...), spare_crossed_zero, or the "
            "estimate that left its band (latency_p95_ms, rtt_ms, queue_ms, compute_ms, "
            "cost_usd, spare_capacity)", ["reason"], registry=self.registry)
        for reason in REASONS:  # every series from the start: a first publish adds none
            self.publishes.labels(reason)
        self.push_latency = Histogram(
            "switchyard_placement_push_latency_seconds",
            "From the first fleet change to its rows offered to watching edges",
            registry=self.registry, buckets=PUSH_BUCKETS)
        self.cost = Gauge("switchyard_placement_deployment_cost_usd",
                          "Cost of one call on a deployment, as priced in the route tables",
                          ["model", "deployment"], registry=self.registry)
        # (model, deployment) -> (its cost child, the cost last set): a push of 10,000 rows
        # looked up each label set anew (most of a publish's metrics time at fleet scale).
        self._costs: dict[tuple[str, str], tuple[Gauge, float]] = {}
        # whether a backend id is registered (build_service: the fleet's): a deregistered
        # backend's cost series are removed, or every instance the capacity loop ever
        # started (a new id each) would stay a label set for as long as placement runs
        self.registered: Callable[[str], bool] = lambda backend_id: True

    def track(self, backends: Collection[str], watchers: Collection[object]) -> None:
        """``backends``: the fleet's registered backends by id (``FleetState.backends``);
        ``watchers``: the route hub's (``RouteHub.watchers``: a Python edge's WatchRoutes and
        an Envoy edge's ADS stream each hold one). Both gauges read their count at each
        scrape: the backends gauge was never set (0 with a whole fleet registered) and the
        watchers gauge counted WatchRoutes only (an Envoy edge watching was not one). A
        deregistered backend's cost series are removed."""
        self.registered = backends.__contains__
        self.backends.set_function(lambda: len(backends))
        self.watchers.set_function(lambda: len(watchers))

    def published(self, push: Push) -> None:
        """The hub offered ``push`` to its watchers."""
        self.push_latency.observe(push.latency_s)
        for reason in push.reasons:
            self.publishes.labels(reason).inc()
        for (model, _region), rows in push.rows.items():
            for deployment, row in rows.items():
                # Cost does not depend on the edge's region. A removed row keeps its last
                # cost: no call goes to it any more, so it adds nothing to a call-rate product.
                if row is None:
                    if ((model, deployment) in self._costs
                            and not self.registered(deployment.split("/", 1)[0])):
                        del self._costs[(model, deployment)]
                        self.cost.remove(model, deployment)
                    continue
                known = self._costs.get((model, deployment))
                if known is None:
                    known = (self.cost.labels(model, deployment), math.nan)
                if known[1] != row.cost_usd:
                    known[0].set(row.cost_usd)
                    self._costs[(model, deployment)] = (known[0], row.cost_usd)
