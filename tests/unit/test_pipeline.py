"""Properties of the per-call choice (placement.pipeline with the built-in profiles)."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placement import meet
from placement.errors import (
    ConfigError,
    NoHealthyDeployment,
    NothingFeasible,
    PolicyUnsatisfiable,
)
from placement.model import Availability, CallContext, Candidate, Hints
from placement.registry import build_filters, build_profile, register_filter

REGIONS = ["east", "west", "central"]


def cand(i: int, cost: float, lat: float, quality: float = 0.8, region: str = "east",
         spare: float = 10.0, dropped: str = "",
         availability: Availability = Availability.ACTIVE) -> Candidate:
    return Candidate(deployment_id=f"b{i}/v", backend_id=f"b{i}", endpoint=f"h:{i}",
                     variant="v", region=region, cloud="c", accelerator="a", quality=quality,
                     latency_p95_ms=lat, rtt_ms=0, queue_ms=0, compute_ms=lat, cost_usd=cost,
                     spare_capacity=spare, dropped_reason=dropped, availability=availability)


candidates = st.lists(
    st.builds(lambda i, cost, lat, q, r, spare, dropped: (cost, lat, q, r, spare, dropped),
              st.integers(), st.floats(1e-7, 1e-2), st.floats(0.5, 500), st.floats(0, 1),
              st.sampled_from(REGIONS), st.floats(-5, 50), st.booleans()),
    min_size=1, max_size=12,
).map(lambda rows: [cand(i, *r[:5], dropped="down" if r[5] else "")
                    for i, r in enumerate(rows)])

hints = st.builds(Hints, slo_ms=st.floats(1, 600), min_quality=st.floats(0, 1),
                  max_cost_usd=st.one_of(st.just(math.inf), st.just(0.0), st.floats(1e-7, 1e-2)),
                  allowed_regions=st.sets(st.sampled_from(REGIONS)).map(frozenset))


def feasible(c: Candidate, h: Hints, margin: float = 0.0) -> bool:
    return (not c.dropped_reason and c.quality >= h.min_quality
            and (not h.allowed_regions or c.region in h.allowed_regions)
            and c.cost_usd <= h.max_cost_usd
            and c.latency_p95_ms <= h.slo_ms - margin and c.spare_capacity > 0)


def hard_ok(c: Candidate, h: Hints) -> bool:
    return (not c.dropped_reason and c.quality >= h.min_quality
            and (not h.allowed_regions or c.region in h.allowed_regions)
            and c.cost_usd <= h.max_cost_usd)


def policy_ok(c: Candidate, h: Hints) -> bool:
    """The call's own policy, whatever the deployment's health."""
    return hard_ok(replace(c, dropped_reason=""), h)


@settings(max_examples=400, deadline=None)
@given(candidates, hints, st.integers(0, 2**32))
def test_pick_is_feasible_cheapest_within_band_and_never_violates_hard_limits(
        cands: list[Candidate], h: Hints, seed: int) -> None:
    profile = build_profile("cheapest", band=0.05)
    ctx = CallContext(h, slo_margin_ms=2.0)
    feas = [c for c in cands if feasible(c, h, 2.0)]
    try:
        d = profile.choose(cands, ctx, random.Random(seed))
    except NoHealthyDeployment:
        assert not any(hard_ok(c, h) for c in cands)
        assert any(policy_ok(c, h) for c in cands)  # else PolicyUnsatisfiable
        return
    except PolicyUnsatisfiable:
        assert not any(policy_ok(c, h) for c in cands)
        return
    # Quality floor, residency, cost cap and health hold even in the fallback.
    assert hard_ok(d.candidate, h)
    if feas:
        # Never infeasible while a feasible candidate exists…
        assert d.slo_met and feasible(d.candidate, h, 2.0)
        # …and never costlier than a feasible alternative outside the spread band.
        cheapest = min(c.cost_usd for c in feas)
        assert d.candidate.cost_usd <= cheapest / (1 - 0.05) + 1e-18
    else:
        assert not d.slo_met
        healthy = [c for c in cands if hard_ok(c, h)]
        # the fallback (placement.meet): a row within EPS of the best chance of meeting the
        # SLO; with no chance anywhere, the fastest of the rows that could meet it idle
        chances = {c.deployment_id: meet.chance(c, ctx) for c in healthy}
        best = max(chances.values())
        if best > 0:
            assert 0 < chances[d.candidate.deployment_id] >= best - meet.EPS - 1e-12
        else:
            able = [c for c in healthy if meet.chance(c, ctx, idle=True) >= 0.5] or healthy
            assert d.candidate.latency_p95_ms == min(c.latency_p95_ms for c in able)


@settings(max_examples=200, deadline=None)
@given(candidates, hints)
def test_fail_fast_raises_with_what_removed_what(cands: list[Candidate], h: Hints) -> None:
    profile = build_profile("cheapest")
    fail_fast = Hints(h.slo_ms, h.min_quality, h.max_cost_usd, h.allowed_regions, True)
    ctx = CallContext(fail_fast)
    if any(feasible(c, h) for c in cands) or not any(hard_ok(c, h) for c in cands):
        return
    with pytest.raises(NothingFeasible) as err:
        profile.choose(cands, ctx, random.Random(0))
    assert set(err.value.removed) == {c.deployment_id for c in cands}
    assert err.value.best_latency_ms is not None and err.value.retry_after_s


def test_fastest_profile_picks_lowest_latency_feasible() -> None:
    cands = [cand(0, 1e-6, 50), cand(1, 1e-3, 5), cand(2, 1e-4, 20)]
    d = build_profile("fastest").choose(cands, CallContext(Hints(100)), random.Random(1))
    assert d.candidate.deployment_id == "b1/v"


def test_spread_uses_every_candidate_in_the_band_weighted_by_capacity() -> None:
    cands = [cand(0, 1.00e-6, 10, spare=100), cand(1, 1.02e-6, 10, spare=100),
             cand(2, 2e-6, 10, spare=1000)]
    profile = build_profile("cheapest", band=0.05)
    rng = random.Random(3)
    picks = [profile.choose(cands, CallContext(Hints(100)), rng).candidate.deployment_id
             for _ in range(400)]
    assert set(picks) == {"b0/v", "b1/v"}
    assert 0.3 < picks.count("b0/v") / 400 < 0.7


def test_edge_observation_overrides_the_table_estimate() -> None:
    cheap_but_slow_in_practice = cand(0, 1e-6, 10)
    fast = cand(1, 1e-5, 10)
    ctx = CallContext(Hints(30), observed_p95_ms={"b0/v": 80.0})
    d = build_profile("cheapest").choose([cheap_but_slow_in_practice, fast], ctx,
                                         random.Random(0))
    assert d.candidate.deployment_id == "b1/v"


def test_cordoned_backend_only_when_nothing_else() -> None:
    cordoned = cand(0, 1e-7, 5, availability=Availability.CORDONED)
    other = cand(1, 1e-5, 5)
    p = build_profile("cheapest")
    assert p.choose([cordoned, other], CallContext(Hints(50)),
                    random.Random(0)).candidate.deployment_id == "b1/v"
    d = p.choose([cordoned], CallContext(Hints(50)), random.Random(0))
    assert d.candidate.deployment_id == "b0/v" and not d.slo_met


def test_explain_names_the_filter_that_removed_each_candidate() -> None:
    cands = [cand(0, 1e-6, 500), cand(1, 1e-6, 5, quality=0.1), cand(2, 1e-6, 5,
                                                                    dropped="drained")]
    verdicts = build_profile("cheapest").explain(cands, CallContext(Hints(100, 0.5)))
    reasons = [v.reason.split(":")[0] for v in verdicts]
    assert reasons == ["slo", "quality", "routable"]


def test_sampled_stage_timing_reports_every_plugin() -> None:
    seen: list[tuple[str, str]] = []
    profile = build_profile("cheapest", observer=lambda s, p, t: seen.append((s, p)))
    for _ in range(64):
        profile.choose([cand(0, 1e-6, 5)], CallContext(Hints(50)), random.Random(0))
    assert ("picker", "spread") in seen and ("filter", "slo") in seen


def test_registry_rejects_duplicates_and_unknown_names() -> None:
    with pytest.raises(ConfigError, match="registered twice"):
        register_filter("slo", lambda: build_filters(("slo",), "x")[0])
    with pytest.raises(ConfigError, match=r"profiles\.p\.filters\[1\] filter 'nope'"):
        build_filters(("slo", "nope"), "profiles.p.filters")
    with pytest.raises(ConfigError, match="not a profile"):
        build_profile("random")


@settings(max_examples=400, deadline=None)
@given(candidates, hints, st.integers(0, 2**32))
def test_cost_sorted_walk_gives_the_same_answer_as_the_full_pipeline(
        cands: list[Candidate], h: Hints, seed: int) -> None:
    ordered = sorted(cands, key=lambda c: c.cost_usd)
    ctx = CallContext(h, slo_margin_ms=2.0)
    full, fast = build_profile("cheapest"), build_profile("cheapest")
    try:
        a = full.choose(ordered, ctx, random.Random(seed))
    except (NoHealthyDeployment, PolicyUnsatisfiable) as exc:
        with pytest.raises(type(exc)):
            fast.choose(ordered, ctx, random.Random(seed), cost_sorted=True)
        return
    b = fast.choose(ordered, ctx, random.Random(seed), cost_sorted=True)
    assert (a.candidate, a.slo_met) == (b.candidate, b.slo_met)
