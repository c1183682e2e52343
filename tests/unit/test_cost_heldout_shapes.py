"""The two held-out cost scenarios of the cold-start/feedback round have the shapes their
headers claim (so a later edit that softens them shows)."""

from __future__ import annotations

import pathlib

import pytest

from benchmarks.costsim.scenario import ModelSpec, Scenario, load_scenario
from benchmarks.costsim.trace import outage_windows, rate

SCENARIOS = pathlib.Path(__file__).parents[2] / "benchmarks" / "scenarios"
DAY_S = 1000.0


def _work_ms(m: ModelSpec) -> float:
    """Mean compute (speed-1.0 ms) per call of ``m``, each class on its lightest variant."""
    return sum(c.share * min(v.compute_ms for v in m.variants if v.quality >= c.min_quality)
               for c in m.classes)


def _utilisation(s: Scenario, hour: float) -> float:
    """The calls' work over the servers × speed of the pools up at ``hour``."""
    t = hour / 24.0 * DAY_S
    down = {p for w in outage_windows(s, DAY_S) if w.start_s <= t < w.end_s for p in w.pools}
    capacity = sum(p.servers * p.speed for p in s.pools if p.id not in down)
    work = sum(rate(s, r, m.name, t, DAY_S, 1.0) * _work_ms(m) / 1000.0
               for r in s.regions for m in s.models.values())
    return work / capacity


def test_near_capacity_runs_its_fleet_above_085_at_the_peak_with_tight_classes() -> None:
    s = load_scenario(SCENARIOS / "held-out-near-capacity.toml")
    peak = max(_utilisation(s, h / 4.0) for h in range(96))
    assert 0.85 <= peak < 0.95
    assert not s.outages and not s.bursts
    # The tightest class of each model is 2-3x its lightest variant's mean on an L4.
    for m in s.models.values():
        tight = min(c.slo_ms for c in m.classes)
        mean_l4 = min(v.compute_ms for v in m.variants) / 2.0
        assert 2.0 <= tight / mean_l4 <= 3.0


def test_many_models_has_a_long_tail_a_reclaim_at_the_peak_and_a_short_burst_inside() -> None:
    s = load_scenario(SCENARIOS / "held-out-many-models.toml")
    shares = sorted(m.share for m in s.models.values())
    assert len(shares) >= 6 and shares[0] <= 0.02 and shares[-1] >= 0.3
    # Tail models are loaded on most pools (not one or two).
    tail = min(s.models.values(), key=lambda m: m.share)
    hosting = [p for p in s.pools if any(v.model == tail.name
                                         for v in map(s.variant, p.variants))]
    assert len(hosting) >= len(s.pools) - 1
    (burst,) = s.bursts
    assert burst.multiplier == pytest.approx(3.0)
    assert burst.duration_h * 60 == pytest.approx(10.0, abs=0.1)
    assert all(o.price_class == "spot" for o in s.outages)
    assert all(o.start_h <= burst.start_h < o.start_h + o.duration_h for o in s.outages)
    assert _utilisation(s, burst.start_h + 0.05) > 0.8
    assert _utilisation(s, 4.0) < 0.5  # the same peak hour before the reclaim
