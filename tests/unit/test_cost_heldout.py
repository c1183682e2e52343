"""The held-out cost scenario, the cost side of ``cost_check`` and the suite's prose."""

from __future__ import annotations

import pathlib
from collections import Counter
from types import SimpleNamespace

import pytest

from benchmarks.cost_check import premiums
from benchmarks.costsim import suite_report
from benchmarks.costsim.misses import TracedSimulation
from benchmarks.costsim.runner import make_policy
from benchmarks.costsim.scenario import load_scenario
from benchmarks.costsim.trace import generate

SCENARIOS = pathlib.Path(__file__).parents[2] / "benchmarks" / "scenarios"


def test_the_held_out_scenario_has_the_shape_it_claims() -> None:
    s = load_scenario(SCENARIOS / "held-out-diurnal-return.toml")
    assert s.settings.service_sigma == pytest.approx(0.5)
    assert s.diurnal_amplitude >= 0.6
    assert any(b.duration_h >= 3 and b.multiplier == pytest.approx(3.0) for b in s.bursts)
    # A pool returns within the day, before that burst starts.
    burst = min(b.start_h for b in s.bursts)
    assert any(o.start_h + o.duration_h <= burst for o in s.outages)
    # An edge region with no GPU, at least 100 ms from every pool.
    catalog = s.catalog()
    remote = [r for r in s.regions if not any(p.region == r for p in s.pools)]
    assert remote and all(catalog.rtt(r, p.region) >= 100 for r in remote for p in s.pools)
    slos = sorted(c.slo_ms for c in s.classes())
    assert slos[0] <= 150 and slos[-1] >= 600


def test_premium_is_what_a_call_paid_above_its_cheapest_feasible_deployment() -> None:
    s = load_scenario(SCENARIOS / "small.toml")
    trace = generate(s, quick=True)
    share = {}
    for name in ("lowest-latency", "switchyard"):
        sim = TracedSimulation(s, trace, make_policy(name, s))
        r = sim.run()
        share[name], by = premiums(sim, r)
        assert 0.0 <= share[name] < 1.0
        assert all(v > 0 for v in by.values())
        assert all(" -> " in k and "slo" in k for k in by)
    # Lowest-latency pays for speed nobody asked for; switchyard much less.
    assert share["lowest-latency"] > 0.5 > share["switchyard"]


def test_the_hardest_scenario_is_explained_by_its_largest_causes() -> None:
    run = SimpleNamespace(result=SimpleNamespace(policy="switchyard"),
                          misses=Counter({"service-time tail": 6, "outage in flight": 3,
                                          "queueing not foreseen": 1}))
    suite = [(SimpleNamespace(name="a"), [run], None)]
    why = suite_report._why(suite, "a")  # type: ignore[arg-type]
    assert "10 misses" in why and "6 (60%) are 'service-time tail'" in why
    assert "3 (30%) are 'outage in flight'" in why and "queueing" not in why
    assert suite_report._why(suite, "b") == ""  # type: ignore[arg-type]
