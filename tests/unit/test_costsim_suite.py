"""Every scenario, the queueing bound, the miss breakdown and the RESULTS.md writer."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest

from benchmarks import cost
from benchmarks.common import Section
from benchmarks.costsim import lp, qbound
from benchmarks.costsim.engine import Simulation
from benchmarks.costsim.misses import CAUSES, TracedSimulation, classify, unobserved_parts
from benchmarks.costsim.runner import make_policy, simulate
from benchmarks.costsim.scenario import load_scenario
from benchmarks.costsim.trace import generate
from placement.errors import ConfigError

SCENARIOS = pathlib.Path(__file__).parents[2] / "benchmarks" / "scenarios"
SMALL = SCENARIOS / "small.toml"


@pytest.fixture(scope="module")
def small():  # type: ignore[no-untyped-def]
    s = load_scenario(SMALL)
    return s, generate(s, quick=True)


def test_every_scenario_loads_and_they_differ_in_shape() -> None:
    shapes = set()
    for p in sorted(SCENARIOS.glob("*.toml")):
        s = load_scenario(p)
        shapes.add((len(s.regions), len(s.pools), s.settings.service_sigma,
                    tuple(sorted(len(m.variants) for m in s.models.values()))))
    assert len(shapes) == len(list(SCENARIOS.glob("*.toml"))) >= 6


def test_the_issue_scenario_has_what_the_issue_describes() -> None:
    s = load_scenario(SCENARIOS / "tight-three-variant.toml")
    slos = sorted({c.slo_ms for c in s.classes() if c.slo_ms <= 250})
    assert slos[0] <= 120 and slos[-1] == 250
    assert any(len(m.variants) == 3 for m in s.models.values())
    assert s.settings.service_sigma == pytest.approx(0.35)
    assert any(o.cloud and not o.region and o.duration_h >= 2 for o in s.outages)
    assert any(b.duration_h >= 2 and 2 <= b.multiplier <= 3 for b in s.bursts)


def test_erlang_c_matches_closed_forms() -> None:
    assert qbound.erlang_c(1, 0.7) == pytest.approx(0.7)  # M/M/1: P(wait) = ρ
    # M/M/2: P(wait) = 2ρ² / (1 + ρ)
    assert qbound.erlang_c(2, 0.6) == pytest.approx(2 * 0.36 / 1.6)
    assert qbound.erlang_c(8, 0.0) == 0.0


def test_chance_to_meet_the_slo_falls_with_utilisation_and_starts_at_the_service_cdf() -> None:
    qs = [qbound.p_within(100, 40, 0.35, 4, rho, 40) for rho in (0.1, 0.5, 0.8, 0.95)]
    assert qs == sorted(qs, reverse=True) and qs[-1] < qs[0]
    lognormal_cdf = 0.5 * (1 + math.erf((math.log(100 / 40) + 0.35 ** 2 / 2)
                                        / (0.35 * math.sqrt(2))))
    assert qbound.p_within(100, 40, 0.35, 4, 0.0, 40) == pytest.approx(lognormal_cdf, abs=1e-3)
    assert qbound.p_within(-1, 40, 0.35, 4, 0.5, 40) == 0.0


def test_queueing_bound_is_monotone_and_no_bucket_is_partly_down(small) -> None:  # type: ignore[no-untyped-def]
    s, trace = small
    cuts = qbound._cuts(s, trace.duration_s, 60.0)
    assert set(np.unique(qbound._up(s, trace.duration_s, cuts))) <= {0.0, 1.0}
    m = qbound.build(s, trace)
    top = qbound.max_attainment(m)
    assert 0.9 < top <= 1.0
    costs = [qbound.solve(m, a).cost_per_million for a in (0.8, 0.9, top - 1e-4)]
    assert costs == sorted(costs)


def test_queueing_bound_is_not_below_the_fluid_bound_where_both_bind(small) -> None:  # type: ignore[no-untyped-def]
    s, trace = small
    fluid, queued = lp.build(s, trace), qbound.build(s, trace)
    a = min(lp.max_attainment(fluid), qbound.max_attainment(queued)) - 1e-3
    assert qbound.solve(queued, a).cost_per_million >= \
        0.99 * lp.solve(fluid, a).cost_per_million


def test_every_missed_call_gets_exactly_one_cause(small) -> None:  # type: ignore[no-untyped-def]
    s, trace = small
    seen: dict[str, object] = {}
    for name in ("switchyard", "cheapest-ignoring-slo", "round-robin"):
        sim = TracedSimulation(s, trace, make_policy(name, s))
        r = sim.run()
        causes = classify(sim, r)
        assert sum(causes.values()) == r.calls - r.slo_met
        assert set(causes) <= set(CAUSES)
        # the 'estimate before first samples' ones, split by table row and what was late
        parts = unobserved_parts(sim, r)
        assert sum(parts.values()) == causes[CAUSES[3]]
        assert all(k.split(", ")[0] in ("other edges' p95", "the model") for k in parts)
        # The trace is the engine's: tracing changes nothing it decides.
        plain = simulate(s, trace, name)
        assert plain.slo_met == r.slo_met and plain.cost_usd == pytest.approx(r.cost_usd)
        seen[name] = causes
    # Cheapest-ignoring-SLO sends tight calls to T4s whose service alone is over the SLO;
    # round-robin also walks into the outage.
    assert seen["cheapest-ignoring-slo"]["service-time tail"] > 0  # type: ignore[index]
    assert seen["round-robin"]["outage in flight"] > 0  # type: ignore[index]


def test_write_section_replaces_by_title_and_keeps_the_rest(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text("# Head\n\nintro\n\n## Cost: one\n\nold\n\n## Failover\n\nkeep\n")
    s1 = Section(title="Cost: every", command="cmd", table="| a |\n| --- |\n| 1 |")
    cost.write_section(s1, path)
    text = path.read_text()
    assert text.index("## Cost: one") < text.index("## Cost: every") < text.index("## Failover")
    cost.write_section(Section(title="Cost: every", command="cmd2", table="t2"), path)
    text = path.read_text()
    assert text.count("## Cost: every") == 1 and "cmd2" in text and "| 1 |" not in text
    assert "keep" in text and "old" in text and text.startswith("# Head")


def test_write_section_keeps_the_dated_subsections_under_the_old_section(
        tmp_path: pathlib.Path) -> None:
    """A full run replaced a section up to the next ``##``: its dated ``###`` subsections
    (other runs' records) went with the old table."""
    path = tmp_path / "RESULTS.md"
    path.write_text("# Head\n\n## Cost: every\n\nold table\n\n### 2026-11-27: a rule, off"
                    "\n\nits rows\n\n## Failover\n\nkeep\n")
    cost.write_section(Section(title="Cost: every", command="cmd", table="new table"), path)
    text = path.read_text()
    assert "old table" not in text and "its rows" in text and "keep" in text
    assert (text.index("new table") < text.index("### 2026-11-27: a rule, off")
            < text.index("## Failover"))
    assert text.count("## Cost: every") == 1


def test_a_pool_may_carry_its_own_service_noise_and_the_simulator_uses_it() -> None:
    s = load_scenario(SCENARIOS / "noisy-cheap-spot.toml")
    noisy = {p.id for p in s.pools if p.sigma(s.settings) == pytest.approx(0.5)}
    assert noisy and all(p.price_class == "spot" for p in s.pools if p.id in noisy)
    assert all(p.sigma(s.settings) == pytest.approx(0.15) for p in s.pools if p.id not in noisy)
    sim = Simulation(s, generate(s, quick=True), make_policy("round-robin", s))
    spread = {p.id: sim.sigma[i] for i, p in enumerate(s.pools)}
    assert {k for k, v in spread.items() if v == pytest.approx(0.5)} == noisy


def test_a_pool_noise_outside_its_range_names_its_path(tmp_path: pathlib.Path) -> None:
    text = (SCENARIOS / "noisy-cheap-spot.toml").read_text().replace(
        "service_sigma = 0.5", "service_sigma = 3.0", 1)
    prices = SCENARIOS.parents[1] / "examples" / "prices.toml"
    target = tmp_path / "bad.toml"
    target.write_text(text.replace('prices_file = "../../examples/prices.toml"',
                                   f'prices_file = "{prices}"'))
    with pytest.raises(ConfigError, match=r"pools\[0\]\.service_sigma 3.0"):
        load_scenario(target)
