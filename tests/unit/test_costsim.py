"""The cost simulator (benchmarks/costsim): scenario loading, determinism, the decisions it
drives through placement's code, and the LP bound's own guarantees."""

from __future__ import annotations

import itertools
import math
import pathlib

import numpy as np
import pytest

from benchmarks.costsim import lp
from benchmarks.costsim.engine import Simulation, deployments_of
from benchmarks.costsim.runner import POLICIES, bound, make_policy, simulate
from benchmarks.costsim.scenario import load_scenario, parse_scenario, rtt_from_coordinates
from benchmarks.costsim.trace import generate
from placement import hot_rows
from placement.errors import ConfigError
from placement.model import CallContext, Candidate
from placement.pipeline import Decision

SCENARIOS = pathlib.Path(__file__).parents[2] / "benchmarks" / "scenarios"
SMALL = SCENARIOS / "small.toml"


@pytest.fixture(scope="module")
def small():  # type: ignore[no-untyped-def]
    s = load_scenario(SMALL)
    return s, generate(s, quick=True)


@pytest.fixture(scope="module")
def results(small):  # type: ignore[no-untyped-def]
    s, trace = small
    return {n: simulate(s, trace, n) for n in POLICIES}


def test_default_scenario_has_five_clouds_twenty_regions_and_list_prices() -> None:
    s = load_scenario(SCENARIOS / "default.toml")
    assert len(s.clouds) >= 5
    assert len(s.regions) >= 20
    assert all(p.price_source.startswith("http") for p in s.pools)
    assert {r.cloud for r in s.regions.values()} == set(s.clouds)


def test_rtt_from_coordinates_grows_with_distance(small) -> None:  # type: ignore[no-untyped-def]
    s, _ = small
    r = s.regions
    near = rtt_from_coordinates(r["aws-us-east-1"], r["gcp-us-central1"], 2.0, 66.7)
    far = rtt_from_coordinates(r["aws-us-east-1"], r["gcp-europe-west4"], 2.0, 66.7)
    assert 2.0 < near < far
    assert s.catalog().rtt("aws-us-east-1", "gcp-europe-west4") == far


def test_bad_reference_names_its_path() -> None:
    raw = {"regions": [{"name": "a", "cloud": "aws"}],
           "models": [{"name": "m", "default_slo_ms": 100,
                       "variants": [{"name": "v", "quality": 0.5, "compute_ms": 10}]}],
           "accelerators": {"nvidia-t4": 1.0},
           "pools": [{"region": "nowhere", "accelerator": "nvidia-t4"}]}
    with pytest.raises(ConfigError, match=r"pools\[0\]\.region 'nowhere'"):
        parse_scenario(raw, SCENARIOS, "inline")


def test_pool_without_a_listed_price_needs_an_override_with_a_source() -> None:
    raw = {"regions": [{"name": "aws-us-east-1", "cloud": "aws"}],
           "models": [{"name": "m", "default_slo_ms": 100,
                       "variants": [{"name": "v", "quality": 0.5, "compute_ms": 10}]}],
           "accelerators": {"nvidia-l4": 2.0},
           "pools": [{"region": "aws-us-east-1", "accelerator": "nvidia-l4",
                      "price_class": "reserved"}]}
    with pytest.raises(ConfigError, match="no price"):
        parse_scenario(raw, SCENARIOS, "inline")
    raw["pools"][0].update(usd_per_gpu_hour=0.5, price_source="test")
    s = parse_scenario(raw, SCENARIOS, "inline")
    assert s.prices().usd_per_second("nvidia-l4", "aws", "aws-us-east-1", "reserved") \
        == pytest.approx(0.5 / 3600)


def test_same_seed_same_trace_and_same_results(small, results) -> None:  # type: ignore[no-untyped-def]
    s, trace = small
    again = generate(s, quick=True)
    assert np.array_equal(trace.t, again.t) and np.array_equal(trace.klass, again.klass)
    # The module's run of the trace (after or among the other policies' runs) and a new one.
    a, b = results["switchyard"], simulate(s, again, "switchyard")
    assert np.array_equal(a.final_dep, b.final_dep)
    assert np.array_equal(a.latency_ms, b.latency_ms, equal_nan=True)
    assert a.cost_usd == b.cost_usd
    other = generate(s, quick=True, seed=s.seed + 1)
    assert len(other) != len(trace) or not np.array_equal(other.t, trace.t)


def _feasible(c: Candidate, ctx: CallContext) -> bool:
    """Feasibility written out from DESIGN.md, independently of the filter classes."""
    return (not c.dropped_reason and c.deployment_id not in ctx.exclude
            and c.deployment_id not in ctx.unusable
            and c.quality >= ctx.hints.min_quality
            and ctx.latency_ms(c) <= ctx.hints.slo_ms - ctx.slo_margin_ms
            and c.spare_capacity > 0 and c.region not in ctx.avoid_regions
            and c.availability.name != "CORDONED"
            and ctx.draw < ctx.warming.get(c.deployment_id, 1.0))  # slow start's share


def test_switchyard_never_picks_an_infeasible_deployment_when_one_is_feasible(
        small) -> None:  # type: ignore[no-untyped-def]
    s, trace = small
    seen = {"decisions": 0, "with_feasible": 0}

    def audit(cands: list[Candidate], ctx: CallContext, d: Decision) -> None:
        seen["decisions"] += 1
        feasible = [c for c in cands if _feasible(c, ctx)]
        if feasible:
            seen["with_feasible"] += 1
            assert d.slo_met
            assert _feasible(d.candidate, ctx), d.candidate.deployment_id
            cheapest = min(c.cost_usd for c in feasible)
            limit = cheapest / (1 - s.settings.spread_band)
            if hot_rows.ON:  # a loose call may leave a row this edge fills for one at most
                # MAX_PRICE x the cheapest passing row (placement.hot_rows, on since 0fe7c06)
                limit = max(limit, cheapest * (hot_rows.MAX_PRICE or math.inf))
            assert d.candidate.cost_usd <= limit + 1e-15
        else:
            assert not d.slo_met

    Simulation(s, trace, make_policy("switchyard", s, on_decision=audit)).run()
    assert seen["decisions"] >= len(trace)
    assert seen["with_feasible"] > 0


def test_outage_is_routed_around_without_losing_calls(small, results) -> None:  # type: ignore[no-untyped-def]
    s, trace = small
    r = results["switchyard"]
    assert r.failed == 0
    down = {i for i, d in enumerate(r.deployments) if d.startswith("gcp-us-central1.")}
    o = s.outages[0]
    start = s.hours_to_s(o.start_h, trace.duration_s) + 2 * s.settings.table_interval_s
    end = s.hours_to_s(o.start_h + o.duration_h, trace.duration_s)
    during = (trace.t > start) & (trace.t < end)
    assert during.any()
    assert not np.isin(r.final_dep[during], list(down)).any()


def test_lp_bound_is_monotone_in_attainment(small) -> None:  # type: ignore[no-untyped-def]
    s, trace = small
    m = lp.build(s, trace)
    amax = lp.max_attainment(m)
    costs = [lp.solve(m, a * amax).cost_per_million for a in (0.5, 0.8, 0.95, 1.0)]
    assert all(x <= y * (1 + 1e-7) for x, y in itertools.pairwise(costs))


def test_lp_is_below_every_assignment_it_admits(small, results) -> None:  # type: ignore[no-untyped-def]
    """LP optimality: any policy whose actual assignment satisfies the LP's constraints
    (no failed calls, every pool within the utilisation cap in every bucket) costs at least
    the LP solved at the attainment that assignment reaches under the LP's model."""
    s, trace = small
    b = bound(s, trace, list(results.values()))
    admitted = 0
    for name, r in results.items():
        c = b.checks[name]
        assert c.expected_cost_per_million == pytest.approx(r.expected_cost_usd
                                                            / r.served * 1e6)
        if c.capacity_ok and r.failed == 0:
            admitted += 1
            assert b.at_policy[name].cost_per_million <= \
                c.expected_cost_per_million * (1 + 1e-6), name
    assert admitted >= 2


def test_cheapest_allowed_deployment_per_call_bounds_every_policy(small, results) -> None:  # type: ignore[no-untyped-def]
    """Per served call, the cheapest deployment meeting its quality floor bounds any policy's
    expected cost: a property of the cost model, whatever the policy did."""
    s, trace = small
    deps = deployments_of(s)
    floors: dict[tuple[str, int], float] = {}
    for (e, k, d) in lp.pair_feasible(s):
        c = deps[d].usd_per_s * deps[d].mean_service_s
        floors[(e, k)] = min(floors.get((e, k), c), c)
    for r in results.values():
        served = np.nonzero(r.final_dep >= 0)[0]
        floor = sum(floors[(trace.regions[trace.region[i]], int(trace.klass[i]))]
                    for i in served)
        assert r.expected_cost_usd >= floor * (1 - 1e-9), r.policy
