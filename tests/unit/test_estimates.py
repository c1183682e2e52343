"""Latency, cost and hardware estimates in route tables (placement.routes / fleet / hardware)."""

from __future__ import annotations

import pytest

from placement import latency
from placement.catalog import Catalog
from placement.fleet import FleetState, TelemetrySnapshot, VariantStats
from placement.hardware import GpuState, assess
from placement.model import Availability, Backend, LogicalModel, Variant
from placement.prices import PriceCatalog, PriceEntry
from placement.routes import RouteBuilder, TableSettings

V = Variant("m-small", "m", 0.7)
W = Variant("m-large", "m", 0.9)


def setup(price: float | None = 3.6) -> tuple[FleetState, RouteBuilder]:
    catalog = Catalog.build({"east": "aws", "west": "aws"}, [LogicalModel("m", 100, (V,))],
                            [("east", "west", 40.0)])
    prices = PriceCatalog([] if price is None else
                          [PriceEntry("gpu", "aws", "*", "on-demand", price)])
    fleet = FleetState()
    fleet.register(Backend("b1", "h:1", "aws", "west", "gpu", 1, "on-demand", (V,), 2))
    return fleet, RouteBuilder(catalog, prices, fleet, TableSettings(observed_min_samples=5))


def report(count: int, compute_ms: float, queue_ms: float = 0.0, ready: bool = True,
           gpus: tuple[GpuState, ...] = ()) -> TelemetrySnapshot:
    return TelemetrySnapshot(ready=ready, simulated=True, gpus=gpus, variants={
        "m-small": VariantStats(count, count, 0, int(queue_ms * 1e6 * count),
                                int(compute_ms * 1e6 * count))})


def test_estimates_follow_the_documented_formulas() -> None:
    fleet, builder = setup()
    fleet.ingest("b1", report(100, 10.0), now=0.0)
    fleet.ingest("b1", report(200, 10.0), now=1.0)  # 100 calls × 10 ms in 1 s: busy 1.0
    (c,) = builder.build("m", "east", now=1.0)
    assert c.compute_ms == pytest.approx(10.0)
    assert c.rtt_ms == 40.0
    util = fleet.backends["b1"].utilisation
    assert c.queue_ms == pytest.approx(latency.queue_ms(10.0, util, 2))
    assert c.latency_p95_ms == pytest.approx(40.0 + c.queue_ms
                                             + 10.0 * latency.UNMEASURED_TAIL_FACTOR)
    # $3.60/h = $0.001/s; 10 ms of compute per request = $0.00001.
    assert c.cost_usd == pytest.approx(1e-5)
    assert c.spare_capacity == pytest.approx(2 * 100 - fleet.backends["b1"].loads["m-small"].rps)
    assert not c.dropped_reason and "no measurements" not in c.penalty_reason


def test_counter_reset_after_triton_restart_uses_totals() -> None:
    fleet, builder = setup()
    fleet.ingest("b1", report(1000, 10.0), now=0.0)
    fleet.ingest("b1", report(10, 30.0), now=1.0)  # counters went backwards: restarted
    assert builder.build("m", "east", 1.0)[0].compute_ms == pytest.approx(30.0)


def test_prior_is_flagged_before_any_measurement() -> None:
    _, builder = setup()
    (c,) = builder.build("m", "east", 0.0)
    assert "no measurements" in c.penalty_reason and c.compute_ms == 25.0


@pytest.mark.parametrize(("gpu", "expect"), [
    (GpuState(0, lost=True), "lost"),
    (GpuState(0, ecc_uncorrected=2), "ECC"),
    (GpuState(0, xid_events=(79,)), "XID 79"),
])
def test_bad_gpu_removes_the_deployment(gpu: GpuState, expect: str) -> None:
    fleet, builder = setup()
    fleet.ingest("b1", report(10, 10.0, gpus=(gpu,)), 0.0)
    assert expect in builder.build("m", "east", 0.0)[0].dropped_reason


def test_throttling_penalises_compute_by_clock_ratio() -> None:
    fleet, builder = setup()
    hot = GpuState(0, sm_clock_mhz=700, sm_clock_max_mhz=2100, throttle_reasons=0x40)
    fleet.ingest("b1", report(10, 10.0, gpus=(hot,)), 0.0)
    (c,) = builder.build("m", "east", 0.0)
    assert c.compute_ms == pytest.approx(30.0) and "throttling" in c.penalty_reason
    assert not c.dropped_reason


def test_absent_readings_are_not_faults() -> None:
    assert assess([GpuState(0)]).removed == "" and assess([GpuState(0)]).penalty == 1.0


def test_drain_missing_price_and_not_ready_drop_with_reasons() -> None:
    fleet, builder = setup(price=None)
    assert "no price" in builder.build("m", "east", 0.0)[0].dropped_reason
    fleet, builder = setup()
    fleet.ingest("b1", report(10, 10.0, ready=False), 0.0)
    assert "not ready" in builder.build("m", "east", 0.0)[0].dropped_reason
    fleet.set_availability("region", "west", Availability.DRAINED)
    assert "drained" in builder.build("m", "east", 0.0)[0].dropped_reason


def test_observed_p95_replaces_the_model_after_enough_samples() -> None:
    fleet, builder = setup()
    fleet.ingest("b1", report(10, 10.0), 0.0)
    fleet.observe("east", "b1/m-small", samples=4, p95_ms=99.0, now=0.0)
    assert not builder.build("m", "east", 0.0)[0].observed
    fleet.observe("east", "b1/m-small", samples=5, p95_ms=99.0, now=0.0)
    (c,) = builder.build("m", "east", 0.0)
    assert c.observed and c.latency_p95_ms == 99.0


def test_observed_rtt_corrects_the_matrix() -> None:
    fleet, builder = setup()
    fleet.observe_rtt("east", "west", 60.0)
    assert builder.build("m", "east", 0.0)[0].rtt_ms == 60.0


def test_only_telemetry_that_can_change_a_route_marks_the_backend_dirty() -> None:
    fleet, _ = setup()
    for t in range(15):  # steady load until the moving averages settle
        fleet.ingest("b1", report(100 * (t + 1), 10.0), now=float(t))
    fleet.take_dirty()
    fleet.ingest("b1", report(1600, 10.0), now=15.0)  # same load, same compute: nothing new
    assert fleet.take_dirty() == (False, set())
    fleet.ingest("b1", report(1700, 20.0), now=16.0)  # compute doubled
    assert fleet.take_dirty() == (False, {"b1"})
    fleet.ingest("b1", report(1800, 20.0, gpus=(GpuState(0, lost=True),)), now=17.0)
    assert fleet.take_dirty() == (False, {"b1"})


def test_slot_shares_follow_the_edges_call_rates_and_leave_room_for_a_newcomer() -> None:
    fleet, builder = setup()  # b1 has 2 slots
    dep = "b1/m-small"
    assert fleet.slot_share("east", dep, 0.0) == 1.0  # no edge known: whole for anyone
    # Cold start: the table splits it among the catalog's edge regions (east, west).
    assert builder.build("m", "east", 0.0)[0].edge_slots == 1.0
    fleet.observe_use("east", "e1", dep, 30.0, now=0.0)
    fleet.observe_use("west", "w1", dep, 10.0, now=0.0)
    a = max(0.5, 0.05 * 40)  # the probe allowance
    east, west = fleet.slot_share("east", dep, 0.0), fleet.slot_share("west", dep, 0.0)
    newcomer = fleet.slot_share("north", dep, 0.0)
    assert east == pytest.approx((30 + a) / (40 + 3 * a))
    assert west == pytest.approx((10 + a) / (40 + 3 * a))
    assert east > west > newcomer > 0
    assert east + west + newcomer == pytest.approx(1.0)  # never more slots than exist
    (c,) = builder.build("m", "east", 0.0)
    assert c.concurrency == 2 and c.edge_slots == pytest.approx(2 * east, rel=0.05)
    # Reports expire: an edge that stopped reporting gives its share back.
    fleet.observe_use("east", "e1", dep, 30.0, now=100.0)
    assert fleet.slot_share("east", dep, 100.0) == pytest.approx((30 + 1.5) / (30 + 3.0))


def test_edges_of_one_region_split_its_share_and_only_real_changes_mark_dirty() -> None:
    fleet, _ = setup()
    dep = "b1/m-small"
    fleet.take_dirty()
    fleet.observe_use("east", "e1", dep, 20.0, now=0.0)
    # a new edge changes every backend's split (the allowance of the edges not using it)
    assert fleet.take_dirty() == (True, set())
    fleet.observe_use("east", "e1", dep, 20.5, now=1.0)  # within the 10 % step: no rebuild
    assert fleet.take_dirty() == (False, set())
    fleet.observe_use("east", "e1", dep, 40.0, now=1.0)  # a real change: this backend only
    assert fleet.take_dirty() == (False, {"b1"})
    fleet.observe_use("east", "e1", dep, 20.5, now=1.0)
    fleet.take_dirty()
    fleet.observe_use("east", "e2", dep, 0.0, now=1.0)
    a = 0.05 * 20.5
    assert fleet.slot_share("east", dep, 1.0) == pytest.approx((20.5 / 2 + a) / (20.5 + 2 * a))


def test_newcomers_arriving_together_split_one_allowance_and_never_oversubscribe() -> None:
    fleet, _ = setup()
    dep, other = "b1/m-small", "b9/m-small"
    # Five edges are known (they report on another backend); one uses ``dep``.
    for i in range(5):
        fleet.observe_use(f"r{i}", f"e{i}", other, 1.0, now=0.0)
    assert fleet.slot_share("r0", dep, 0.0) == pytest.approx(1 / 5)  # nobody uses it yet
    fleet.observe_use("r0", "e0", dep, 10.0, now=0.0)
    a = 0.5
    mine = fleet.slot_share("r0", dep, 0.0)
    newcomers = [fleet.slot_share(f"r{i}", dep, 0.0) for i in range(1, 5)]
    assert mine == pytest.approx((10 + a) / (10 + 2 * a))
    assert newcomers == [pytest.approx(a / 4 / (10 + 2 * a))] * 4
    assert mine + sum(newcomers) == pytest.approx(1.0)


def test_the_slots_belong_to_the_backend_and_every_variant_row_carries_its_share() -> None:
    # Two variants queue on one backend's servers: the edge's share is of the backend, the
    # same on both rows, and it counts its calls on both against it (CallContext). A share
    # split again per variant gave a rarely sent variant a sliver even on an idle backend.
    catalog = Catalog.build({"east": "aws", "west": "aws"},
                            [LogicalModel("m", 100, (V, W))], [("east", "west", 40.0)])
    fleet = FleetState()
    fleet.register(Backend("b1", "h:1", "aws", "west", "gpu", 1, "on-demand", (V, W), 4))
    builder = RouteBuilder(catalog, PriceCatalog([PriceEntry("gpu", "aws", "*", "on-demand",
                                                             3.6)]), fleet)
    cold = {c.variant: c.edge_slots for c in builder.build("m", "east", 0.0)}
    assert cold == {"m-small": 2.0, "m-large": 2.0}  # 4 slots / 2 edges
    fleet.observe_use("east", "e1", "b1/m-small", 9.0, now=0.0)
    fleet.observe_use("east", "e1", "b1/m-large", 1.0, now=0.0)
    fleet.observe_use("west", "w1", "b1/m-small", 10.0, now=0.0)
    a = 0.05 * 20 if 0.05 * 20 > 0.5 else 0.5
    small = fleet.slot_share("east", "b1/m-small", 0.0)
    large = fleet.slot_share("east", "b1/m-large", 0.0)
    assert small == large == pytest.approx((10 + a) / (20 + 3 * a))  # east's backend share
    west = fleet.slot_share("west", "b1/m-large", 0.0)
    newcomer = fleet.slot_share("north", "b1/m-small", 0.0)
    assert small + west + newcomer == pytest.approx(1.0)


def test_when_nobody_sends_it_calls_its_former_users_split_it_evenly() -> None:
    # Back from an outage: every edge that used it reports 0 calls/s; they must not each
    # see the whole deployment and rush back together.
    fleet, _ = setup()
    dep = "b1/m-small"
    for edge in ("e1", "e2", "e3"):
        fleet.observe_use("east", edge, dep, 0.0, now=0.0)
    assert fleet.slot_share("east", dep, 0.0) == pytest.approx(1 / 4)


def test_an_edge_past_its_slots_expects_to_queue() -> None:
    from placement.model import CallContext, Hints
    fleet, builder = setup()
    fleet.ingest("b1", report(10, 10.0), 0.0)
    fleet.observe_use("west", "w1", "b1/m-small", 50.0, now=0.0)
    (c,) = builder.build("m", "east", 0.0)
    assert 0 < c.edge_slots < 0.2  # a newcomer's share of 2 slots
    base = CallContext(Hints(slo_ms=100)).latency_ms(c)
    ctx = CallContext(Hints(slo_ms=100), inflight={c.deployment_id: 1})
    k = c.edge_slots
    assert ctx.latency_ms(c) == pytest.approx(base + (1 - k + 1) * 2 * c.compute_ms / k)


def test_a_fractional_share_is_rounded_at_random_with_the_calls_draw() -> None:
    # An edge with 0.3 of a slot may keep one call in flight 30 % of the time: with a draw
    # below 0.3 its first call expects no queue, above it the call expects to wait. Before,
    # the first call was always free, so every edge with a sliver took a whole slot (herd).
    from placement.model import CallContext, Hints
    fleet, builder = setup()
    fleet.ingest("b1", report(10, 10.0), 0.0)
    fleet.observe_use("west", "w1", "b1/m-small", 50.0, now=0.0)
    (c,) = builder.build("m", "east", 0.0)
    k = c.slots
    assert 0 < k < 1
    free = CallContext(Hints(slo_ms=100), draw=k / 2).latency_ms(c)
    queued = CallContext(Hints(slo_ms=100), draw=(1 + k) / 2).latency_ms(c)
    assert free == c.latency_p95_ms
    assert queued == pytest.approx(c.latency_p95_ms + (1 - k) * 2 * c.compute_ms / k)
    draws = [i / 1000 for i in range(1000)]
    share_free = sum(CallContext(Hints(slo_ms=100), draw=d).latency_ms(c) == free
                     for d in draws) / len(draws)
    assert share_free == pytest.approx(k, abs=0.002)


def test_edge_slots_survive_the_wire() -> None:
    from services.convert import candidate_from_pb, candidate_to_pb
    fleet, builder = setup()
    fleet.observe_use("west", "w1", "b1/m-small", 50.0, now=0.0)
    (c,) = builder.build("m", "east", 0.0)
    back = candidate_from_pb(candidate_to_pb(c))
    assert back.edge_slots == pytest.approx(c.edge_slots, abs=0.01) and back.concurrency == 2
