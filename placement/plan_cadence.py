"""When the capacity loop re-plans, and for what demand: one rule, two callers.

:class:`Cadence` is run by placement's capacity loop (:mod:`services.placement.capacity`,
every ``observe_s`` with the call rates the edges report) and by the provisioned-cost day's
planner fleet (:mod:`benchmarks.costsim.provisioned_fleets`, every simulated bucket with
the bucket's rates): the simulated day measures the rule placement runs. Pure: no clock,
times are passed in on the forecast's axis (seconds since the epoch, UTC).

Each :meth:`Cadence.observe` says which re-plan is due now, if any (the first that holds):

1. **forecast error**: the forecaster is fed each class's mean rate over every
   ``forecast_every_s`` window (its error window and surprise rule count such
   observations); a sustained error (:meth:`DemandForecaster.surprises`) asks for a full
   plan at once, and leaves the schedule where it was;
2. the **first plan**; a change in the pools that are **down** (an outage starts or ends);
3. the **schedule**: a full plan at every ``k · plan_every_s − lead_s`` (``lead_s``: a GPU
   requested then serves when the window starts);
4. a **new class**: one the demand has and the last plan did not;
5. **drift** (``react_tolerance > 0``): a class observed above the calls/s the plan in force
   serves it, by more than the tolerance and three standard deviations of a Poisson count
   over ``count_window_s`` (noise is no drift): GPU counts right-sized at once, as an HPA
   would scale;
6. **right-sizing** (``resize_every_s > 0``): GPU counts for the variants loaded, at every
   ``k · resize_every_s − lead_s`` (:func:`placement.replan.revise`).

Event re-plans (1, 4, 5) come no sooner than ``min_replan_s`` after the last solve. A plan
covers the next ``resize_every_s`` (else ``plan_every_s``) plus ``lead_s``.

:meth:`Cadence.demand` is what a plan is solved for: each class's forecast peak over the
window × the forecaster's margin; a surprised class at its observed rate × margin (the
forecast is off, in either direction); reacting, each class at least its highest rate
observed over the last ``react_window_s`` × margin (so a class the forecaster has not been
fed yet is planned too); classes below ``min_class_rps`` left out (a stray call is not
demand: it rides on what is loaded).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from placement.forecast import ClassKey, DemandForecaster
from placement.plan_types import DemandClass, Plan


@dataclass(frozen=True, slots=True)
class CadenceSettings:
    plan_every_s: float = 3600.0
    lead_s: float = 0.0
    resize_every_s: float = 0.0  # 0: GPU counts change only with full plans
    forecast_every_s: float = 600.0
    react_tolerance: float = 0.0  # 0: no drift reaction, no observed floor under the plan
    react_window_s: float = 60.0  # the observed floor's window (the newest always counts)
    min_replan_s: float = 0.0
    min_class_rps: float = 0.0

    @property
    def horizon_s(self) -> float:
        """What a scheduled plan or a right-sizing covers."""
        return (self.resize_every_s or self.plan_every_s) + self.lead_s

    @property
    def event_horizon_s(self) -> float:
        """What a plan after a surprise, an outage, a new class or drift covers."""
        return self.horizon_s if self.resize_every_s else self.plan_every_s


@dataclass(frozen=True, slots=True)
class Due:
    """A re-plan due now: a full plan, or GPU counts for the variants loaded (``resize``)."""

    kind: str  # first, surprise, outage, schedule, new class, drift, resize
    reason: str
    horizon_s: float
    resize: bool = False

    def __str__(self) -> str:
        return self.reason


def class_key(d: DemandClass) -> ClassKey:
    return ClassKey(d.model, d.min_quality, d.slo_ms, d.edge_region)


class Cadence:
    """The re-plan schedule and the demand a plan is made for; owns the forecaster's feed."""

    def __init__(self, settings: CadenceSettings, forecaster: DemandForecaster) -> None:
        self.settings = settings
        self.forecaster = forecaster
        self._window: int | None = None  # the forecast window being summed
        self._sums: dict[ClassKey, float] = {}
        self._n = 0
        self._recent: list[tuple[float, Mapping[ClassKey, float]]] = []
        self._next_plan_s: float | None = None
        self._next_resize_s = math.inf
        self._down: frozenset[str] = frozenset()
        self._last_solve_s = -math.inf
        self._planned_classes: frozenset[ClassKey] = frozenset()
        self._planned_rps: dict[str, float] | None = None  # per class key, in the plan in force

    def begin(self, now_s: float) -> Due:
        """Start the schedule at ``now_s``: the first plan is due."""
        s = self.settings
        self._next_plan_s = _next_on_grid(now_s, s.plan_every_s, s.lead_s)
        if s.resize_every_s:
            self._next_resize_s = _next_on_grid(now_s, s.resize_every_s, s.lead_s)
        return Due("first", "first plan", s.horizon_s)

    def observe(self, now_s: float, rates: Mapping[ClassKey, float], step_s: float,
                count_window_s: float | None = None,
                down: frozenset[str] = frozenset()) -> Due | None:
        """Calls/s per class observed over the last ``step_s`` (counted over
        ``count_window_s``, default ``step_s``); the re-plan due now, if any."""
        s = self.settings
        half = step_s / 2
        for k, r in rates.items():
            self._sums[k] = self._sums.get(k, 0.0) + r
        self._n += 1
        self._recent = [(t, r) for t, r in self._recent if t > now_s - s.react_window_s + 1e-9]
        self._recent.append((now_s, dict(rates)))
        window = math.floor(now_s / s.forecast_every_s)
        if window != self._window:
            self._window = window
            for k, total in self._sums.items():  # the mean rate of the window just ended
                self.forecaster.observe(k, now_s - half, total / self._n)
            self._sums, self._n = {}, 0
            surprised = self.forecaster.surprises()
            if surprised and self._may_react(now_s):
                return Due("surprise", "forecast error: " + "; ".join(
                    x.explain() for x in surprised), s.event_horizon_s)
        if self._next_plan_s is None:
            due: Due | None = self.begin(now_s)
        elif down != self._down:
            due = Due("outage", f"pools down: {', '.join(sorted(down)) or 'none'}",
                      s.event_horizon_s)
        elif now_s >= self._next_plan_s - half:
            due = Due("schedule", "schedule", s.horizon_s)
        else:
            due = self._event(now_s, rates, count_window_s or step_s)
            if due is None and s.resize_every_s and now_s >= self._next_resize_s - half:
                due = Due("resize", "right-sizing", s.horizon_s, resize=True)
        self._down = down
        assert self._next_plan_s is not None
        while self._next_plan_s <= now_s + half:
            self._next_plan_s += s.plan_every_s
        while self._next_resize_s <= now_s + half:
            self._next_resize_s += s.resize_every_s
        return due

    def _may_react(self, now_s: float) -> bool:
        return now_s - self._last_solve_s >= self.settings.min_replan_s

    def _event(self, now_s: float, rates: Mapping[ClassKey, float],
               count_window_s: float) -> Due | None:
        if not self._may_react(now_s):
            return None
        s = self.settings
        new = sorted(d.key for d in self.demand(now_s, s.event_horizon_s)
                     if class_key(d) not in self._planned_classes)
        if new:
            return Due("new class", "new demand class: " + ", ".join(new), s.event_horizon_s)
        above = self.drifted(rates, count_window_s)
        if above:
            return Due("drift", "observed above the plan: " + ", ".join(above),
                       s.event_horizon_s, resize=True)
        return None

    def drifted(self, rates: Mapping[ClassKey, float], count_window_s: float) -> list[str]:
        """Classes observed above what the plan in force serves them, beyond the tolerance
        and three standard deviations of a Poisson count over ``count_window_s``."""
        tol = self.settings.react_tolerance
        if not tol or self._planned_rps is None:
            return []
        out = []
        for k, r in rates.items():
            key = DemandClass(*k, 0.0).key
            want = self._planned_rps.get(key, 0.0)
            if r > want * (1 + tol) + 3.0 * math.sqrt(want / count_window_s) + 1e-6:
                out.append(key)
        return out

    def demand(self, now_s: float, horizon_s: float) -> tuple[DemandClass, ...]:
        """What a plan made at ``now_s`` for ``[now, now + horizon]`` is solved for."""
        s, fc = self.settings, self.forecaster
        observed = {x.key: x.observed_rps for x in fc.surprises()}
        rates = {class_key(d): d.rate_rps for d in fc.forecast(now_s, horizon_s)}
        for k, r in observed.items():
            rates[k] = r * fc.margin(k)
        if s.react_tolerance and self._recent:
            seen = sorted({k for _, r in self._recent for k in r})
            for k in seen:
                floor = fc.margin(k) * max(r.get(k, 0.0) for _, r in self._recent)
                rates[k] = max(rates.get(k, 0.0), floor)
        return tuple(DemandClass(*k, r) for k, r in rates.items() if r >= s.min_class_rps)

    def solved(self, now_s: float, demand: tuple[DemandClass, ...] | list[DemandClass],
               plan: Plan | None) -> None:
        """A solve at ``now_s`` for ``demand``; ``plan``: the plan now in force (None: no
        plan came of it, the one before stays)."""
        self._last_solve_s = now_s
        self._planned_classes = frozenset(class_key(d) for d in demand)
        if plan is not None:
            planned: dict[str, float] = {}
            for pp in plan.pools:
                for key, _, rps in pp.serves:
                    planned[key] = planned.get(key, 0.0) + rps
            self._planned_rps = planned


def _next_on_grid(now_s: float, every_s: float, lead_s: float) -> float:
    """The first ``k · every_s − lead_s`` after ``now_s``."""
    return (math.floor((now_s + lead_s) / every_s) + 1) * every_s - lead_s
