"""services.xds.plan: the routes one region's calls take, classed by what placement learned.

Calls are learned by (model, whole-ms SLO); a route's class is the sum of the SLOs its range
matches, compiled at the tightest one still called, and a range is cut where a called SLO's
learned margins give another order."""

from __future__ import annotations

from placement.edge_learning import EdgeLearning, Learned
from placement.registry import build_profile
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
