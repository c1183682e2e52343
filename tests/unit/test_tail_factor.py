"""The tail factor for deployments nobody has measured yet (placement.latency.tail_factor,
learned in placement.routes.RouteBuilder.tail_factor)."""

from __future__ import annotations

import pytest

from placement import latency
from placement.catalog import Catalog
from placement.fleet import FleetState, TelemetrySnapshot, VariantStats
from placement.model import Backend, LogicalModel, Variant
from placement.prices import PriceCatalog, PriceEntry
from placement.routes import TAIL_REFRESH_S, RouteBuilder, TableSettings

V = Variant("m-small", "m", 0.7)
U = Variant("n-small", "n", 0.7)


def setup(learned: bool = True) -> tuple[FleetState, RouteBuilder]:
    catalog = Catalog.build({"east": "aws", "west": "aws"},
                            [LogicalModel("m", 100, (V,)), LogicalModel("n", 100, (U,))],
                            [("east", "west", 40.0)])
    prices = PriceCatalog([PriceEntry("gpu", "aws", "*", "on-demand", 3.6)])
    fleet = FleetState()
    for bid in ("b1", "b2"):
        fleet.register(Backend(bid, f"{bid}:1", "aws", "west", "gpu", 1, "on-demand", (V,), 2))
    fleet.register(Backend("c1", "c1:1", "aws", "west", "gpu", 1, "on-demand", (U,), 2))
    return fleet, RouteBuilder(catalog, prices, fleet, TableSettings(observed_min_samples=5,
                                                                 learned_tail=learned))


def report(variant: str, count: int, compute_ms: float) -> TelemetrySnapshot:
    return TelemetrySnapshot(ready=True, simulated=True, variants={
        variant: VariantStats(count, count, 0, 0, int(compute_ms * 1e6 * count))})


def row(builder: RouteBuilder, model: str, deployment: str, now: float):  # type: ignore[no-untyped-def]
    return next(c for c in builder.build(model, "east", now) if c.deployment_id == deployment)


def test_weighted_median_clamped_and_default() -> None:
    assert latency.tail_factor([]) == latency.DEFAULT_TAIL_FACTOR
    assert latency.tail_factor([], default=2.2) == 2.2
    # 10 samples at 1.5, 30 at 2.4: the sample-weighted median is 2.4, not the mean.
    assert latency.tail_factor([(1.5, 10), (2.4, 30)]) == 2.4
    assert latency.tail_factor([(1.5, 30), (2.4, 10)]) == 1.5
    assert latency.tail_factor([(1.5, 10), (2.4, 30)], quantile=0.2) == 1.5
    assert latency.tail_factor([(0.4, 5)]) == latency.COMPUTE_P95_FACTOR
    assert latency.tail_factor([(9.0, 5)]) == latency.MAX_TAIL_FACTOR
    assert latency.tail_ratio(100.0, 40.0, 10.0, 20.0) == pytest.approx(2.5)


def test_an_unmeasured_deployment_gets_the_tail_its_measured_siblings_show() -> None:
    fleet, builder = setup()
    fleet.ingest("b1", report("m-small", 100, 10.0), 0.0)
    fleet.ingest("b2", report("m-small", 100, 20.0), 0.0)
    before = row(builder, "m", "b2/m-small", 0.0)
    assert before.latency_p95_ms == pytest.approx(
        40.0 + before.queue_ms + 20.0 * latency.DEFAULT_TAIL_FACTOR)
    b1 = row(builder, "m", "b1/m-small", 0.0)
    # b1's edges saw a p95 whose service part is 2.5× its mean compute.
    fleet.observe("east", "b1/m-small", samples=50, p95_ms=40.0 + b1.queue_ms + 25.0, now=0.5)
    cached = row(builder, "m", "b2/m-small", 0.5)  # within TAIL_REFRESH_S: unchanged
    assert cached.latency_p95_ms == pytest.approx(before.latency_p95_ms)
    after = row(builder, "m", "b2/m-small", TAIL_REFRESH_S)
    assert not after.observed
    assert after.latency_p95_ms == pytest.approx(40.0 + after.queue_ms + 20.0 * 2.5)
    assert builder.tail_factor("m", TAIL_REFRESH_S) == pytest.approx(2.5)


def test_a_model_with_no_measurement_learns_from_the_fleet_until_it_has_its_own() -> None:
    fleet, builder = setup()
    fleet.ingest("b1", report("m-small", 100, 10.0), 0.0)
    fleet.ingest("c1", report("n-small", 100, 10.0), 0.0)
    b1 = row(builder, "m", "b1/m-small", 0.0)
    fleet.observe("east", "b1/m-small", samples=50, p95_ms=40.0 + b1.queue_ms + 20.0, now=0.0)
    assert builder.tail_factor("n", 0.0) == pytest.approx(2.0)  # the fleet's
    c1 = row(builder, "n", "c1/n-small", 0.0)
    fleet.observe("east", "c1/n-small", samples=50, p95_ms=40.0 + c1.queue_ms + 14.0, now=2.0)
    assert builder.tail_factor("n", 2.0) == pytest.approx(1.4)  # its own
    # Observations older than the TTL no longer count: back to the default.
    assert builder.tail_factor("n", 200.0) == latency.DEFAULT_TAIL_FACTOR


def test_off_by_default_the_factor_stays_fixed() -> None:
    fleet, builder = setup(learned=False)
    fleet.ingest("b1", report("m-small", 100, 10.0), 0.0)
    fleet.ingest("b2", report("m-small", 100, 20.0), 0.0)
    b1 = row(builder, "m", "b1/m-small", 0.0)
    fleet.observe("east", "b1/m-small", samples=50, p95_ms=40.0 + b1.queue_ms + 25.0, now=0.0)
    b2 = row(builder, "m", "b2/m-small", 2.0)
    assert b2.latency_p95_ms == pytest.approx(
        40.0 + b2.queue_ms + 20.0 * latency.UNMEASURED_TAIL_FACTOR)
