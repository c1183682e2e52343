"""After the MILP: the pools a plan runs that it need not (issue 13).

Each HiGHS run stops at a few branch-and-bound nodes, and the relaxation's bound is weak
(integer GPUs, at least one per loaded pool), so which pools a plan runs is what the root's
heuristics found: one hour's demand (many-small-pools, hour 15) was planned at $5.70/h, and
at $6.88/h and $10.68/h with the memory headroom or the region-loss rule relaxed, which can
only lower the optimum. :func:`prune` is a local search on the plan found, under every rule
of the MILP (the same rules on fewer pools):

- the plan's pools alone, each free to load any variant that fits: counts and variants
  chosen again on the pools already chosen;
- then each of those pools, dearest first, taken out while the rest carry the demand more
  cheaply.

Each trial is the MILP of the problem restricted to those pools (a small model, solved by
``solve``) lifted back into the full model's columns and priced by the full objective (GPU
price, the spot rule's and shedding's penalties included), so no rule is traded for money:
a class the trial's pools leave on spot alone pays the spot rule's slack. Pure: the solver
is passed in (``placement.planner._solve``).

Built and off (``PlannerSettings.prune``): on the provisioned-cost day it moved no planner
day by more than $1 where measured, and default's was not (``benchmarks/RESULTS.md``,
2026-11-27, "which pools the MILP keeps").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from placement.plan_milp import Model, build

FloatArray = npt.NDArray[np.float64]
SAVES_USD = 1e-6  # per hour: a trial is taken only if cheaper by more
Solve = Callable[[Model], "FloatArray | None"]


def running(md: Model, x: FloatArray) -> list[str]:
    """The pools with GPUs in ``x``, dearest per hour first (ties by id)."""
    by_id = md.by_id
    used = [pid for pid, col in md.n.items() if round(x[col]) > 0]
    return sorted(used, key=lambda pid: (-by_id[pid].usd_per_gpu_hour * round(x[md.n[pid]]),
                                         pid))


def objective(md: Model, x: FloatArray) -> float:
    return float(np.dot(md.cost, x))


def lift(md: Model, sub: Model, xs: FloatArray) -> FloatArray | None:
    """``sub``'s solution in ``md``'s columns; None if it uses a flow ``md`` does not have
    (a class's candidate pools are chosen per problem: ``max_pools_per_class``)."""
    x = np.zeros(len(md.cost))
    for cols, sub_cols in ((md.n, sub.n), (md.y, sub.y), (md.m, sub.m), (md.t, sub.t),
                           (md.shed, sub.shed)):
        for key, col in sub_cols.items():
            x[cols[key]] = xs[col]  # type: ignore[index]
    for flow, col in sub.x.items():
        if flow in md.x:
            x[md.x[flow]] = xs[col]
        elif xs[col] > 1e-9:
            return None
    for ki, col in md.spot_slack.items():  # the spot rule as the full model prices it
        slack = sub.spot_slack.get(ki)
        x[col] = xs[slack] if slack is not None else float(ki in sub.forced_alone)
    return x


def prune(md: Model, x: FloatArray, solve: Solve) -> FloatArray:
    """``x`` or a cheaper plan on a subset of its pools (module doc)."""
    problem = md.problem
    pools = running(md, x)
    best, cost = x, objective(md, x)

    def trial(kept: set[str]) -> FloatArray | None:
        sub = build(dataclasses.replace(problem, pools=tuple(
            p for p in problem.pools if p.id in kept)), shed=bool(md.shed))
        xs = solve(sub)
        return None if xs is None else lift(md, sub, xs)

    kept = set(pools)
    for drop in ("", *pools):
        if (drop and drop not in kept) or not kept - {drop}:
            continue
        found = trial(kept - {drop})
        if found is not None and objective(md, found) < cost - SAVES_USD:
            best, cost = found, objective(md, found)
            kept = set(running(md, best))
    return best
