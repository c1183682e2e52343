"""placement.splits and services.xds.order.weighted: the per-call spill as pushed weights."""

from __future__ import annotations

import math

import pytest

from placement import queueing
from placement.model import Candidate
from placement.registry import build_profile
from placement.splits import (
    MAX_UTILISATION,
    RATE_HEADROOM,
    UNKNOWN,
    Demand,
    max_utilisation,
    split,
)
from services.xds.order import ClassDemand, rotations, weighted

PROFILE = build_profile("cheapest")


def cand(dep: str, cost: float, latency: float = 100.0, compute: float = 50.0,
         concurrency: int = 4, slots: float = 0.0, quality: float = 0.8) -> Candidate:
    backend, variant = dep.split("/", 1)
    return Candidate(
        deployment_id=dep, backend_id=backend, endpoint=f"{backend}.test:8001",
        variant=variant, region="r", cloud="aws", accelerator="nvidia-t4", quality=quality,
        latency_p95_ms=latency, rtt_ms=5.0, queue_ms=0.0, compute_ms=compute, cost_usd=cost,
        spare_capacity=100.0, concurrency=concurrency, edge_slots=slots, observed=True)


def test_max_utilisation_is_the_highest_that_fits_the_slack() -> None:
    rho = max_utilisation(30.0, 50.0, 4)
    assert 0 < rho < MAX_UTILISATION
    assert queueing.wait_ms(50.0, 4, rho) <= 30.0
    assert queueing.wait_ms(50.0, 4, rho + 0.01) > 30.0
    # more slack, more load; no slack, only the utilisation where nobody waits in the tail
    assert max_utilisation(200.0, 50.0, 4) > rho
    assert queueing.erlang_c(4, max_utilisation(0.0, 50.0, 4)) <= queueing.TAIL + 1e-3
    assert max_utilisation(-1.0, 50.0, 4) == 0.0
    assert max_utilisation(1e9, 50.0, 4) == MAX_UTILISATION


def test_a_class_within_the_cheapest_capacity_stays_there() -> None:
    a, b = cand("a/v", 1e-5), cand("b/v", 2e-5)
    got = split([Demand("k", 298.0, 1.0, [a, b])])
    assert got == {"k": {"a/v": 1.0}}


def test_past_the_cheapest_capacity_the_rest_spills_to_the_next() -> None:
    """4 slots of 50 ms at ρ* carry 80 ρ* calls/s; 100 calls/s (planned with the rate's
    headroom, RATE_HEADROOM x 100) spill the rest to b (32 slots: room for it all)."""
    a, b = cand("a/v", 1e-5), cand("b/v", 2e-5, concurrency=32)
    rho = max_utilisation(298.0 - 100.0, 50.0, 4)
    got = split([Demand("k", 298.0, 100.0, [a, b])])["k"]
    assert got["a/v"] == pytest.approx(80 * rho / (100 * RATE_HEADROOM))
    assert got["b/v"] == pytest.approx(1 - 80 * rho / (100 * RATE_HEADROOM))


def test_the_edge_share_not_the_backend_is_what_it_may_fill() -> None:
    a, b = cand("a/v", 1e-5, slots=1.0), cand("b/v", 2e-5)
    rho = max_utilisation(198.0, 50.0, 4)
    got = split([Demand("k", 298.0, 40.0, [a, b])])["k"]
    assert got["a/v"] == pytest.approx(20 * rho / (40 * RATE_HEADROOM))


def test_reserved_load_and_tighter_classes_come_off_first() -> None:
    a, b = cand("a/v", 1e-5), cand("b/v", 2e-5)
    c = cand("c/v", 3e-5, concurrency=32)
    loose = Demand("loose", 398.0, 60.0, [a, b, c])
    tight = Demand("tight", 148.0, 20.0, [a, b, c])
    both = split([loose, tight])
    alone = split([loose])
    # the tight class is placed first (28 ρ* of its 20 calls/s fit on a); the loose one
    # may not fill a past the tight class's utilisation cap (one FIFO): it goes to b, c
    rho_tight = max_utilisation(48.0, 50.0, 4)
    assert both["tight"] == {"a/v": 1.0} and 4 * rho_tight >= 20 * 0.05
    carried = 20 + both["loose"].get("a/v", 0.0) * 60
    assert carried * 0.05 <= 4 * rho_tight + 1e-9
    assert both["loose"].get("a/v", 0.0) < alone["loose"]["a/v"]
    # what the slow path already sends a is not planned again
    reserved = split([loose], reserved={"a": 2.0})
    assert reserved["loose"]["a/v"] < alone["loose"]["a/v"]


def test_overflow_is_spread_by_capacity_and_nothing_without_a_rate() -> None:
    a, b = cand("a/v", 1e-5, concurrency=2), cand("b/v", 2e-5, concurrency=6)
    got = split([Demand("k", 298.0, 1e6, [a, b]), Demand("idle", 298.0, 0.0, [a, b]),
                 Demand("none", 298.0, 5.0, [])])
    assert got["k"]["b/v"] == pytest.approx(0.75, abs=0.01)
    assert math.isclose(sum(got["k"].values()), 1.0)
    assert got["idle"] == {} and got["none"] == {}


def test_rotations_put_each_deployment_first_once() -> None:
    order = ("a/v", "b/v", "c/v")
    assert rotations(order, {"a/v": 1.0}) == ()
    assert rotations(order, {}) == ()
    assert rotations(order, {"a/v": 0.25, "c/v": 0.75}) == (
        (0.25, ("a/v", "b/v", "c/v")), (0.75, ("c/v", "a/v", "b/v")))
    # the whole class moved to b: still a rotation, b first
    assert rotations(order, {"b/v": 1.0}) == ((1.0, ("b/v", "a/v", "c/v")),)


def test_weighted_uses_learned_margins_and_rates() -> None:
    a, b = cand("a/v", 1e-5), cand("b/v", 2e-5, latency=60.0)
    quiet = weighted([ClassDemand("k", [a, b], 300.0)], PROFILE, 2.0)["k"]
    assert quiet.order[0] == "a/v" and quiet.rotations == ()
    assert quiet.feasible == frozenset({"a/v", "b/v"})
    # a margin learned from a's misses takes it out of the feasible set
    missed = weighted([ClassDemand("k", [a, b], 300.0, margins={"a/v": 250.0})],
                      PROFILE, 2.0)["k"]
    assert missed.order[0] == "b/v" and "a/v" not in missed.feasible
    busy = weighted([ClassDemand("k", [a, b], 300.0, rate=150.0)], PROFILE, 2.0)["k"]
    heads = {o[0]: w for w, o in busy.rotations}
    assert set(heads) == {"a/v", "b/v"} and heads["a/v"] < 1.0
    assert math.isclose(sum(heads.values()), 1.0)


def test_an_unmeasured_class_is_split_by_room_after_the_measured_ones() -> None:
    """UNKNOWN: each feasible deployment's calls/s of room for this edge (its backend once,
    at its cheapest deployment), less what the measured classes planned there."""
    a, b = cand("a/v", 1e-5, concurrency=2), cand("b/v", 2e-5, concurrency=6)
    a2 = cand("a/w", 1.5e-5, concurrency=2)  # a's other variant: the same backend's room
    got = split([Demand("new", 298.0, UNKNOWN, [a, a2, b])])["new"]
    ra = 2 * max_utilisation(198.0, 50.0, 2) * 20
    rb = 6 * max_utilisation(198.0, 50.0, 6) * 20
    assert got == pytest.approx({"a/v": ra / (ra + rb), "b/v": rb / (ra + rb)})
    # a measured class that fills a leaves the unmeasured one b alone; the measured class's
    # own split is as without the unmeasured one
    busy = Demand("busy", 298.0, 2 * max_utilisation(198.0, 50.0, 2) * 20, [a, b])
    both = split([busy, Demand("new", 298.0, UNKNOWN, [a, b])])
    assert both["new"] == pytest.approx({"b/v": 1.0})
    assert both["busy"] == split([busy])["busy"]
    # no room anywhere: by capacity, not nothing
    full = split([Demand("new", 298.0, UNKNOWN, [a, b])], reserved={"a": 10.0, "b": 10.0})
    assert full["new"] == pytest.approx({"a/v": 0.25, "b/v": 0.75})


def test_weighted_spreads_an_unmeasured_class_over_its_first_feasible_deployments() -> None:
    a, b, c = cand("a/v", 1e-5), cand("b/v", 2e-5), cand("c/v", 3e-5)
    got = weighted([ClassDemand("k", [a, b, c], 300.0, rate=UNKNOWN)], PROFILE, 2.0,
                   spread_cap=2)["k"]
    heads = {o[0]: w for w, o in got.rotations}
    assert set(heads) == {"a/v", "b/v"} and heads["a/v"] == pytest.approx(0.5)
    assert got.order == ("a/v", "b/v", "c/v")


def test_past_the_feasible_rows_the_rest_spills_to_the_fallback_fastest_idle_first() -> None:
    """A per-call edge whose feasible rows are past their share falls back to the fastest
    row with room; the split does the same with what the feasible rows cannot take: the
    fallback rows by their p95 without a queue (RTT + service), each up to the utilisation
    whose wait still fits the SLO from there, not all of it piled on the feasible row."""
    a = cand("a/v", 1e-5, compute=50.0, concurrency=1)  # the one feasible row: ~19 calls/s
    slow = cand("s/v", 2e-5, latency=400.0, compute=200.0, concurrency=8)  # 265 ms idle
    fast = cand("f/v", 3e-5, latency=350.0, compute=20.0, concurrency=8)  # 31 ms idle
    got = split([Demand("k", 298.0, 100.0, [a], {}, [slow, fast])])["k"]
    rho_a = max_utilisation(298.0 - 100.0, 50.0, 1)
    assert got["a/v"] == pytest.approx(20 * rho_a / (100 * RATE_HEADROOM))
    assert got["f/v"] == pytest.approx(1 - got["a/v"])  # room for the rest on f alone
    assert "s/v" not in got
    # without fallback rows the overflow stays on the feasible row
    assert split([Demand("k", 298.0, 100.0, [a])])["k"] == {"a/v": 1.0}


def test_a_class_with_no_feasible_row_is_split_over_its_fallback() -> None:
    """Nothing meets the SLO by the estimates (p95s inflated by queues near capacity): the
    class was sent whole to its order's first row; now it is split over the fallback rows
    by their room, and past all of it by their capacity."""
    f1 = cand("f1/v", 1e-5, latency=300.0, compute=20.0, concurrency=2)
    f2 = cand("f2/v", 2e-5, latency=320.0, compute=20.0, concurrency=2)
    got = split([Demand("k", 148.0, 300.0, [], {}, [f1, f2])])["k"]
    assert set(got) == {"f1/v", "f2/v"} and sum(got.values()) == pytest.approx(1.0)
    assert got["f1/v"] == pytest.approx(0.5)  # both full: by capacity, equal here
    light = split([Demand("k", 148.0, 10.0, [], {}, [f1, f2])])["k"]
    assert light == {"f1/v": 1.0}  # f1's room (idle p95 31 ms) takes 10 calls/s
    assert split([Demand("k", 148.0, 10.0, [], {}, [])]) == {"k": {}}


def test_weighted_passes_the_orders_rest_as_fallback_and_plans_calls_in_flight() -> None:
    """``order.weighted``: the rows after the feasible ones in the order (within the cap)
    are the split's fallback; each aggregate's planned calls in flight is its share of the
    rate (with the headroom) times the p95 of its first row."""
    a = cand("a/v", 1e-5, compute=50.0, concurrency=1, latency=100.0)
    f = cand("f/v", 3e-5, latency=350.0, compute=20.0, concurrency=8)
    got = weighted([ClassDemand("k", [a, f], 300.0, 100.0)], PROFILE, 2.0)["k"]
    assert got.feasible == frozenset({"a/v"}) and got.order == ("a/v", "f/v")
    heads = {o[0]: w for w, o in got.rotations}
    assert set(heads) == {"a/v", "f/v"}
    rate = 100.0 * RATE_HEADROOM
    assert got.inflight == pytest.approx({"a/v": rate * heads["a/v"] * 0.100,
                                          "f/v": rate * heads["f/v"] * 0.350})
    whole = weighted([ClassDemand("k", [a, f], 300.0, 1.0)], PROFILE, 2.0)["k"]
    assert whole.rotations == () and whole.inflight == pytest.approx({None: 1.25 * 0.1})
    assert weighted([ClassDemand("k", [a, f], 300.0, 0.0)], PROFILE, 2.0)["k"].inflight == {}
