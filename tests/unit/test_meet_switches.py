"""placement.meet's measured-and-off switches do what their docstrings say (and nothing
while off), and the held-out-return-into-burst scenario has the shape it claims."""

from __future__ import annotations

import pathlib
import random

import pytest

from benchmarks.costsim.scenario import load_scenario
from placement import meet
from placement.model import CallContext, Hints
from tests.meet_rows import meet_row

SCENARIOS = pathlib.Path(__file__).parents[2] / "benchmarks" / "scenarios"


def test_the_switches_are_off() -> None:
    assert meet.LEARNED_CAP is None
    assert meet.UNLEARNED_SECOND is False
    assert meet.SYMMETRIC_EXCESS is False


def test_learned_cap_bounds_what_a_margin_takes_off_the_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    c = meet_row("l4/v", "l4", compute=25.0, slots=4.0, conc=4)
    plain = CallContext(Hints(slo_ms=70.0))
    learned = CallContext(Hints(slo_ms=70.0), slo_margins={"l4/v": 99.0})  # over the SLO
    assert meet.chance(c, learned) == 0.0  # the whole margin: no budget left
    monkeypatch.setattr(meet, "LEARNED_CAP", 0.25)
    capped = meet.chance(c, learned)
    assert 0.0 < capped < meet.chance(c, plain)
    # exactly a margin of 0.25 × SLO
    as_if = CallContext(Hints(slo_ms=70.0), slo_margins={"l4/v": 17.5})
    monkeypatch.setattr(meet, "LEARNED_CAP", None)
    assert capped == pytest.approx(meet.chance(c, as_if))
    monkeypatch.setattr(meet, "LEARNED_CAP", 0.0)
    assert meet.chance(c, learned) == pytest.approx(meet.chance(c, plain))


def test_unlearned_second_draws_by_chance_when_margins_leave_none(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Both rows' margins eat the budget; the slow one is fastest by the strict estimate
    # (the faster one is past this edge's share), the fast one far likelier without margins.
    slow = meet_row("t4/v", "t4", compute=48.0, slots=2.0, conc=2)
    fast = meet_row("h100/v", "h100", compute=10.0, slots=1.0, conc=8)
    ctx = CallContext(Hints(slo_ms=70.0), inflight={"h100/v": 3},
                      slo_margins={"t4/v": 80.0, "h100/v": 80.0})
    assert ctx.latency_ms(slow) < ctx.latency_ms(fast)
    assert meet.chance(slow, ctx) == meet.chance(fast, ctx) == 0.0
    assert meet.choose([slow, fast], ctx, None) is slow  # fastest by estimate
    monkeypatch.setattr(meet, "UNLEARNED_SECOND", True)
    assert meet.chance(fast, ctx, cap=0.0) > meet.chance(slow, ctx, cap=0.0) + meet.EPS
    for seed in range(10):
        assert meet.choose([slow, fast], ctx, random.Random(seed)) is fast


def test_symmetric_excess_scales_this_edges_excess_by_its_share(
        monkeypatch: pytest.MonkeyPatch) -> None:
    c = meet_row("l4/v", "l4", compute=25.0, slots=2.0, conc=8)
    ctx = CallContext(Hints(slo_ms=70.0), inflight={"l4/v": 3})  # 2 past a share of 2
    assert meet.excess(c, ctx) == pytest.approx(2.0)
    alone = meet.chance(c, ctx)
    assert alone > 0.0
    monkeypatch.setattr(meet, "SYMMETRIC_EXCESS", True)
    # 2 × 8 / 2 = 8 calls past the shares of a backend of 8 servers: saturated
    assert meet.chance(c, ctx) == 0.0
    within = CallContext(Hints(slo_ms=70.0), inflight={"l4/v": 1})
    monkeypatch.setattr(meet, "SYMMETRIC_EXCESS", False)
    off = meet.chance(c, within)
    monkeypatch.setattr(meet, "SYMMETRIC_EXCESS", True)
    assert meet.chance(c, within) == off  # no excess, nothing to scale


def test_the_return_into_burst_scenario_has_the_shape_it_claims() -> None:
    s = load_scenario(SCENARIOS / "held-out-return-into-burst.toml")
    # A pool returns exactly when a burst of minutes starts, on every edge.
    returns = {round(o.start_h + o.duration_h, 6) for o in s.outages}
    short = [b for b in s.bursts if b.duration_h <= 0.5 and b.multiplier >= 2]
    assert short and all(b.region == "*" for b in short)
    assert any(round(b.start_h, 6) in returns for b in short)
    # Heavy-tailed neocloud pools next to quieter ones.
    sigmas = {p.sigma(s.settings) for p in s.pools}
    assert max(sigmas) >= 0.5 and min(sigmas) <= 0.2
    # Most calls in tight classes (<= 200 ms).
    tight = sum(s.models[k.model].share * k.share for k in s.classes() if k.slo_ms <= 200)
    assert tight >= 0.65
    # A model with three variants; an edge whose own pools are only L4s, the faster GPUs
    # at least 90 ms away.
    assert any(len(m.variants) >= 3 for m in s.models.values())
    catalog = s.catalog()
    l4_only = [r for r in s.regions
               if {p.accelerator for p in s.pools if p.region == r} == {"nvidia-l4"}]
    assert l4_only and all(catalog.rtt(r, p.region) >= 90 for r in l4_only
                           for p in s.pools if p.accelerator != "nvidia-l4")
