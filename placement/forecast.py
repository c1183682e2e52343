"""Demand forecast per class (model, quality floor, SLO, edge region), with the daily cycle.

Pure: observations carry their own time (``now_s``, seconds since the epoch, UTC).

- **Profile**: per class and hour of day, the mean observed rate of each finished hour is
  folded into an EWMA across days: ``profile[h] ← (1 − α_day)·profile[h] + α_day·mean``.
  An hour never seen falls back to the mean of the hours that were.
- **Level**: how today runs against the profile, ``level ← (1 − α_level)·level +
  α_level·observed / profile[h]`` per observation of an hour with a profile, clamped to
  ``[1/max_level, max_level]``; growth or a quiet day moves every hour's forecast at once.
  Profiles store rates divided by the level, so ``forecast = profile[h] · level``.
- **Forecast** for ``[now, now + horizon]``: the largest ``profile[h] · level`` over the hours
  it covers, times ``peak_factor`` (capacity is provisioned for the window's peak). With
  ``within_hour``, the profile is a curve through each hour's mean at the middle of the hour
  (linear between), and the forecast is its peak over the window itself: a 15-minute window
  on a falling afternoon is not planned for the whole hour's start, nor for the next hour.
- **Margin**: ``peak_factor``, or with ``error_quantile`` set, that quantile of the class's
  recent ``observed / forecast`` ratios (the last ``error_window`` observations, at least
  1): the margin the forecast has actually needed, not a constant.
- **Large error**: an observation off the forecast made for its hour by more than
  ``error_threshold`` (relative, against at least ``min_rate_rps``) for ``error_sustain``
  observations in a row asks for a re-plan (:meth:`DemandForecaster.surprises`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

from placement.planner import DemandClass

HOURS = 24


class ClassKey(NamedTuple):
    model: str
    min_quality: float
    slo_ms: float
    edge_region: str


@dataclass(frozen=True, slots=True)
class ForecastSettings:
    alpha_day: float = 0.5  # weight of the newest day in an hour's profile
    alpha_level: float = 0.2  # weight of the newest observation in the level
    max_level: float = 4.0
    peak_factor: float = 1.1
    error_threshold: float = 0.5  # |observed − forecast| / forecast
    error_sustain: int = 3
    min_rate_rps: float = 0.5  # below this, errors are measured against this rate
    within_hour: bool = False  # the window's peak on the hourly curve, not whole hours
    error_quantile: float = 0.0  # > 0: the margin is this quantile of observed / forecast
    error_window: int = 36  # ratios kept per class (6 hours of 10-minute observations)
    error_min_samples: int = 6  # fewer: ``peak_factor``


@dataclass(frozen=True, slots=True)
class Surprise:
    """A class whose recent observations missed the forecast: a reason to re-plan."""

    key: ClassKey
    forecast_rps: float
    observed_rps: float

    def explain(self) -> str:
        k = self.key
        return (f"{k.model}/q>={k.min_quality:g}/{k.slo_ms:g}ms/{k.edge_region}: observed "
                f"{self.observed_rps:.2f}/s against a forecast of {self.forecast_rps:.2f}/s")


@dataclass(slots=True)
class _ClassState:
    profile: list[float | None] = field(default_factory=lambda: [None] * HOURS)
    level: float = 1.0
    hour_index: int = -1  # hours since the epoch of the hour being accumulated
    hour_sum: float = 0.0
    hour_count: int = 0
    misses: int = 0
    last_forecast: float = 0.0
    last_observed: float = 0.0
    ratios: list[float] = field(default_factory=list)  # observed / forecast, newest last


def hour_of_day(now_s: float) -> int:
    return int(now_s // 3600) % HOURS


class DemandForecaster:
    """Learns each class's daily cycle from observed call rates; owns no clock."""

    def __init__(self, settings: ForecastSettings | None = None) -> None:
        self.settings = settings or ForecastSettings()
        self._classes: dict[ClassKey, _ClassState] = {}

    def observe(self, key: ClassKey, now_s: float, rate_rps: float) -> None:
        """One observed call rate of ``key`` at ``now_s``."""
        s = self.settings
        st = self._classes.setdefault(key, _ClassState())
        index = int(now_s // 3600)
        if index != st.hour_index:
            self._fold(st)
            st.hour_index, st.hour_sum, st.hour_count = index, 0.0, 0
        predicted = self._at(st, now_s)
        if predicted is not None:
            st.ratios = [*st.ratios, rate_rps / max(predicted, s.min_rate_rps)][-s.error_window:]
            off = abs(rate_rps - predicted) / max(predicted, s.min_rate_rps)
            st.misses = st.misses + 1 if off > s.error_threshold else 0
            st.last_forecast, st.last_observed = predicted, rate_rps
            base = st.profile[hour_of_day(now_s)]  # a fallback base would learn the shape
            if base is not None and base > 0:
                ratio = (1 - s.alpha_level) * st.level + s.alpha_level * rate_rps / base
                st.level = min(max(ratio, 1.0 / s.max_level), s.max_level)
        st.hour_sum += rate_rps
        st.hour_count += 1

    def _fold(self, st: _ClassState) -> None:
        """Fold the finished hour's mean into its profile slot (EWMA across days)."""
        if st.hour_count == 0:
            return
        h = st.hour_index % HOURS
        mean = st.hour_sum / st.hour_count
        old = st.profile[h]
        a = self.settings.alpha_day
        # The level measured this hour is folded in too: the profile keeps the day's shape.
        fresh = mean / st.level if st.level > 0 else mean
        st.profile[h] = fresh if old is None else (1 - a) * old + a * fresh

    def _base(self, st: _ClassState, hour: int) -> float | None:
        slot = st.profile[hour]
        if slot is not None:
            return slot
        seen = [p for p in st.profile if p is not None]
        if seen:
            return sum(seen) / len(seen)
        return st.hour_sum / st.hour_count if st.hour_count else None

    def _rate(self, st: _ClassState, hour: int) -> float | None:
        base = self._base(st, hour)
        return None if base is None else base * st.level

    def _at(self, st: _ClassState, t: float) -> float | None:
        """The forecast at ``t``: the hour's rate, or on the curve (``within_hour``)."""
        if not self.settings.within_hour:
            return self._rate(st, hour_of_day(t))
        x = t / 3600.0 - 0.5  # hour means sit at the middle of their hour
        h0 = math.floor(x)
        a, b = self._rate(st, h0 % HOURS), self._rate(st, (h0 + 1) % HOURS)
        if a is None or b is None:
            return None
        return a + (b - a) * (x - h0)

    def margin(self, key: ClassKey) -> float:
        """What the forecast is multiplied by: ``peak_factor`` or the error quantile."""
        s = self.settings
        st = self._classes.get(key)
        if s.error_quantile <= 0 or st is None or len(st.ratios) < s.error_min_samples:
            return s.peak_factor
        ranked = sorted(st.ratios)
        i = min(len(ranked) - 1, math.ceil(s.error_quantile * len(ranked)) - 1)
        return max(1.0, ranked[max(i, 0)])

    def rate(self, key: ClassKey, now_s: float) -> float:
        """The forecast call rate of ``key`` in the hour holding ``now_s`` (0 if unknown)."""
        st = self._classes.get(key)
        return 0.0 if st is None else self._rate(st, hour_of_day(now_s)) or 0.0

    def forecast(self, now_s: float, horizon_s: float) -> tuple[DemandClass, ...]:
        """Every known class at the peak of its forecast over ``[now, now + horizon]``."""
        hours = max(1, math.ceil(((now_s % 3600) + horizon_s) / 3600))
        # the curve is linear between hour middles: its peak is at an end or a middle
        first = math.floor(now_s / 3600.0 - 0.5) + 1
        knots = [now_s, now_s + horizon_s] + [
            (h + 0.5) * 3600.0 for h in range(first, first + min(hours, HOURS) + 1)
            if (h + 0.5) * 3600.0 < now_s + horizon_s]
        out = []
        for key in sorted(self._classes):
            if self.settings.within_hour:
                st = self._classes[key]
                peak = max((self._at(st, t) or 0.0) for t in knots)
            else:
                peak = max(self.rate(key, now_s + 3600 * i) for i in range(min(hours, HOURS)))
            out.append(DemandClass(key.model, key.min_quality, key.slo_ms, key.edge_region,
                                   peak * self.margin(key)))
        return tuple(out)

    def surprises(self) -> tuple[Surprise, ...]:
        """Classes whose last ``error_sustain`` observations all missed: re-plan now."""
        return tuple(Surprise(k, st.last_forecast, st.last_observed)
                     for k, st in sorted(self._classes.items())
                     if st.misses >= self.settings.error_sustain)
