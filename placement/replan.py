"""Re-planning with hysteresis: a new capacity plan must pay for the churn it causes.

:func:`decide` solves the optimum for the forecast and re-evaluates the current placement
under it (:func:`placement.planner.evaluate`). The proposal is adopted when the current
placement no longer serves the forecast within SLO (by its flows, or as the edges would
route it: :class:`placement.plan_route.Shortfall` leaves more short than the proposal's), or
when ``saving × horizon_h`` exceeds the churn: ``usd_per_gpu_change`` per GPU added or
removed, plus each GPU added's own price for ``cold_start_s`` (billed while it boots and
serves nothing), plus ``usd_per_variant_change`` per variant loaded or unloaded. A flat
price per GPU change that is above a cheap GPU's hourly price never lets that GPU go:
``cold_start_s`` prices a change by what it costs on the bill instead.

:func:`right_size` is the same decision for :func:`placement.planner.resize` (GPU counts for
the variants already loaded), cheap enough to run between full plans; :func:`revise` runs
the one a :class:`placement.plan_cadence.Due` asks for (a right-sizing that needs a variant
loaded becomes a full plan), for the live loop and the provisioned-cost day alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from placement.plan_route import Shortfall
from placement.planner import (
    ROUTE_TOLERANCE,
    Infeasible,
    Plan,
    Problem,
    evaluate,
    plan,
    resize,
)


@dataclass(frozen=True, slots=True)
class ChurnCost:
    """What changing the placement costs, against what the new plan saves over ``horizon_h``."""

    usd_per_gpu_change: float = 0.5  # cold start / drain of one GPU added or removed
    usd_per_variant_change: float = 0.1  # one load or unload
    horizon_h: float = 1.0  # until the next scheduled re-plan
    cold_start_s: float = 0.0  # a GPU added is billed this long before it serves

    def of(self, before: Plan, after: Plan) -> float:
        g0, g1, l0, l1 = before.gpus(), after.gpus(), before.loaded(), after.loaded()
        price = {pp.pool: pp.usd_per_hour / pp.gpus for pp in (*before.pools, *after.pools)
                 if pp.gpus > 0}
        gpu = sum(abs(g1.get(p, 0) - g0.get(p, 0)) for p in set(g0) | set(g1))
        booting = sum(max(0, g1.get(p, 0) - g0.get(p, 0)) * price.get(p, 0.0) for p in g1)
        var = sum(len(l1.get(p, frozenset()) ^ l0.get(p, frozenset())) for p in set(l0) | set(l1))
        return (gpu * self.usd_per_gpu_change + booting * self.cold_start_s / 3600.0
                + var * self.usd_per_variant_change)


@dataclass(frozen=True, slots=True)
class Decision:
    adopt: bool
    reason: str
    plan: Plan  # the plan to run: the proposal if adopted, else the current one re-evaluated
    saving_usd: float
    churn_usd: float


def decide(problem: Problem, current: Plan | None, churn: ChurnCost) -> Decision | Infeasible:
    """Re-plan with hysteresis: adopt the optimum only if it pays for its churn."""
    proposed = plan(problem)
    if isinstance(proposed, Infeasible):
        return proposed
    if current is None:
        return _noted(Decision(True, "no current plan", proposed, 0.0, 0.0), proposed)
    return _noted(_against(problem, current, proposed, churn), proposed)


def right_size(problem: Problem, current: Plan, churn: ChurnCost) -> Decision | Infeasible:
    """GPU counts re-sized for the forecast with today's variants, with the same hysteresis;
    :class:`Infeasible` when the forecast needs a variant loaded (then :func:`decide`)."""
    proposed = resize(problem, current)
    if isinstance(proposed, Infeasible):
        return proposed
    saving = (current.usd_per_hour - proposed.usd_per_hour) * churn.horizon_h
    cost = churn.of(current, proposed)
    if saving > cost:  # adopted whether or not the current plan still serves: no evaluate
        return _noted(Decision(True, f"right-sizing saves ${saving:.2f} over "
                                     f"{churn.horizon_h:g} h, churn ${cost:.2f}", proposed,
                               saving, cost), proposed)
    return _noted(_against(problem, current, proposed, churn), proposed)


def _noted(d: Decision | Infeasible, proposed: Plan) -> Decision | Infeasible:
    """``d`` whose reason says when the wall-clock safety net stopped a solve of the
    proposal (``Plan.cut_short``): that decision depends on the host's load."""
    if isinstance(d, Infeasible) or not proposed.cut_short:
        return d
    return dataclasses.replace(d, reason=f"{d.reason}; {proposed.cut_short_note()}")


def _against(problem: Problem, current: Plan, proposed: Plan,
             churn: ChurnCost) -> Decision | Infeasible:
    now = evaluate(problem, current)
    cost = churn.of(current, proposed)
    if isinstance(now, Infeasible):
        return Decision(True, "the current plan no longer serves the forecast", proposed,
                        0.0, cost)
    if problem.settings.route_rounds > 0:  # served by its flows, but not as edges route
        check = Shortfall(problem)
        short_now = sum(check(now).values())
        if short_now > sum(check(proposed).values()) + ROUTE_TOLERANCE * sum(
                max(k.rate_rps, 0.0) for k in problem.demand):
            return Decision(True, f"the edges' routing leaves {short_now:.2f} calls/s of the "
                                  "current plan outside their SLO", proposed, 0.0, cost)
    saving = (now.usd_per_hour - proposed.usd_per_hour) * churn.horizon_h
    if saving > cost:
        return Decision(True, f"saves ${saving:.2f} over {churn.horizon_h:g} h, churn "
                              f"${cost:.2f}", proposed, saving, cost)
    return Decision(False, f"saving ${saving:.2f} over {churn.horizon_h:g} h does not pay for "
                           f"churn ${cost:.2f}", now, saving, cost)


def revise(problem: Problem, current: Plan | None, churn: ChurnCost,
           resize: bool) -> Decision | Infeasible:
    """A right-sizing (``resize``, with a current plan) or else a full plan; a right-sizing
    the forecast cannot meet with the variants loaded is a full plan too."""
    if resize and current is not None:
        d = right_size(problem, current, churn)
        if not isinstance(d, Infeasible):
            return d
    return decide(problem, current, churn)
