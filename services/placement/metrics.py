"""Prometheus metrics of the placement service."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class PlacementMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.telemetry = Counter("switchyard_placement_telemetry_reports_total",
                                 "Telemetry reports accepted from agents",
                                 registry=self.registry)
        self.watchers = Gauge("switchyard_placement_watchers",
                              "Edges currently watching route tables", registry=self.registry)
        self.pushes = Counter("switchyard_placement_route_tables_pushed_total",
                              "Route tables whose content changed and were pushed",
                              registry=self.registry)
        self.backends = Gauge("switchyard_placement_backends", "Registered backends",
                              registry=self.registry)
