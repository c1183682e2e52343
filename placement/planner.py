"""Capacity planner: how many GPUs each pool runs and which variants each loads (issue 13).

Pure (no I/O, no clock); the solver is scipy's HiGHS (``scipy.optimize.milp``). A *pool* is
GPUs of one kind (cloud × region × accelerator × price class); every GPU of a pool loads the
same variants. The MILP (variables, objective, the rule families) is written by
:mod:`placement.plan_milp`; this module solves it.

When the solver finds no plan, the rule families are dropped one at a time and the first
whose removal makes the problem feasible is named (:class:`Infeasible`); with
``carry_what_fits``, a forecast the pools' GPU limits cannot carry (``max_gpus``: an outage
took a cloud's pools) is planned for what they can carry instead, each call/s left out at
``SHED_USD`` (``Plan.not_carried``). Large instances are solved twice (:func:`_optimise`):
restricted to the variants the LP relaxation loads, and in full; the cheaper plan is kept
and ``Plan.gap`` says how far it may be from optimal (against the relaxation's bound, which
is weak: integer GPUs). Each MILP run stops at ``node_limit`` branch-and-bound nodes, a
deterministic limit: the same problem gives the same plan on any host and under any load.
``time_limit_s`` is only a wall-clock safety net; a run it stops is counted in
``Plan.cut_short`` (the plan's why says so). For large fleets, ``full_milp=False`` skips the
full MILP and ``max_pools_per_class`` keeps each class's cheapest pools per call
(:func:`placement.plan_milp.candidates`): solve time at 10, 100 and 1,000 pools is measured
by ``python -m benchmarks.provisioned``; ``group_pools`` solves groups of nearby regions
apart (:mod:`placement.plan_regions`). Edges route each call to the deployment cheapest per
call within its SLO, not along the plan's flows: :func:`plan` and :func:`resize` check a
plan with that rule (:mod:`placement.plan_route`) and solve again for the calls it leaves
short (``route_rounds``; a round only when a class is short, restricted to what the last
plan and the relaxation load: :func:`_reoptimise`). Inputs and results are
:mod:`placement.plan_types`. Hysteresis (a new plan must pay for its churn) is
:mod:`placement.replan`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import Bounds, milp  # type: ignore[import-untyped]

from placement import plan_prune, plan_regions, plan_route
from placement.latency import COMPUTE_P95_FACTOR, MAX_RHO
from placement.plan_milp import ON_DEMAND, SHED_USD, SPOT_SLACK_USD, Model, allowed, build
from placement.plan_pool_loss import POOL_LOSS_USD
from placement.plan_types import (
    DemandClass,
    Infeasible,
    Plan,
    PlannerSettings,
    PlanPool,
    PlanVariant,
    PoolPlan,
    Problem,
    max_utilisation,
)

__all__ = ["DemandClass", "Infeasible", "Plan", "PlanPool", "PlanVariant", "PlannerSettings",
           "PoolPlan", "Problem", "evaluate", "max_utilisation", "plan", "resize"]

FloatArray = npt.NDArray[np.float64]
RELAX_TIME_FACTOR = 10  # an LP relaxation is not cut short like a MILP: it gives the bound
FAMILIES = ("spot", "region_loss", "memory", "max_gpus")
ROUTE_TOLERANCE = 1e-3  # share of the demand the edges' rule may leave short (plan_route)


def _variant(problem: Problem, name: str) -> PlanVariant:
    return next(v for v in problem.variants if v.name == name)


def _precheck(problem: Problem) -> Infeasible | None:
    s = problem.settings
    for k in problem.demand:
        if k.rate_rps <= 0:
            continue
        pairs = [(p, v) for p in problem.pools for v in problem.variants
                 if allowed(p, v) and v.model == k.model and v.quality >= k.min_quality]
        if not pairs:
            return Infeasible("quality", f"{k.key}: no pool may load a variant of quality "
                                         f">= {k.min_quality:g}")
        pairs = [(p, v) for p, v in pairs if s.load_everywhere
                 or v.memory_gb <= (1 - s.memory_headroom) * p.gpu_memory_gb]
        if not pairs:
            return Infeasible("memory", f"{k.key}: no variant of quality >= "
                                        f"{k.min_quality:g} fits a GPU with the headroom")
        best = min(problem.rtt_ms(k.edge_region, p.region)
                   + p.compute_ms(v) * COMPUTE_P95_FACTOR for p, v in pairs)
        if max(max_utilisation(problem.rtt_ms(k.edge_region, p.region), p.compute_ms(v),
                               p.concurrency_per_gpu, k.slo_ms - s.slo_margin_ms)
               for p, v in pairs) < min(s.tiers):
            return Infeasible("slo", f"{k.key}: best p95 on offer is {best:.0f} ms even idle, "
                                     f"SLO {k.slo_ms:g} ms")
    return None


@dataclass(frozen=True, slots=True)
class _Solution:
    x: FloatArray
    cost: float
    bound: float  # the solver's lower bound on the optimum of what it solved


def _solve(md: Model, drop: str = "", fixed: Plan | None = None, relax: bool = False,
           allow: set[tuple[str, str]] | None = None) -> _Solution | None:
    """One HiGHS run; None if infeasible. ``allow`` limits which (pool, variant) may load."""
    s = md.problem.settings
    lower = np.zeros(len(md.cost))
    upper = np.array(md.upper, dtype=float)
    if s.load_everywhere:
        for col in md.y.values():
            lower[col] = 1
        drop = drop or "memory"
    if allow is not None:
        for key, col in md.y.items():
            if key not in allow:
                upper[col] = 0
    if drop != "slo" and not s.load_everywhere:
        upper[list(_idle(md, allow))] = 0
    if fixed is not None:
        gpus, loaded = fixed.gpus(), fixed.loaded()
        for pid, col in md.n.items():
            lower[col] = upper[col] = gpus.get(pid, 0)
        for (pid, v), col in md.y.items():
            lower[col] = upper[col] = float(v in loaded.get(pid, frozenset()))
    options: dict[str, float] = {
        "time_limit": s.time_limit_s * (RELAX_TIME_FACTOR if relax else 1),
        "mip_rel_gap": s.mip_rel_gap}
    if s.node_limit > 0 and not relax:
        options["node_limit"] = s.node_limit
    res = milp(np.array(md.cost), integrality=np.zeros(len(md.cost)) if relax
               else np.array(md.integral),
               bounds=Bounds(lower, upper), constraints=md.rows.constraint(len(md.cost), drop),
               options=options)
    if res.status == 1:  # the wall-clock safety net (or an LP's iteration limit), not the nodes
        md.cut_short += 1
    if res.x is None:
        if res.status == 1:
            raise _OutOfTime("time_limit", f"no plan found within {s.time_limit_s:g} s (the "
                                           "wall-clock safety net)")
        if "HiGHS Status 16" in str(res.message):  # kSolutionLimit: the node limit
            raise _OutOfTime("node_limit", f"no plan found within {s.node_limit} "
                                           "branch-and-bound nodes")
        return None
    bound = getattr(res, "mip_dual_bound", None)
    return _Solution(np.asarray(res.x), float(res.fun),
                     float(res.fun if bound is None or relax else bound))


def _solve_within(md: Model) -> FloatArray | None:
    """:func:`_solve`'s plan; None when it finds none, for any reason."""
    try:
        found = _solve(md)
    except _OutOfTime:
        return None
    return None if found is None else found.x


def _idle(md: Model, allow: set[tuple[str, str]] | None) -> set[int]:
    """Columns that are 0 in some optimal plan of what :func:`_solve` is asked, fixed there so
    HiGHS's root (cuts, sub-MIP heuristics) works on a smaller model, the same optimum.

    A pool that may load no variant (``allow``) has no GPUs and no tier. A tier is
    dominated when the next tier up admits the same flows (no candidate's ρ* lies between
    them: the SLO rows let a pool at tier ``l`` serve exactly the flows with ρ* >= tier_l),
    and the higher tier carries more per GPU; so is every tier above the highest ρ* on the
    pool (it serves nothing). Only the highest tier under each candidate's ρ* is kept, and
    with ``pool_loss_boost`` the highest whose emergency level (tier + boost) is under it.
    """
    tiers = md.problem.settings.tiers
    s = md.problem.settings
    boost = s.pool_loss_boost if s.pool_loss else 0.0
    rhos: dict[str, list[float]] = {p.id: [] for p in md.problem.pools}
    for (_, pid, v), col in md.x.items():
        if allow is None or (pid, v) in allow:
            rhos[pid].append(md.rho[col])
    loads = {pid for pid, v in md.y if allow is None or (pid, v) in allow}
    out: set[int] = set()
    for pid, seen in rhos.items():
        if pid not in loads:
            out |= {md.n[pid], *(md.t[pid, li] for li in range(len(tiers))),
                    *(md.m[pid, li] for li in range(len(tiers)))}
            continue
        # a pool serving no flow may still hold a variant for the region-loss rule: one tier
        keep = {max((li for li, lvl in enumerate(tiers) if lvl <= rho + 1e-9), default=0)
                for rho in seen} or {0}
        if boost:  # the pool-loss rule's room at tier + boost must meet a class's ρ* too
            keep |= {max((li for li, lvl in enumerate(tiers)
                          if min(lvl + boost, MAX_RHO) <= rho + 1e-9), default=0)
                     for rho in seen}
        out |= {col for li in range(len(tiers)) if li not in keep
                for col in (md.t[pid, li], md.m[pid, li])}
    return out


def _support(md: Model, relaxed: FloatArray) -> set[tuple[str, str]]:
    """Per pool, the variants the LP relaxation loads most, as many as fit in memory."""
    s = md.problem.settings
    mem = {v.name: v.memory_gb for v in md.problem.variants}
    allow: set[tuple[str, str]] = set()
    for p in md.problem.pools:
        room = (1 - s.memory_headroom) * p.gpu_memory_gb
        ranked = sorted(((relaxed[col], v) for (pid, v), col in md.y.items()
                         if pid == p.id and relaxed[col] > 1e-6), reverse=True)
        for _, v in ranked:
            if s.load_everywhere or mem[v] <= room:
                allow.add((p.id, v))
                room -= mem[v]
    return allow


def _optimise(md: Model) -> tuple[FloatArray, float] | None:
    """The best plan found and its gap to the best bound; None if there is none.

    The full MILP's LP relaxation is weak (integer GPUs in many pools), so HiGHS can stall on
    a poor incumbent; a MILP restricted to the variants the relaxation loads (within memory)
    usually solves in seconds. The full MILP runs too unless the restricted plan is already
    within ``mip_rel_gap`` of the relaxation's bound; the cheaper of the two is kept.
    """
    relaxed = _solve(md, relax=True)
    if relaxed is None:
        return None
    bound, best = relaxed.bound, None
    allow = _support(md, relaxed.x)
    with contextlib.suppress(_OutOfTime):
        best = _solve(md, allow=allow)
        if not md.problem.settings.full_milp and (best is None or (
                _slack(md, best.x) > _slack(md, relaxed.x) + 0.5)):
            # the support stranded some rule: every variant on its pools and on every
            # on-demand pool a class may use
            by_id = md.by_id
            used = {pid for pid, _ in allow} | {pid for (_, pid, _) in md.x
                                                if by_id[pid].price_class == ON_DEMAND}
            wider = _solve(md, allow={key for key in md.y if key[0] in used})
            if wider is not None and (best is None or wider.cost < best.cost):
                best = wider
    # within mip_rel_gap of the GPU cost, not of an objective a spot-rule slack inflates
    full_wanted = md.problem.settings.full_milp or best is None
    if full_wanted and (best is None or best.cost - bound > md.problem.settings.mip_rel_gap
                        * (best.cost - _penalty(md, best.x)) + 1e-9):
        try:
            full = _solve(md)
        except _OutOfTime:
            if best is None:
                raise
            full = None
        if full is not None:
            bound = max(bound, full.bound)
            if best is None or full.cost < best.cost:
                best = full
        elif best is None:
            return None
    assert best is not None
    if md.problem.settings.prune:
        x = plan_prune.prune(md, best.x, _solve_within)
        best = _Solution(x, plan_prune.objective(md, x), best.bound)
    # The spot rule's slack and calls not carried are penalties, not money: the gap is
    # measured on GPU cost.
    cost = best.cost - _penalty(md, best.x)
    return best.x, min(1.0, max(0.0, (best.cost - bound) / cost)) if cost > 0 else 0.0


def _read(md: Model, x: FloatArray, gap: float = 0.0) -> Plan:
    problem = md.problem
    pools = []
    for p in problem.pools:
        gpus = round(x[md.n[p.id]])
        if gpus == 0:
            continue
        loaded = tuple(sorted(v for (pid, v), col in md.y.items() if pid == p.id and x[col] > .5))
        serves = tuple((problem.demand[ki].key, v, float(x[col]))
                       for (ki, pid, v), col in md.x.items() if pid == p.id and x[col] > 1e-9)
        work = sum(rps * p.compute_ms(_variant(problem, v)) / 1000.0 for _, v, rps in serves)
        cap = min((md.rho[col] for (_, pid, _), col in md.x.items()
                   if pid == p.id and x[col] > 1e-9), default=MAX_RHO)
        pools.append(PoolPlan(p.id, gpus, loaded, work / (gpus * p.concurrency_per_gpu), cap,
                              gpus * p.usd_per_gpu_hour, serves))
    pools.sort(key=lambda pp: (pp.usd_per_hour, pp.pool))
    alone = tuple(problem.demand[ki].key for ki in sorted(
        [*md.forced_alone, *(ki for ki, col in md.spot_slack.items() if x[col] > 0.5)]))
    shed = tuple((problem.demand[ki].key, float(x[col])) for ki, col in sorted(md.shed.items())
                 if x[col] > 1e-6)
    uncovered = tuple((problem.demand[ki].key, float(x[col]))
                      for ki, col in sorted(md.uncovered.items()) if x[col] > 1e-6)
    return Plan(tuple(pools), sum(pp.usd_per_hour for pp in pools), gap, alone,
                not_carried=shed, cut_short=md.cut_short, pool_loss_uncovered=uncovered)


def _slack(md: Model, x: FloatArray) -> float:
    return float(sum(x[col] for col in md.spot_slack.values()))


def _penalty(md: Model, x: FloatArray) -> float:
    """The objective's part that is not GPU cost: spot-rule slack, calls not carried and
    calls no other pool covers (pool loss)."""
    return (SPOT_SLACK_USD * _slack(md, x) + SHED_USD * float(sum(x[c] for c in md.shed.values()))
            + POOL_LOSS_USD * float(sum(x[c] for c in md.uncovered.values())))


class _OutOfTime(Exception):
    """A HiGHS run stopped by a limit before it found any plan (``constraint``: which)."""

    def __init__(self, constraint: str, detail: str) -> None:
        super().__init__(detail)
        self.constraint = constraint


def plan(problem: Problem) -> Plan | Infeasible:
    """The cheapest plan for ``problem``'s demand, or which constraint makes one impossible."""
    s = problem.settings
    if s.group_pools and len(problem.pools) > s.group_pools:
        plans = []
        for part in plan_regions.split(problem):
            found = plan(part)
            if isinstance(found, Infeasible):
                regions = sorted({p.region for p in part.pools})
                return Infeasible(found.constraint, f"regions {', '.join(regions)}: "
                                                    f"{found.detail}")
            plans.append(found)
        return plan_regions.join(plans)
    try:
        return _routed(problem, _plan)
    except _OutOfTime as exc:
        return Infeasible(exc.constraint, str(exc))


Solver = Callable[[Problem, Plan | None], Plan | Infeasible]


def _routed(problem: Problem, solve: Solver) -> Plan | Infeasible:
    """``solve(problem, None)``, solved again for what the edges' rule leaves short (module doc).

    A class the edges' cheapest-per-call rule leaves without room within its SLO on the plan
    (:func:`placement.plan_route.shortfall`: others found the room the plan kept for it
    cheaper) gets its shortfall added to its demand and the problem is solved again, up to
    ``route_rounds`` times; the plan that leaves least short at the true demand is kept
    (ties: the first, the cheapest). Its flows are those of the demand it was solved for.
    With ``route_drawn``, a round also plans the calls/s the rule sent each class to a
    (pool, variant) beyond the last plan's flow there (``Problem.drawn``): a class that
    took a pool cheaper per call pins it at its own ρ*, which more demand for the short
    class alone does not show the MILP. With ``route_unpin``, a round also solves without
    the (pool, variant) pairs a drawn class pins (:meth:`plan_route.Shortfall.pinning`) and
    keeps that plan when it leaves no more short (or within the tolerance) and costs less.
    Only a short class starts a round; a round is ``solve(asked, last plan)`` (a solver may
    start from the last plan: :func:`_plan` restricts the round to what it and the relaxation
    load), and the router's options are built once (:class:`placement.plan_route.Shortfall`).
    """
    found = solve(problem, None)
    rounds = problem.settings.route_rounds
    if isinstance(found, Infeasible) or rounds <= 0:
        return found
    tolerance = ROUTE_TOLERANCE * sum(max(k.rate_rps, 0.0) for k in problem.demand)
    check = plan_route.Shortfall(problem)
    routed = check.routed(found)
    short = check.short(routed)
    best, least, last, solves = found, sum(short.values()), found, 1
    cut = found.cut_short
    asked = problem
    for _ in range(rounds):
        if not short or least <= tolerance:
            break
        drawn = check.drawn(routed, last)
        asked = dataclasses.replace(asked, demand=tuple(
            dataclasses.replace(k, rate_rps=k.rate_rps + short.get(i, 0.0))
            for i, k in enumerate(asked.demand)),
            drawn=_drawn(asked, drawn))
        again = solve(asked, last)
        solves += 1
        if not isinstance(again, Infeasible):
            cut += again.cut_short
            routed = check.routed(again)
        pins = check.pinning(drawn, last) if problem.settings.route_unpin else set()
        if pins:  # the round without the pinned pairs, kept if no worse and cheaper
            unpinned = plan_route.without(asked, pins)
            alt = solve(unpinned, last)
            solves += 1
            if not isinstance(alt, Infeasible):
                cut += alt.cut_short
                alt_routed = check.routed(alt)
                alt_short = sum(check.short(alt_routed).values())
                if isinstance(again, Infeasible) or (
                        alt_short <= max(sum(check.short(routed).values()), tolerance)
                        + 1e-9 and alt.usd_per_hour < again.usd_per_hour - 1e-9):
                    again, asked, routed = alt, unpinned, alt_routed
        if isinstance(again, Infeasible):
            break
        last = again
        short = check.short(routed)
        if sum(short.values()) < least - 1e-9 or (
                sum(short.values()) <= max(least, tolerance) + 1e-9
                and again.usd_per_hour < best.usd_per_hour - 1e-9
                and problem.settings.route_unpin):
            best, least = again, sum(short.values())
    return dataclasses.replace(best, solves=solves, cut_short=cut)


def _drawn(asked: Problem, found: dict[tuple[int, str, str], float]
           ) -> tuple[tuple[int, str, str, float], ...]:
    """``asked.drawn`` with a round's finding added (``route_drawn``; the larger per pair)."""
    if not asked.settings.route_drawn:
        return asked.drawn
    merged = {(ki, pid, v): rps for ki, pid, v, rps in asked.drawn}
    for key, rps in found.items():
        merged[key] = max(merged.get(key, 0.0), rps)
    return tuple((*key, rps) for key, rps in sorted(merged.items()))


def _plan(problem: Problem, previous: Plan | None = None) -> Plan | Infeasible:
    """The cheapest plan; with ``previous`` (a route round), restricted first to what the
    last plan and the LP relaxation load (:func:`_reoptimise`), in full only if that finds
    nothing."""
    pre = _precheck(problem)
    if pre is not None:
        return pre
    md = build(problem)
    found = _reoptimise(md, previous) if previous is not None else None
    if found is None:
        found = _optimise(md)
    if found is not None:
        return _read(md, *found)
    if problem.settings.carry_what_fits:
        carried = _carry_what_fits(problem, previous)
        if carried is not None:
            return carried
    for family in FAMILIES:
        if family == "max_gpus":
            fixes = _solve(build(problem, gpu_limits=False)) is not None
        else:
            fixes = _solve(md, drop=family) is not None
        if fixes:
            return Infeasible(family, _FAMILY_DETAIL[family])
    return Infeasible("combined", "no single constraint family explains it; capacity, "
                                  "memory and placement rules conflict together")


def _carry_what_fits(problem: Problem, previous: Plan | None) -> Plan | None:
    """The pools' GPU limits cannot carry the forecast (an outage takes a cloud's pools, a
    burst passes every limit): the cheapest plan that carries the most calls/s within SLO,
    what it cannot carry in ``Plan.not_carried``. Refusing instead keeps the plan in force,
    made for pools that may be down and a demand that has changed. None when even that has
    no plan: shedding frees only the demand rows, so a plan then exists exactly when the
    other rules (memory, region loss, spot) hold together on the pools' limits, whichever
    family the diagnosis would name (many-small-pools' afternoon was named ``memory``: with
    the memory rule dropped, its limits carried the forecast). Tried before that diagnosis,
    so a refusal costs no family solves."""
    md = build(problem, shed=True)
    found = _reoptimise(md, previous) if previous is not None else None
    if found is None:
        found = _optimise(md)
    return None if found is None else _read(md, *found)


def _reoptimise(md: Model, previous: Plan) -> tuple[FloatArray, float] | None:
    """A route round's plan: the MILP restricted to the (pool, variant) pairs ``previous``
    loads and those the LP relaxation of the new demand loads; None when that finds no plan
    (then the full :func:`_optimise`). A round adds a few classes' shortfall to a plan's
    demand: the full MILP (the time limit, on a 10-pool fleet, for a plan it mostly keeps)
    is not run again. The gap is against the relaxation's bound."""
    relaxed = _solve(md, relax=True)
    if relaxed is None:
        return None
    loaded = previous.loaded()
    allow = _support(md, relaxed.x) | {key for key in md.y
                                        if key[1] in loaded.get(key[0], frozenset())}
    try:
        found = _solve(md, allow=allow)
    except _OutOfTime:
        return None
    if found is None:
        return None
    cost = found.cost - _penalty(md, found.x)
    return found.x, min(1.0, max(0.0, (found.cost - relaxed.bound) / cost)) if cost > 0 else 0.0


_FAMILY_DETAIL = {
    "spot": "some class has on-demand capacity nowhere within its SLO",
    "region_loss": "some (model, quality floor) cannot be loaded in two regions",
    "memory": "the variants needed do not fit GPU memory with the headroom",
    "max_gpus": "the pools' GPU limits cannot carry the forecast within SLO",
}


def resize(problem: Problem, current: Plan) -> Plan | Infeasible:
    """The cheapest GPU counts for ``problem``'s demand loading nothing ``current`` does not.

    Right-sizing between full plans: a MILP over GPUs per pool with each pool's variants
    limited to what it loads now (a variant may be unloaded, none loaded), so it solves
    fast and changes no placement the forecast does not force. Infeasible when the demand
    needs a load (then :func:`plan`).
    """
    loaded = current.loaded()

    def counts(asked: Problem, previous: Plan | None) -> Plan | Infeasible:
        md = build(asked)
        allow = {key for key in md.y if key[1] in loaded.get(key[0], frozenset())}
        return _solve_current(md, "the current variants cannot serve this forecast",
                              allow=allow)

    return _routed(problem, counts)


def evaluate(problem: Problem, current: Plan) -> Plan | Infeasible:
    """``current``'s GPUs and variants under ``problem``'s demand (flows re-optimised)."""
    return _solve_current(build(problem), "the current placement cannot serve this forecast",
                          fixed=current)


def _solve_current(md: Model, infeasible: str, fixed: Plan | None = None,
                   allow: set[tuple[str, str]] | None = None) -> Plan | Infeasible:
    """Solve ``md`` with ``fixed``/``allow`` (as :func:`_solve`) as a plan, or say why not
    (``infeasible``: why the current placement cannot serve the forecast)."""
    try:
        found = _solve(md, fixed=fixed, allow=allow)
    except _OutOfTime as exc:
        return Infeasible(exc.constraint, str(exc))
    if found is None:
        return Infeasible("current", infeasible)
    return _read(md, found.x)
