"""Each aggregate's retry budget (issue 12): Envoy counts a route's retries against the
aggregate cluster its call was routed through, whose requests it never counts (they are its
children's), so the budget's ``min_retry_concurrency`` is the whole budget; placement sizes
it from the calls its plan puts through the aggregate (``clusters.retry_concurrency``)."""

from __future__ import annotations

from placement.edge_learning import Learned
from placement.registry import build_profile
from placement.splits import RATE_HEADROOM
from services.xds.clusters import retry_concurrency
from services.xds.resources import (
    CompileCache,
    EnvoySettings,
    compile_region,
    model_cluster_name,
    retry_budgets,
)
from services.xds.routes import rotation_cluster_name
from tests.xds_tables import TABLE

PROFILE = build_profile("cheapest")
S = EnvoySettings()


def _budget(rc: object, name: str) -> tuple[float, int]:
    t = rc.clusters[name].message.circuit_breakers.thresholds[0]  # type: ignore[attr-defined]
    return t.retry_budget.budget_percent.value, t.retry_budget.min_retry_concurrency.value


def test_retry_concurrency_covers_the_calls_in_flight_and_the_ratio_over_a_floor() -> None:
    assert retry_concurrency(0.0, 20.0, 10) == 10
    assert retry_concurrency(8.0, 20.0, 10) == 10  # 9.6 -> the floor
    assert retry_concurrency(9.0, 20.0, 10) == 16  # 10.8 -> 11 -> the next power of two
    assert retry_concurrency(100.0, 20.0, 10) == 128
    assert retry_concurrency(100.0, 50.0, 10) == 256  # 150 with a 50 % ratio
    for x in (10.5, 37.0, 300.0, 2500.0):  # every call in flight and the ratio of them
        assert retry_concurrency(x, 20.0, 10) >= x * 1.2
        assert retry_concurrency(x, 20.0, 10) < x * 1.2 * 2 + 1  # bounded: under twice that


def test_an_aggregate_nothing_is_planned_through_holds_the_floor() -> None:
    rc = compile_region("r-east", [TABLE], PROFILE, S)
    assert rc.models["summarize"].inflight == {}
    for name in (model_cluster_name("summarize"), model_cluster_name("summarize", 0)):
        assert _budget(rc, name) == (S.retry_budget_percent, S.retry_min_concurrency)


def test_each_aggregate_of_a_busy_route_is_sized_by_its_share_of_the_calls() -> None:
    """60 calls/s at the default SLO: split over two rotations; each rotation's aggregate
    gets min_retry_concurrency from its share of the planned rate times its first row's
    p95, the plain order's aggregate (no calls routed to it) the floor."""
    rc = compile_region("r-east", [TABLE], PROFILE, S,
                        Learned(rates={("summarize", None): 60.0}))
    planned = rc.models["summarize"].inflight[None]
    rots = rc.models["summarize"].rotations[None]
    assert set(planned) == {o[0] for _, o in rots} == {"small/s", "big/s"}
    p95 = {c.deployment_id: c.latency_p95_ms for c in TABLE.candidates}
    for w, o in rots:
        assert planned[o[0]] == 60.0 * RATE_HEADROOM * w * p95[o[0]] / 1000
        want = retry_concurrency(planned[o[0]], S.retry_budget_percent,
                                 S.retry_min_concurrency)
        name = rotation_cluster_name("summarize", None, o[0])
        assert _budget(rc, name) == (S.retry_budget_percent, want)
    assert _budget(rc, model_cluster_name("summarize"))[1] == S.retry_min_concurrency


def test_a_high_rate_raises_the_budget_past_the_floor_and_a_retired_aggregate_keeps_it() -> None:
    cache = CompileCache(retire_compiles=2)
    busy = Learned(rates={("summarize", None): 2000.0})
    rc = compile_region("r-east", [TABLE], PROFILE, S, busy, cache)
    budgets = retry_budgets(rc.models, S)
    raised = {n: b for n, b in budgets.items() if b > S.retry_min_concurrency}
    assert raised, budgets
    for name, b in raised.items():
        assert _budget(rc, name)[1] == b
    # the rate is gone: the routes name the plain orders again; the rotations' aggregates
    # stay a few compiles for calls already routed through them, with the budget they had
    quiet = compile_region("r-east", [TABLE], PROFILE, S, Learned(), cache)
    for name, b in raised.items():
        assert _budget(quiet, name)[1] == b
    assert _budget(quiet, model_cluster_name("summarize"))[1] == S.retry_min_concurrency
