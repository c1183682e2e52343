"""placement.plan_cadence: when the capacity loop re-plans and for what demand, the rule both
placement's live loop and the provisioned-cost day run (times injected, nothing sleeps)."""

from __future__ import annotations

import dataclasses

import pytest

from placement.forecast import ClassKey, DemandForecaster, ForecastSettings
from placement.plan_cadence import Cadence, CadenceSettings, Due
from placement.plan_types import Plan, PoolPlan

DAY = 86_400.0
A = ClassKey("m", 0.5, 300.0, "r1")
B = ClassKey("m", 0.9, 300.0, "r1")
SETTINGS = CadenceSettings(plan_every_s=3600.0, lead_s=300.0, resize_every_s=900.0,
                           forecast_every_s=600.0, react_tolerance=0.05, react_window_s=60.0,
                           min_replan_s=30.0, min_class_rps=0.2)


def trained(rate: float = 10.0) -> DemandForecaster:
    """A forecaster that saw ``rate`` for A all day yesterday, every 10 minutes."""
    f = DemandForecaster(ForecastSettings(within_hour=True))
    for i in range(24 * 6):
        f.observe(A, i * 600.0, rate)
    return f


def plan_serving(**rps: float) -> Plan:
    keys = {"A": A, "B": B}
    serves = tuple((f"{k.model}/q>={k.min_quality:g}/{k.slo_ms:g}ms/{k.edge_region}", "v", r)
                   for name, r in rps.items() for k in [keys[name]])
    return Plan((PoolPlan("p", 1, ("v",), 0.5, 0.9, 1.0, serves),), 1.0)


def run(c: Cadence, start: float, end: float, step: float,
        rates: dict[ClassKey, float]) -> list[tuple[float, Due]]:
    """Observe every ``step`` from ``start``; each due re-plan is 'solved' for its demand."""
    out = []
    t = start
    while t < end:
        due = c.observe(t, rates, step)
        if due is not None:
            out.append((t, due))
            c.solved(t, c.demand(t, due.horizon_s), plan_serving(A=rates.get(A, 0.0) * 1.1))
        t += step
    return out


def test_full_plans_on_the_hour_lead_ahead_and_right_sizing_every_quarter_between() -> None:
    c = Cadence(SETTINGS, trained())
    first = c.begin(DAY + 8 * 3600.0)
    assert (first.kind, first.horizon_s, first.resize) == ("first", 900.0 + 300.0, False)
    c.solved(DAY + 8 * 3600.0, c.demand(DAY + 8 * 3600.0, first.horizon_s),
             plan_serving(A=11.0))
    dues = run(c, DAY + 8 * 3600.0 + 5.0, DAY + 10 * 3600.0, 5.0, {A: 10.0})
    at = [(round((t - DAY) / 60.0), d.kind, d.resize) for t, d in dues]
    # 8:10, 8:25, 8:40 right-size; 8:55 the hour's full plan (lead 5 min); 9:10 ... again
    assert at == [(490, "resize", True), (505, "resize", True), (520, "resize", True),
                  (535, "schedule", False), (550, "resize", True), (565, "resize", True),
                  (580, "resize", True), (595, "schedule", False)]


def test_without_right_sizing_plans_cover_the_whole_interval_and_only_the_hour_replans() -> None:
    c = Cadence(dataclasses.replace(SETTINGS, resize_every_s=0.0), trained())
    c.solved(DAY, c.demand(DAY, c.begin(DAY).horizon_s), plan_serving(A=11.0))
    dues = run(c, DAY + 5.0, DAY + 2 * 3600.0, 5.0, {A: 10.0})
    assert [(round((t - DAY) / 60.0), d.kind, d.horizon_s) for t, d in dues] == [
        (55, "schedule", 3900.0), (115, "schedule", 3900.0)]


def test_a_sustained_forecast_error_replans_at_the_observed_rate_in_either_direction() -> None:
    c = Cadence(dataclasses.replace(SETTINGS, react_tolerance=0.0), trained(10.0))
    t0 = DAY + 12 * 3600.0 + 5.0
    c.solved(t0, c.demand(t0, 1200.0), plan_serving(A=11.0))
    c.begin(t0)
    dues = run(c, t0, t0 + 1200.0, 5.0, {A: 3.0})  # the class went quiet: 3/s, not 10
    surprises = [(t, d) for t, d in dues if d.kind == "surprise"]
    assert surprises, dues
    t, d = surprises[0]
    assert t == DAY + 12 * 3600.0 + 1200.0  # the third 10-minute window off, not a sample
    assert "observed 3.00/s" in d.reason
    (demand,) = c.demand(t, d.horizon_s)
    assert demand.rate_rps == pytest.approx(3.0 * 1.1)  # the observed rate × margin, lower


def test_a_new_class_replans_soon_but_not_within_min_replan_s_and_is_planned_as_observed(
        ) -> None:
    c = Cadence(SETTINGS, trained())
    t0 = DAY + 12 * 3600.0 + 100.0
    c.begin(t0)
    c.solved(t0, c.demand(t0, 1200.0), plan_serving(A=11.0))
    assert c.observe(t0 + 10.0, {A: 10.0, B: 4.0}, 5.0) is None  # 10 s after the last solve
    due = c.observe(t0 + 30.0, {A: 10.0, B: 4.0}, 5.0)
    assert due is not None and due.kind == "new class"
    assert due.reason == "new demand class: m/q>=0.9/300ms/r1"
    rates = {(d.min_quality): d.rate_rps for d in c.demand(t0 + 30.0, due.horizon_s)}
    assert rates[0.9] == pytest.approx(4.0 * 1.1)  # one window's mean × the margin
    assert rates[0.5] == pytest.approx(11.0, rel=0.01)


def test_drift_right_sizes_at_once_and_noise_within_three_sigma_does_not() -> None:
    c = Cadence(SETTINGS, trained(100.0))
    t0 = DAY + 12 * 3600.0 + 100.0
    c.begin(t0)
    c.solved(t0, c.demand(t0, 1200.0), plan_serving(A=100.0))
    # 3 σ of a count of 100/s over 60 s is 3.9/s: 108 is noise, 110 beyond 5 % and it
    assert c.observe(t0 + 40.0, {A: 108.0}, 5.0, count_window_s=60.0) is None
    due = c.observe(t0 + 45.0, {A: 110.0}, 5.0, count_window_s=60.0)
    assert due is not None and (due.kind, due.resize) == ("drift", True)
    assert due.reason == "observed above the plan: m/q>=0.5/300ms/r1"
    # counted over 5 s the same rate is within noise (3 σ = 13.4/s)
    c2 = Cadence(SETTINGS, trained(100.0))
    c2.begin(t0)
    c2.solved(t0, c2.demand(t0, 1200.0), plan_serving(A=100.0))
    assert c2.observe(t0 + 45.0, {A: 110.0}, 5.0, count_window_s=5.0) is None


def test_the_observed_floor_keeps_a_class_for_its_window_and_small_classes_are_left_out(
        ) -> None:
    c = Cadence(SETTINGS, DemandForecaster())
    t0 = DAY + 12 * 3600.0
    c.begin(t0)
    c.observe(t0, {}, 5.0)  # the window's feed: nothing yet
    c.observe(t0 + 5.0, {B: 5.0, A: 0.1}, 5.0)  # not fed to the forecaster until 12:10
    assert [(d.min_quality, round(d.rate_rps, 2)) for d in c.demand(t0 + 5.0, 1200.0)] == [
        (0.9, 5.5)]  # A's 0.11/s is under min_class_rps
    c.observe(t0 + 50.0, {B: 0.0}, 5.0)
    assert [d.min_quality for d in c.demand(t0 + 50.0, 1200.0)] == [0.9]  # within 60 s
    c.observe(t0 + 66.0, {B: 0.0}, 5.0)
    assert c.demand(t0 + 66.0, 1200.0) == ()  # past the window, and the forecast has none
    no_react = Cadence(dataclasses.replace(SETTINGS, react_tolerance=0.0), DemandForecaster())
    no_react.begin(t0)
    no_react.observe(t0 + 1.0, {B: 5.0}, 5.0)  # the first window fed: forecast 5/s × 1.1
    assert [round(d.rate_rps, 2) for d in no_react.demand(t0 + 1.0, 1200.0)] == [5.5]
    no_react.observe(t0 + 6.0, {B: 50.0}, 5.0)  # not fed, and no observed floor
    assert [round(d.rate_rps, 2) for d in no_react.demand(t0 + 6.0, 1200.0)] == [5.5]


def test_an_outage_starting_or_ending_replans() -> None:
    c = Cadence(SETTINGS, trained())
    t0 = DAY + 12 * 3600.0 + 100.0
    c.begin(t0)
    c.solved(t0, c.demand(t0, 1200.0), plan_serving(A=11.0))
    down = c.observe(t0 + 60.0, {A: 10.0}, 5.0, down=frozenset({"p"}))
    assert down is not None and (down.kind, down.reason) == ("outage", "pools down: p")
    c.solved(t0 + 60.0, c.demand(t0 + 60.0, down.horizon_s), plan_serving(A=11.0))
    assert c.observe(t0 + 65.0, {A: 10.0}, 5.0, down=frozenset({"p"})) is None
    back = c.observe(t0 + 120.0, {A: 10.0}, 5.0)
    assert back is not None and (back.kind, back.reason) == ("outage", "pools down: none")
