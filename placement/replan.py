"""Re-planning with hysteresis: a new capacity plan must pay for the churn it causes.

:func:`decide` solves the optimum for the forecast and re-evaluates the current placement
under it (:func:`placement.planner.evaluate`). The proposal is adopted when the current
placement no longer serves the forecast within SLO, or when ``saving × horizon_h`` exceeds
the churn: ``usd_per_gpu_change`` per GPU added or removed plus ``usd_per_variant_change``
per variant loaded or unloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from placement.planner import Infeasible, Plan, Problem, evaluate, plan


@dataclass(frozen=True, slots=True)
class ChurnCost:
    """What changing the placement costs, against what the new plan saves over ``horizon_h``."""

    usd_per_gpu_change: float = 0.5  # cold start / drain of one GPU added or removed
    usd_per_variant_change: float = 0.1  # one load or unload
    horizon_h: float = 1.0  # until the next scheduled re-plan

    def of(self, before: Plan, after: Plan) -> float:
        g0, g1, l0, l1 = before.gpus(), after.gpus(), before.loaded(), after.loaded()
        gpu = sum(abs(g1.get(p, 0) - g0.get(p, 0)) for p in set(g0) | set(g1))
        var = sum(len(l1.get(p, frozenset()) ^ l0.get(p, frozenset())) for p in set(l0) | set(l1))
        return gpu * self.usd_per_gpu_change + var * self.usd_per_variant_change


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
        return Decision(True, "no current plan", proposed, 0.0, 0.0)
    now = evaluate(problem, current)
    cost = churn.of(current, proposed)
    if isinstance(now, Infeasible):
        return Decision(True, "the current plan no longer serves the forecast", proposed,
                        0.0, cost)
    saving = (now.usd_per_hour - proposed.usd_per_hour) * churn.horizon_h
    if saving > cost:
        return Decision(True, f"saves ${saving:.2f} over {churn.horizon_h:g} h, churn "
                              f"${cost:.2f}", proposed, saving, cost)
    return Decision(False, f"saving ${saving:.2f} over {churn.horizon_h:g} h does not pay for "
                           f"churn ${cost:.2f}", now, saving, cost)
