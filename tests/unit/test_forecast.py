"""Demand forecast: daily cycle, level, window peak and the large-error detector."""

from __future__ import annotations

import math

import pytest

from placement.forecast import ClassKey, DemandForecaster, ForecastSettings

KEY = ClassKey("m", 0.0, 300.0, "eu")
OTHER = ClassKey("m", 0.85, 300.0, "us")
DAY = 86_400.0


def daily(hour: float) -> float:
    """10/s on average, 15/s at 14:00 UTC, 5/s at 02:00."""
    return 10.0 + 5.0 * math.cos(2 * math.pi * (hour - 14.0) / 24)


def feed(f: DemandForecaster, days: int, scale: float = 1.0, start_day: int = 0,
         key: ClassKey = KEY) -> None:
    """Observations every 10 minutes, each the mean rate of its hour (a clean cycle)."""
    for d in range(start_day, start_day + days):
        for i in range(24 * 6):
            t = d * DAY + i * 600
            f.observe(key, t, scale * daily(math.floor(i / 6)))


def test_learns_the_daily_cycle() -> None:
    f = DemandForecaster()
    feed(f, days=2)
    now = 2 * DAY
    assert f.rate(KEY, now + 14 * 3600) == pytest.approx(15.0, rel=0.02)
    assert f.rate(KEY, now + 2 * 3600) == pytest.approx(5.0, rel=0.02)
    assert f.rate(OTHER, now) == 0.0


def test_profile_is_an_ewma_across_days() -> None:
    f = DemandForecaster(ForecastSettings(alpha_day=0.5, alpha_level=0.0))
    f.observe(KEY, 5 * 3600, 10.0)
    f.observe(KEY, DAY + 5 * 3600, 20.0)
    f.observe(KEY, DAY + 6 * 3600, 20.0)  # closes hour 5 of day 2: 0.5·10 + 0.5·20
    assert f.rate(KEY, 2 * DAY + 5 * 3600) == pytest.approx(15.0)


def test_level_moves_every_hour_when_the_day_runs_high() -> None:
    f = DemandForecaster()
    feed(f, days=2)
    # Day 3 runs at twice the usual rate: after a morning of it, the afternoon peak
    # is forecast at twice the learned 15/s.
    for i in range(6 * 6):
        t = 2 * DAY + 6 * 3600 + i * 600
        f.observe(KEY, t, 2 * daily(6 + i // 6))
    assert f.rate(KEY, 2 * DAY + 14 * 3600) == pytest.approx(30.0, rel=0.05)


def test_forecast_takes_the_peak_of_the_window_with_the_peak_factor() -> None:
    f = DemandForecaster(ForecastSettings(peak_factor=1.2))
    feed(f, days=2)
    (one_hour,) = f.forecast(2 * DAY + 11 * 3600, horizon_s=3600)
    (four_hours,) = f.forecast(2 * DAY + 11 * 3600, horizon_s=4 * 3600)
    assert one_hour.rate_rps == pytest.approx(1.2 * daily(11), rel=0.02)
    assert four_hours.rate_rps == pytest.approx(1.2 * 15.0, rel=0.02)
    assert (four_hours.model, four_hours.min_quality, four_hours.slo_ms,
            four_hours.edge_region) == tuple(KEY)


def test_a_sustained_miss_asks_for_a_replan_a_blip_does_not() -> None:
    f = DemandForecaster(ForecastSettings(error_threshold=0.5, error_sustain=3))
    feed(f, days=2)
    feed(f, days=2, key=OTHER)
    t = 2 * DAY + 10 * 3600
    f.observe(KEY, t, 3 * daily(10))  # one blip
    f.observe(KEY, t + 60, daily(10))
    assert f.surprises() == ()
    for i in range(3):
        f.observe(KEY, t + 120 + 60 * i, 3 * daily(10))
        f.observe(OTHER, t + 120 + 60 * i, daily(10))
    (s,) = f.surprises()
    assert s.key == KEY
    assert s.observed_rps == pytest.approx(3 * daily(10))
    assert s.forecast_rps < 2 * daily(10)
    assert "m/q>=0/300ms/eu: observed" in s.explain()


def test_within_hour_plans_a_short_window_for_its_own_peak_not_the_hours() -> None:
    hourly = DemandForecaster()
    curve = DemandForecaster(ForecastSettings(within_hour=True))
    feed(hourly, days=2)
    feed(curve, days=2)
    now = 2 * DAY + 19 * 3600  # the evening falls: hour 19 above hour 20
    (whole,) = hourly.forecast(now + 45 * 60, horizon_s=30 * 60)  # 19:45-20:15
    (window,) = curve.forecast(now + 45 * 60, horizon_s=30 * 60)
    assert whole.rate_rps == pytest.approx(1.1 * daily(19), rel=0.02)  # both hours' max
    # on the curve through hour means at :30, 19:45 is a quarter of the way to hour 20's
    assert window.rate_rps == pytest.approx(1.1 * (daily(19) + (daily(20) - daily(19)) / 4),
                                            rel=0.02)
    assert window.rate_rps < 0.98 * whole.rate_rps
    (rising,) = curve.forecast(2 * DAY + 9 * 3600 + 30 * 60, horizon_s=3600)
    assert rising.rate_rps == pytest.approx(1.1 * daily(10), rel=0.02)  # the window's end


def test_error_quantile_margin_is_what_the_forecast_needed() -> None:
    f = DemandForecaster(ForecastSettings(error_quantile=0.9, peak_factor=1.1, alpha_level=0.0))
    feed(f, days=2)
    t = 2 * DAY + 10 * 3600
    assert f.margin(KEY) == pytest.approx(1.0)  # a clean cycle: the forecast was right
    for i in range(20):  # one observation in two runs 30 % above the forecast
        f.observe(KEY, t + 60 * i, daily(10) * (1.3 if i % 2 else 1.0))
    assert f.margin(KEY) == pytest.approx(1.3, rel=0.02)
    (d,) = f.forecast(t, 600)
    assert d.rate_rps == pytest.approx(1.3 * daily(10), rel=0.02)
    assert DemandForecaster().margin(KEY) == 1.1  # unknown class, or the setting off
