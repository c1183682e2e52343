"""The held-out cost scenario, the cost side of ``cost_check`` and the suite's prose."""

from __future__ import annotations

import pathlib
from collections import Counter
from types import SimpleNamespace

import pytest

from benchmarks.cost_check import _why_not, premiums
from benchmarks.costsim import suite_report
from benchmarks.costsim.misses import TracedSimulation
from benchmarks.costsim.runner import make_policy
from benchmarks.costsim.scenario import load_scenario
from benchmarks.costsim.trace import generate
from placement.filters import slo
from placement.filters.slo import borrowed_ms
from placement.model import CallContext, Candidate, Hints
from placement.registry import build_profile
from placement.shares import borrowable

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


def _row(p95: float = 80.0, slots: float = 1.0, spare: float = 100.0) -> Candidate:
    return Candidate(deployment_id="b1/v", backend_id="b1", endpoint="x", variant="v",
                     region="r", cloud="c", accelerator="a", quality=1.0, latency_p95_ms=p95,
                     rtt_ms=1.0, queue_ms=0.0, compute_ms=20.0, cost_usd=1e-6,
                     spare_capacity=spare, concurrency=4, edge_slots=slots)


def test_why_not_names_the_soft_filter_and_what_it_judged() -> None:
    filters = list(build_profile("cheapest", 0.05).filters)
    hints = Hints(slo_ms=100.0)
    past_share = CallContext(hints, inflight={"b1/v": 3})
    assert "slot share" in str(_why_not(_row(), past_share, filters))
    assert _why_not(_row(), CallContext(hints), filters) is None  # it fits: nothing kept it
    assert "table's p95" in str(_why_not(_row(p95=120.0), CallContext(hints), filters))
    seen = CallContext(hints, observed_p95_ms={"b1/v": 130.0})
    assert "observed p95" in str(_why_not(_row(), seen, filters))
    learned = CallContext(hints, slo_margins={"b1/v": 30.0})
    assert "learned" in str(_why_not(_row(), learned, filters))
    floor = CallContext(Hints(slo_ms=100.0, min_quality=2.0))
    assert _why_not(_row(p95=120.0), floor, filters) is None  # a hard filter: not counted


def test_borrowing_idle_slots_is_off_and_bounded_when_on(monkeypatch: pytest.MonkeyPatch) -> None:
    assert borrowable(1.0) == 1.0 and borrowable(0.0) == 2.0 and borrowable(0.6) == 1.25
    ctx = CallContext(Hints(slo_ms=200.0), inflight={"b1/v": 1})
    row = _row(slots=1.0, spare=4 * 1000 / 20.0)  # an idle backend
    worst = ctx.latency_ms(row)
    assert worst > 80.0 + 20.0
    assert borrowed_ms(row, ctx, worst) == worst  # off by default
    monkeypatch.setattr(slo, "BORROW_IDLE", True)
    assert borrowed_ms(row, ctx, worst) == pytest.approx(80.0 + 20.0)  # one call ahead
    busy = _row(slots=1.0, spare=0.0)
    assert borrowed_ms(busy, ctx, ctx.latency_ms(busy)) == ctx.latency_ms(busy)


def test_the_long_tail_scenario_has_the_shape_it_claims() -> None:
    s = load_scenario(SCENARIOS / "held-out-long-tail.toml")
    shares = sorted((m.share for m in s.models.values()), reverse=True)
    assert len(shares) >= 6 and shares[0] >= 0.4 and shares[-1] <= 0.03
    # The tail models are hosted on few pools; the head model on most.
    hosts = {m: sum(1 for p in s.pools if any(s.variant(v).model == m for v in p.variants))
             for m in s.models}
    head = max(s.models.values(), key=lambda m: m.share).name
    tail = min(s.models.values(), key=lambda m: m.share).name
    assert hosts[head] >= 2 * hosts[tail]
    # A tail model surges while a head model's cheap pool is reclaimed.
    assert any(b.model and s.models[b.model].share <= 0.1 and b.multiplier >= 3
               for b in s.bursts)
    assert any(o.price_class == "spot" for o in s.outages)
    slos = sorted(c.slo_ms for c in s.classes())
    assert slos[0] <= 100 and slos[-1] >= 2000
