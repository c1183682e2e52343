"""services.xds.plan: the routes one region's calls take, classed by what placement learned.

Calls are learned by (model, whole-ms SLO); a route's class is the sum of the SLOs its range
matches, compiled at the tightest one still called, and a range is cut where a called SLO's
learned margins give another order."""

from __future__ import annotations

import pytest

from placement import splits
from placement.edge_learning import EdgeLearning, Learned
from placement.registry import build_profile
from placement.splits import max_utilisation
from services.convert import candidate_from_pb
from services.xds.plan import Table, plan_region, route
from tests.xds_tables import TABLE

PROFILE = build_profile("cheapest")
MARGIN = 2.0
M = "summarize"
TABLES = {M: Table([candidate_from_pb(c) for c in TABLE.candidates], TABLE.default_slo_ms)}


def test_a_class_is_learned_by_its_calls_slo_so_a_moving_range_keeps_its_rate() -> None:
    """Two ranges' worth of estimates: the call's key is its own SLO either way."""
    plan = plan_region(TABLES, PROFILE, MARGIN)
    got = route(plan, M, 300)
    assert got is not None and got.key == (M, 300) and got.slo_ms == 300.0
    slower = [candidate_from_pb(c) for c in TABLE.candidates]
    slower = [type(c)(**{**{f: getattr(c, f) for f in c.__dataclass_fields__},
                         "latency_p95_ms": c.latency_p95_ms + 37}) for c in slower]
    moved = plan_region({M: Table(slower, 300)}, PROFILE, MARGIN)
    assert [k.lo for k in moved[M].classes] != [k.lo for k in plan[M].classes]
    assert route(moved, M, 300).key == (M, 300)  # type: ignore[union-attr]
    no_slo = route(plan, M, None)
    assert no_slo is not None and no_slo.key == (M, None) and no_slo.index is None


def test_rates_of_the_slos_in_a_range_add_up_and_split_it() -> None:
    """small (one 50 ms slot, 80 ms p95) takes ~3.6 calls/s at 300 ms (the utilisation whose
    M/M/1 tail wait fits the slack): 2.5 + 2.5 calls/s at two SLOs of one range split it;
    either alone does not."""
    plan = plan_region(TABLES, PROFILE, MARGIN)
    r300, r400 = route(plan, M, 300), route(plan, M, 400)
    assert r300 is not None and r400 is not None and r300.index == r400.index
    alone = plan_region(TABLES, PROFILE, MARGIN, Learned(rates={(M, 300): 2.5}))
    assert route(alone, M, 300).rotations == ()  # type: ignore[union-attr]
    both = plan_region(TABLES, PROFILE, MARGIN, Learned(rates={(M, 300): 2.5, (M, 400): 2.5}))
    got = route(both, M, 300)
    assert got is not None and {o[0] for _, o in got.rotations} == {"small/s", "big/s"}
    assert route(both, M, 400).rotations == got.rotations  # type: ignore[union-attr]


def test_a_tight_slos_misses_cut_its_range_and_leave_the_loose_slo_alone() -> None:
    margins = {(M, 300): {"small/s": 250.0}}
    rates = {(M, 300): 1.0, (M, 1000): 1.0}
    plan = plan_region(TABLES, PROFILE, MARGIN, Learned(rates=rates, margins=margins))
    tight, loose = route(plan, M, 300), route(plan, M, 1000)
    assert tight is not None and loose is not None and tight.index != loose.index
    assert tight.order[0] == "big/s" and loose.order[0] == "small/s"
    k = plan[M].classes[loose.index]  # type: ignore[index]
    assert k.lo == 1000  # the cut is at the loose SLO: calls below it take the tight order
    assert route(plan, M, 999).index == tight.index  # type: ignore[union-attr]
    # the same margins without the loose SLO called: no cut, the range takes them
    only = plan_region(TABLES, PROFILE, MARGIN,
                       Learned(rates={(M, 300): 1.0}, margins=margins))
    assert route(only, M, 1000).order[0] == "big/s"  # type: ignore[union-attr]
    assert len(only[M].classes) == len(plan[M].classes) - 1


def test_a_class_whose_rate_decayed_is_forgotten() -> None:
    e = EdgeLearning(time_constant_s=1.0)
    e.learned(0.0, {})
    for s in range(9990, 10000):  # SLOs from deadlines: a new key per whole ms
        e.call((M, s), float(s))
    assert len(e.learned(1.0, {}).rates) == 10
    assert e.learned(30.0, {}).rates == {}


def test_cold_spread_splits_every_route_by_room_until_a_rate_is_learned() -> None:
    """The what-if: with nothing learned of the region, each route's calls go to its feasible
    deployments by their room (small: one 50 ms slot; big: eight), not all to the cheapest;
    once any rate is learned, the routes nothing was learned for keep their order alone.
    Off by default: what compile_region pushes a fresh Envoy is the order."""
    assert route(plan_region(TABLES, PROFILE, MARGIN), M, 300).rotations == ()  # type: ignore[union-attr]
    cold = plan_region(TABLES, PROFILE, MARGIN, cold_spread=True)
    got = route(cold, M, 300)
    assert got is not None and got.order[0] == "small/s"
    heads = {o[0]: w for w, o in got.rotations}
    assert set(heads) == {"small/s", "big/s"} and heads["big/s"] > heads["small/s"] > 0
    assert route(cold, M, None).rotations != ()  # type: ignore[union-attr]
    warm = plan_region(TABLES, PROFILE, MARGIN, Learned(rates={(M, 1000): 0.5}),
                       cold_spread=True)
    assert route(warm, M, 300).rotations == ()  # type: ignore[union-attr]


def test_a_learned_rate_is_planned_with_headroom(monkeypatch: pytest.MonkeyPatch) -> None:
    """small (one 50 ms slot) carries cap = ρ*/0.05 calls/s at 300 ms; 0.9 cap learned fits
    it, but not with the headroom the split plans for (RATE_HEADROOM x the rate): part of
    the class goes to big. Planned on the rate alone, it all stays on small."""
    cap = max_utilisation(298.0 - 80.0, 50.0, 1) / 0.05
    rate = 0.9 * cap
    assert splits.RATE_HEADROOM * rate > cap
    got = route(plan_region(TABLES, PROFILE, MARGIN, Learned(rates={(M, 300): rate})), M, 300)
    assert got is not None and {o[0] for _, o in got.rotations} == {"small/s", "big/s"}
    heads = {o[0]: w for w, o in got.rotations}
    assert heads["small/s"] == pytest.approx(cap / (splits.RATE_HEADROOM * rate))
    monkeypatch.setattr(splits, "RATE_HEADROOM", 1.0)
    alone = route(plan_region(TABLES, PROFILE, MARGIN, Learned(rates={(M, 300): rate})), M, 300)
    assert alone is not None and alone.rotations == ()
