"""The compute estimate before a deployment's own samples (placement.prior, read by
placement.routes.RouteBuilder with FLEET_PRIOR / PRIOR_Z / MIX_QUEUE)."""

from __future__ import annotations

import math

import pytest

from placement import latency, meet, prior, routes
from placement.catalog import Catalog
from placement.fleet import ALPHA, FleetState, TelemetrySnapshot, VariantStats
from placement.model import Backend, Candidate, LogicalModel, Variant
from placement.prices import PriceCatalog, PriceEntry
from placement.routes import RouteBuilder, TableSettings

V = Variant("m-small", "m", 0.7)
W = Variant("m-large", "m", 0.9)


def setup() -> tuple[FleetState, RouteBuilder]:
    catalog = Catalog.build({"east": "aws", "west": "aws"}, [LogicalModel("m", 100, (V, W))],
                            [("east", "west", 40.0)])
    prices = PriceCatalog([PriceEntry("*", "aws", "*", "on-demand", 3.6)])
    fleet = FleetState()
    for bid, gpu in (("a1", "t4"), ("a2", "t4"), ("h1", "h100")):
        fleet.register(Backend(bid, f"{bid}:1", "aws", "west", gpu, 1, "on-demand", (V, W), 2))
    return fleet, RouteBuilder(catalog, prices, fleet, TableSettings(observed_min_samples=5))


def counters(count: int, compute_ms: float) -> VariantStats:
    return VariantStats(count, count, 0, 0, int(compute_ms * 1e6 * count))


def report(variant: str, count: int, compute_ms: float, sent_ms: int = 0) -> TelemetrySnapshot:
    return TelemetrySnapshot(ready=True, simulated=True, sent_ms=sent_ms,
                             variants={variant: counters(count, compute_ms)})


def row(builder: RouteBuilder, deployment: str, now: float = 0.0) -> Candidate:
    return next(c for c in builder.build("m", "east", now) if c.deployment_id == deployment)


def test_pool_and_shrinkage_are_sample_weighted() -> None:
    assert prior.pooled([]) is None
    assert prior.pooled([(10.0, 0.0)]) is None
    assert prior.pooled([(10.0, 30.0), (20.0, 10.0)]) == pytest.approx((12.5, 40.0))
    # no pool: the deployment's own; no own: the pool's, its samples capped at the strength
    assert prior.shrunk(7.0, 3.0, None) == (7.0, 3.0)
    assert prior.shrunk(None, 0.0, (12.0, 500.0), strength=50.0) == (12.0, 50.0)
    # 10 own samples at 20 ms against 50 of the pool's at 10 ms
    assert prior.shrunk(20.0, 10.0, (10.0, 500.0), strength=50.0) == pytest.approx(
        ((10 * 20.0 + 50 * 10.0) / 60, 60.0))


def test_the_width_shrinks_with_samples() -> None:
    c = prior.cv(1.5)
    s = math.sqrt(math.log1p(c * c))  # the lognormal's sigma: its p95 is 1.5 x its mean
    assert math.exp(s * meet.Z95 - s * s / 2) == pytest.approx(1.5)
    assert prior.widened(1.0, 1.5, 0.0) == 1.0
    assert prior.widened(0.0, 1.5, 2.0) == pytest.approx(1.0 + 2.0 * c)
    assert prior.widened(100.0, 1.5, 2.0) == pytest.approx(1.0 + 2.0 * c / 10.0)
    assert prior.widened(4.0, 1.5, 2.0) > prior.widened(16.0, 1.5, 2.0) > 1.0


def test_the_fleet_counts_the_samples_behind_a_mean() -> None:
    fleet, _ = setup()
    fleet.ingest("a1", report("m-small", 8, 10.0, sent_ms=1000), 0.0)
    load = fleet.backends["a1"].loads["m-small"]
    assert load.samples == 8.0  # the first report: its totals
    fleet.ingest("a1", report("m-small", 12, 10.0, sent_ms=2000), 1.0)  # a window of 4
    assert load.samples == pytest.approx(1.0 / ((1 - ALPHA) ** 2 / 8 + ALPHA ** 2 / 4))


def test_an_unserved_deployment_takes_its_accelerator_s_compute_elsewhere(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fleet, builder = setup()
    fleet.ingest("a1", report("m-small", 200, 12.0), 0.0)
    fleet.ingest("h1", report("m-small", 200, 3.0), 0.0)
    # off: a2 (a T4 like a1) is priced at the model's SLO x PRIOR_COMPUTE_FRACTION_OF_SLO
    assert row(builder, "a2/m-small").compute_ms == pytest.approx(
        100 * routes.PRIOR_COMPUTE_FRACTION_OF_SLO)
    monkeypatch.setattr(routes, "FLEET_PRIOR", True)
    a2 = row(builder, "a2/m-small")
    assert a2.compute_ms == pytest.approx(12.0)  # a1's, not the H100's 3 ms
    assert a2.penalty_reason == ""
    # the variant nobody serves keeps the old prior
    assert row(builder, "a2/m-large").compute_ms == pytest.approx(
        100 * routes.PRIOR_COMPUTE_FRACTION_OF_SLO)
    # a1's own few samples are pulled towards a2's once a2 has many
    fleet.ingest("a2", report("m-small", 400, 10.0), 0.0)
    fleet.ingest("a1", report("m-small", 10, 30.0), 0.0)  # counters went back: a restart
    a1 = row(builder, "a1/m-small")
    assert a1.compute_ms == pytest.approx((10 * 30.0 + prior.STRENGTH * 10.0)
                                          / (10 + prior.STRENGTH))


def test_a_row_nobody_observed_is_widened_until_its_mean_has_samples(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fleet, builder = setup()
    fleet.ingest("a1", report("m-small", 4, 10.0), 0.0)
    narrow = row(builder, "a1/m-small")
    monkeypatch.setattr(routes, "PRIOR_Z", 2.0)
    wide = row(builder, "a1/m-small")
    factor = prior.widened(4.0, latency.UNMEASURED_TAIL_FACTOR, 2.0)
    assert wide.latency_p95_ms == pytest.approx(40.0 + (narrow.latency_p95_ms - 40.0) * factor)
    fleet.ingest("a1", report("m-small", 10_000, 10.0), 0.0)  # a restart with many more
    assert row(builder, "a1/m-small").latency_p95_ms < wide.latency_p95_ms
    # an edge's observation replaces the model, unwidened
    fleet.observe("east", "a1/m-small", samples=50, p95_ms=70.0, now=0.0)
    assert row(builder, "a1/m-small").latency_p95_ms == 70.0


def test_the_mix_queue_uses_every_variant_s_service_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fleet, builder = setup()
    both = {"m-small": counters(100, 2.0), "m-large": counters(100, 200.0)}
    fleet.ingest("a1", TelemetrySnapshot(True, True, variants=both, sent_ms=1000), 0.0)
    more = {"m-small": counters(200, 2.0), "m-large": counters(101, 200.0)}
    fleet.ingest("a1", TelemetrySnapshot(True, True, variants=more, sent_ms=2000), 1.0)
    state = fleet.backends["a1"]
    # 100 small calls of 2 ms and 1 large of 200 ms in the second: 400 ms busy over 101
    assert routes.mix_ms(state) == pytest.approx(1000 * 0.4 / 101)
    own = row(builder, "a1/m-small").queue_ms
    monkeypatch.setattr(routes, "MIX_QUEUE", True)
    mixed = row(builder, "a1/m-small").queue_ms
    assert mixed == pytest.approx(latency.queue_ms(routes.mix_ms(state), state.utilisation, 2))
    assert mixed > own
