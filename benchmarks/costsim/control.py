"""The simulated control plane: placement's fleet state, route builder and the edges' view.

This is the production loop with the network taken out. Every ``telemetry_interval_s`` the
simulated agents' snapshots go into ``FleetState.ingest`` (placement derives compute, queue,
rate and busy fraction from Triton's counters); every ``table_interval_s`` ``RouteBuilder``
rebuilds the table of every (model, edge region), as placement pushes them; every
``edge_refresh_s`` each edge recomputes its observed p95s (``services.edge.stats.EdgeStats``,
the edge's own code) and reports them, with the call rate it sends each deployment, to
placement (``FleetState.observe``, ``FleetState.observe_use``: the edges' slot shares).
"""

from __future__ import annotations

from benchmarks.costsim.publish import Publisher
from placement.catalog import Catalog
from placement.fleet import FleetState, TelemetrySnapshot
from placement.model import Candidate
from placement.prices import PriceCatalog
from placement.routes import RouteBuilder, TableSettings
from services.edge.stats import EdgeStats


class ControlPlane:
    def __init__(self, catalog: Catalog, prices: PriceCatalog, regions: list[str],
                 observed_min_samples: int = 20, share_slots: bool = True,
                 published: bool = False) -> None:
        # share_slots=False: edges do not report their call rates, so every edge sees every
        # deployment's whole concurrency (the ablation ``switchyard-whole-slots``).
        self.share_slots = share_slots
        # published=True: edges see the rows as the live hub publishes them (material change,
        # learned changes at most every 5 s: ``publish.Publisher``), not every fresh build
        self.publisher = Publisher() if published else None
        self.fleet = FleetState()
        self.builder = RouteBuilder(catalog, prices, self.fleet,
                                    TableSettings(observed_min_samples=observed_min_samples))
        self.regions = regions
        self.tables: dict[tuple[str, str], list[Candidate]] = {}
        self.edges = {r: EdgeStats(observed_min_samples) for r in regions}
        self.builds = 0

    def telemetry(self, now: float, snapshots: dict[str, TelemetrySnapshot]) -> None:
        for backend_id, snap in snapshots.items():
            self.fleet.ingest(backend_id, snap, now)

    def rebuild(self, now: float) -> None:
        for model in self.builder.catalog.models:
            for region in self.regions:
                fresh = self.builder.build(model, region, now)
                self.tables[(model, region)] = fresh if self.publisher is None else \
                    self.publisher.table((model, region), fresh, now)
                self.builds += 1
        if self.publisher is not None:
            self.publisher.built(now)

    def refresh_edges(self, now: float, interval_s: float) -> None:
        for region, stats in self.edges.items():
            for dep, (samples, _failures, _p50, p95, calls) in stats.refresh().items():
                if samples:
                    self.fleet.observe(region, dep, samples, p95, now)
                if self.share_slots:
                    self.fleet.observe_use(region, region, dep, calls / interval_s, now)

    def record(self, edge: str, deployment_id: str, latency_ms: float, ok: bool) -> None:
        self.edges[edge].record(deployment_id, latency_ms, ok)
