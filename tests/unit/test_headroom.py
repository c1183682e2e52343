"""Queueing headroom: M/M/c waits (placement.queueing), what an edge expects past its slot
share (CallContext.latency_ms), p95s measured by other edges, spare capacity per backend."""

from __future__ import annotations

import math
import random

import pytest

from placement import queueing
from placement.catalog import Catalog
from placement.fleet import FleetState, TelemetrySnapshot, VariantStats
from placement.model import Backend, CallContext, Candidate, Hints, LogicalModel, Variant
from placement.prices import PriceCatalog, PriceEntry
from placement.routes import RouteBuilder, TableSettings

V = Variant("m-small", "m", 0.7)
W = Variant("m-large", "m", 0.9)


def test_erlang_c_matches_the_closed_forms() -> None:
    assert queueing.erlang_c(1, 0.6) == pytest.approx(0.6)  # M/M/1: P(wait) = ρ
    assert queueing.erlang_c(2, 0.5) == pytest.approx(1 / 3)  # 2ρ² / (1 + ρ)
    assert queueing.erlang_c(4, 0.0) == 0.0 and queueing.erlang_c(4, 1.0) == 1.0
    # More servers at the same utilisation: fewer calls wait.
    assert queueing.erlang_c(16, 0.7) < queueing.erlang_c(4, 0.7) < queueing.erlang_c(1, 0.7)


@pytest.mark.parametrize("tail", [0.05, queueing.TAIL])
def test_the_wait_is_zero_while_few_calls_wait_and_matches_a_simulated_queue(
        tail: float) -> None:
    assert queueing.wait_ms(20.0, 16, 0.4, tail) == 0.0  # C(16, 0.4) ≈ 0.2 %
    assert queueing.wait_ms(20.0, 1, 0.5, tail) == pytest.approx(
        math.log(0.5 / tail) * 20.0 / 0.5)
    assert queueing.wait_ms(20.0, 2, 1.0, tail) == math.inf
    # Against a simulated M/M/2 FIFO queue at ρ = 0.8.
    rng = random.Random(7)
    servers, rho, service = 2, 0.8, 10.0
    free = [0.0] * servers
    t, waits = 0.0, []
    for _ in range(200_000):
        t += rng.expovariate(servers * rho / service)
        i = min(range(servers), key=free.__getitem__)
        start = max(t, free[i])
        waits.append(start - t)
        free[i] = start + rng.expovariate(1 / service)
    waits.sort()
    simulated = waits[int((1 - tail) * len(waits))]
    assert queueing.wait_ms(service, servers, rho, tail) == pytest.approx(simulated, rel=0.1)


def candidate(slots: float, spare: float, concurrency: int = 2, observed: bool = True,
              variant: str = "m-small") -> Candidate:
    # compute 10 ms on 2 servers: capacity 200 calls/s; utilisation = 1 - spare / 200.
    return Candidate(f"b1/{variant}", "b1", "h:1", variant, "west", "aws", "gpu", 0.7,
                     latency_p95_ms=60.0, rtt_ms=40.0, queue_ms=0.0, compute_ms=10.0,
                     cost_usd=1e-5, spare_capacity=spare, observed=observed,
                     concurrency=concurrency, edge_slots=slots)


def test_a_fraction_of_a_slot_is_rounded_with_the_draw_measured_or_not() -> None:
    # An edge with 0.3 of a slot keeps a call in flight there 30 % of the time, even on a
    # measured, idle-looking backend: the table's utilisation is as old as the table, and
    # every edge reading it would borrow at once (the M/M/c-priced borrowed slot did: the
    # queueing misses on default and tight-three-variant).
    for observed in (True, False):
        c = candidate(0.3, spare=195.0, observed=observed)
        assert CallContext(Hints(slo_ms=100), draw=0.1).latency_ms(c) == 60.0
        past = CallContext(Hints(slo_ms=100), draw=0.5).latency_ms(c)
        assert past == pytest.approx(60.0 + 0.7 * 2 * 10.0 / 0.3)
    own = CallContext(Hints(slo_ms=100), draw=0.5, observed_p95_ms={"b1/m-small": 55.0})
    assert own.latency_ms(candidate(0.3, spare=195.0)) == pytest.approx(
        55.0 + 0.7 * 2 * 10.0 / 0.3)


def test_past_its_share_an_edge_plans_for_every_slot_busy_ahead_of_its_excess() -> None:
    # Its calls on the backend's other variant count: they queue on the same servers.
    c = candidate(1.5, spare=40.0)
    assert CallContext(Hints(slo_ms=100), inflight={"b1/m-large": 0}).latency_ms(c) == 60.0
    one = CallContext(Hints(slo_ms=100), draw=0.9, inflight={"b1/m-large": 1})
    assert one.latency_ms(c) == pytest.approx(60.0 + 0.5 * 2 * 10.0 / 1.5)
    assert CallContext(Hints(slo_ms=100), draw=0.1, inflight={"b1/m-large": 1}).latency_ms(
        c) == 60.0
    two = CallContext(Hints(slo_ms=100), draw=0.0, inflight={"b1/m-small": 1, "b1/m-large": 1})
    assert two.latency_ms(c) == pytest.approx(60.0 + 1.5 * 2 * 10.0 / 1.5)
    # Whole slots of its own share are free whatever the variant.
    assert CallContext(Hints(slo_ms=100), inflight={"b1/m-large": 1}).latency_ms(
        candidate(2.5, spare=40.0)) == 60.0


def builder(variants: tuple[Variant, ...] = (V,)) -> tuple[FleetState, RouteBuilder]:
    catalog = Catalog.build({"east": "aws", "west": "aws"},
                            [LogicalModel("m", 100, variants)], [("east", "west", 40.0)])
    fleet = FleetState()
    fleet.register(Backend("b1", "h:1", "aws", "west", "gpu", 1, "on-demand", variants, 2))
    prices = PriceCatalog([PriceEntry("gpu", "aws", "*", "on-demand", 3.6)])
    return fleet, RouteBuilder(catalog, prices, fleet, TableSettings(observed_min_samples=5))


def snapshot(counts: dict[str, int]) -> TelemetrySnapshot:
    return TelemetrySnapshot(ready=True, simulated=True, variants={
        v: VariantStats(n, n, 0, 0, int(10e6 * n)) for v, n in counts.items()})


def test_an_edge_without_samples_reads_the_p95_other_edges_measured() -> None:
    fleet, routes = builder()
    fleet.ingest("b1", snapshot({"m-small": 10}), 0.0)
    fleet.observe("west", "b1/m-small", samples=20, p95_ms=31.0, now=0.0)  # RTT 1 ms there
    fleet.observe("north", "b1/m-small", samples=4, p95_ms=500.0, now=0.0)  # too few samples
    (c,) = routes.build("m", "east", 0.0)
    assert c.observed and c.latency_p95_ms == pytest.approx(40.0 + 30.0)
    fleet.observe("east", "b1/m-small", samples=5, p95_ms=99.0, now=0.0)  # its own wins
    assert routes.build("m", "east", 0.0)[0].latency_p95_ms == 99.0
    assert not routes.build("m", "east", 61.0)[0].observed  # reports expire


def test_spare_capacity_counts_every_variant_on_the_backend() -> None:
    fleet, routes = builder((V, W))
    fleet.ingest("b1", snapshot({"m-small": 10, "m-large": 0}), 0.0)
    fleet.ingest("b1", snapshot({"m-small": 10, "m-large": 150}), 1.0)  # 1.5 of 2 busy
    small = {c.variant: c for c in routes.build("m", "east", 1.0)}["m-small"]
    assert small.spare_capacity == pytest.approx(200 * (1 - 0.75))


def test_observations_loaded_directly_are_found_by_deployment() -> None:
    # A warm restart fills FleetState.observed directly (services/placement/persist.py).
    from placement.fleet import ObservedLatency
    fleet, routes = builder()
    fleet.ingest("b1", snapshot({"m-small": 10}), 0.0)
    fleet.observed[("west", "b1/m-small")] = ObservedLatency(20, 31.0, 0.0)
    assert fleet.observed_elsewhere("b1/m-small", 5, 0.0) == [("west", 20, 31.0)]
    fleet.observe("north", "b1/m-small", samples=6, p95_ms=41.0, now=1.0)
    assert sorted(fleet.observed_elsewhere("b1/m-small", 5, 1.0)) == [
        ("north", 6, 41.0), ("west", 20, 31.0)]
    assert routes.build("m", "east", 1.0)[0].observed
