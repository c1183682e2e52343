"""Capacity planner: how many GPUs each pool runs and which variants each loads (issue 13).

Pure (no I/O, no clock); the solver is scipy's HiGHS (``scipy.optimize.milp``). A *pool* is
GPUs of one kind (cloud × region × accelerator × price class); every GPU of a pool loads the
same variants. Variables, with ``k`` a demand class (model, quality floor, SLO, edge region):

- ``n[p]`` integer GPUs; ``y[p,v]`` binary, variant ``v`` loaded on pool ``p``;
- ``t[p,l]`` binary, pool ``p`` runs at utilisation tier ``l`` (``settings.tiers``), and
  ``m[p,l]`` (continuous, ``<= max_gpus·t[p,l]``), its GPUs counted at that tier
  (``n[p] = Σ_l m[p,l]``);
- ``x[k,p,v] >= 0`` calls/s of ``k`` served by ``v`` on ``p``.

Minimise ``Σ_p usd_per_gpu_hour(p) · n[p]`` (plus a tiny cost per loaded variant) subject to

- **demand**: ``Σ_{p,v} x[k,p,v] = rate(k)``; ``x[k,p,v] <= rate(k) · y[p,v]``; ``y <= n``;
- **SLO**: ``x[k,p,v] <= rate(k) · Σ_{l : tier_l <= ρ*(k,p,v)} t[p,l]``, ``Σ_l t[p,l] <= 1``,
  where ``ρ*`` is the highest utilisation at which the brain's p95 estimate
  (:mod:`placement.latency`: ``rtt + compute·ρ/(c·(1−ρ)) + 1.3·compute``, an M/M/c-style
  queue with ``c`` = one GPU's concurrency, conservative for pools of several GPUs) stays
  within the class's SLO: ``ρ* = a/(1+a)``, ``a = c·(slo − rtt − 1.3·compute)/compute``;
- **capacity**: ``Σ x[k,p,v]·compute(p,v)/1000 <= c·(1 − reclaim_risk(p))·Σ_l tier_l·m[p,l]``
  (spot GPUs count only for the share the cloud is expected to leave us);
- **memory**: ``Σ_v y[p,v]·footprint(v) <= (1 − headroom)·gpu_memory(p)``;
- **region loss** (``survive_region_loss``): for each (model, quality floor) with demand and
  each region ``R``, some variant meeting the floor is loaded on a pool outside ``R`` —
  written as "loaded in at least two regions";
- **spot**: each class with demand has a feasible variant loaded on an on-demand pool.

When the solver finds no plan, the families above are dropped one at a time and the first
whose removal makes the problem feasible is named (:class:`Infeasible`); with
``carry_what_fits``, a forecast the pools' GPU limits cannot carry (``max_gpus``: an outage
took a cloud's pools) is planned for what they can carry instead, each call/s left out at
``SHED_USD`` (``Plan.not_carried``). Large instances
are solved twice (:func:`_optimise`): restricted to the variants the LP relaxation loads, and
in full; the cheaper plan is kept and ``Plan.gap`` says how far it may be from optimal
(against the relaxation's bound, which is weak: integer GPUs). Each MILP run stops at
``node_limit`` branch-and-bound nodes, a deterministic limit: the same problem gives the same
plan on any host and under any load. ``time_limit_s`` is only a wall-clock safety net; a run
it stops is counted in ``Plan.cut_short`` (the plan's why says so). For large
fleets, ``full_milp=False`` skips the full MILP and ``max_pools_per_class`` keeps each class's
cheapest pools per call (see :func:`_candidates`): solve time at 10, 100 and 1,000 pools is
measured by ``python -m benchmarks.provisioned``; ``group_pools`` solves groups of nearby
regions apart (:mod:`placement.plan_regions`). Edges route each call to the deployment
cheapest per call within its SLO, not along the plan's flows: :func:`plan` and :func:`resize`
check a plan with that rule (:mod:`placement.plan_route`) and solve again for the calls it
leaves short (``route_rounds``; a round only when a class is short, restricted to what the
last plan and the relaxation load: :func:`_reoptimise`). Inputs and results are
:mod:`placement.plan_types`. Hysteresis (a new plan must pay for its churn) is
:mod:`placement.replan`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.optimize import Bounds, LinearConstraint, milp  # type: ignore[import-untyped]
from scipy.sparse import coo_matrix  # type: ignore[import-untyped]

from placement import plan_regions, plan_route
from placement.latency import COMPUTE_P95_FACTOR, MAX_RHO
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

ON_DEMAND = "on-demand"
LOAD_TIEBREAK_USD = 1e-4  # per loaded variant: never load what serves nothing
FloatArray = npt.NDArray[np.float64]
GPU_BOUND = 100_000.0  # GPUs per pool when its own limit is set aside (diagnosis only)
RELAX_TIME_FACTOR = 10  # an LP relaxation is not cut short like a MILP: it gives the bound
SPOT_SLACK_USD = 1_000.0  # per hour, per class left on spot alone (spot_rule_where_possible)
SHED_USD = 10_000.0  # per hour, per call/s a plan cannot carry (carry_what_fits)
FAMILIES = ("spot", "region_loss", "memory", "max_gpus")
ROUTE_TOLERANCE = 1e-3  # share of the demand the edges' rule may leave short (plan_route)


class _Rows:
    """Sparse constraint rows grouped by family, so a family can be dropped."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, int, float]] = []
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.family: list[str] = []

    def add(self, coefs: Mapping[int, float], lb: float, ub: float, family: str) -> None:
        row = len(self.lb)
        self.entries.extend((row, col, val) for col, val in coefs.items())
        self.lb.append(lb)
        self.ub.append(ub)
        self.family.append(family)

    def constraint(self, n_vars: int, drop: str) -> LinearConstraint:
        keep = [i for i, f in enumerate(self.family) if f != drop]
        index = {r: i for i, r in enumerate(keep)}
        ents = [(index[r], c, v) for r, c, v in self.entries if r in index]
        a = coo_matrix(([e[2] for e in ents], ([e[0] for e in ents], [e[1] for e in ents])),
                       shape=(len(keep), n_vars)).tocsr()
        return LinearConstraint(a, [self.lb[i] for i in keep], [self.ub[i] for i in keep])


@dataclass
class _Model:
    problem: Problem
    cost: list[float] = field(default_factory=list)
    integral: list[int] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)
    n: dict[str, int] = field(default_factory=dict)
    y: dict[tuple[str, str], int] = field(default_factory=dict)
    m: dict[tuple[str, int], int] = field(default_factory=dict)
    x: dict[tuple[int, str, str], int] = field(default_factory=dict)
    rho: dict[int, float] = field(default_factory=dict)  # per x column: ρ* of its class
    spot_slack: dict[int, int] = field(default_factory=dict)  # class -> its slack column
    shed: dict[int, int] = field(default_factory=dict)  # class -> its calls/s not carried
    forced_alone: list[int] = field(default_factory=list)  # classes no on-demand pool serves
    cut_short: int = 0  # HiGHS runs the wall-clock safety net stopped (Plan.cut_short)

    @property
    def by_id(self) -> dict[str, PlanPool]:
        return {p.id: p for p in self.problem.pools}
    rows: _Rows = field(default_factory=_Rows)

    def var(self, cost: float, integral: bool, upper: float) -> int:
        self.cost.append(cost)
        self.integral.append(int(integral))
        self.upper.append(upper)
        return len(self.cost) - 1


def _allowed(p: PlanPool, v: PlanVariant) -> bool:
    return not p.variants or v.name in p.variants


def _build(problem: Problem, gpu_limits: bool = True, shed: bool = False) -> _Model:
    """The MILP (module doc); ``shed``: each class may leave calls/s uncarried at
    ``SHED_USD`` per call/s-hour (a plan for what the pools can carry, ``carry_what_fits``)."""
    s = problem.settings
    md = _Model(problem)
    t: dict[tuple[str, int], int] = {}
    for p in problem.pools:
        cap = float(p.max_gpus) if gpu_limits else GPU_BOUND  # also the big-M of m ≤ cap·t
        md.n[p.id] = md.var(p.usd_per_gpu_hour, True, cap)
        for v in problem.variants:
            if _allowed(p, v):
                md.y[p.id, v.name] = md.var(LOAD_TIEBREAK_USD, True, 1)
                md.rows.add({md.y[p.id, v.name]: 1.0, md.n[p.id]: -1.0}, -math.inf, 0, "link")
        for li in range(len(s.tiers)):
            t[p.id, li] = md.var(0.0, True, 1)
            md.m[p.id, li] = md.var(0.0, False, cap)  # = n[p] at the chosen tier, else 0
            md.rows.add({md.m[p.id, li]: 1.0, t[p.id, li]: -cap}, -math.inf, 0, "link")
        md.rows.add({t[p.id, li]: 1.0 for li in range(len(s.tiers))}, -math.inf, 1, "link")
        md.rows.add({md.n[p.id]: 1.0, **{md.m[p.id, li]: -1.0 for li in range(len(s.tiers))}},
                    0, 0, "link")
        mem = {md.y[p.id, v.name]: v.memory_gb for v in problem.variants if (p.id, v.name) in md.y}
        md.rows.add(mem, -math.inf, (1 - s.memory_headroom) * p.gpu_memory_gb, "memory")
    work: dict[str, dict[int, float]] = defaultdict(dict)
    pairs = _pairs(problem)
    for ki, k in enumerate(problem.demand):
        if k.rate_rps <= 0:
            continue
        served: dict[int, float] = {}
        for p, v, rho in _candidates(problem, k, pairs):
            tiers = [li for li, lvl in enumerate(s.tiers) if lvl <= rho + 1e-9]
            xi = md.x[ki, p.id, v.name] = md.var(0.0, False, k.rate_rps)
            md.rho[xi] = rho
            served[xi] = 1.0
            md.rows.add({xi: 1.0, md.y[p.id, v.name]: -k.rate_rps}, -math.inf, 0, "link")
            md.rows.add({xi: 1.0, **{t[p.id, li]: -k.rate_rps for li in tiers}}, -math.inf,
                        0, "slo")
            work[p.id][xi] = p.compute_ms(v) / 1000.0
        if shed:
            md.shed[ki] = md.var(SHED_USD, False, k.rate_rps)
            served[md.shed[ki]] = 1.0
        md.rows.add(served, k.rate_rps, k.rate_rps, "demand")
    for p in problem.pools:
        share = p.concurrency_per_gpu * (1.0 - p.reclaim_risk)
        coefs = dict(work[p.id])
        for li, lvl in enumerate(s.tiers):
            coefs[md.m[p.id, li]] = -share * lvl
        md.rows.add(coefs, -math.inf, 0, "capacity")
    _policy_rows(md)
    return md


Pair = tuple[PlanPool, PlanVariant]


def _pairs(problem: Problem) -> dict[str, list[Pair]]:
    """Per model, the (pool, variant) pairs a pool may load and that fit its memory."""
    s = problem.settings
    out: dict[str, list[Pair]] = defaultdict(list)
    for p in problem.pools:
        room = (1 - s.memory_headroom) * p.gpu_memory_gb
        for v in problem.variants:  # (a variant that can never fit is no candidate)
            if _allowed(p, v) and (s.load_everywhere or v.memory_gb <= room):
                out[v.model].append((p, v))
    return out


def _candidates(problem: Problem, k: DemandClass, pairs: Mapping[str, list[Pair]]
                ) -> list[tuple[PlanPool, PlanVariant, float]]:
    """(pool, variant, ρ*) that may serve ``k`` within its SLO at the lowest tier or above.

    With ``max_pools_per_class`` set, only the pools cheapest per call (price × compute over
    usable concurrency at ρ*) are kept, plus, per variant, its two cheapest on-demand pools
    (the spot rule) and its cheapest pool outside its cheapest one's region (region loss).
    """
    s = problem.settings
    lowest, slo = min(s.tiers), k.slo_ms - s.slo_margin_ms
    rtts: dict[str, float] = {}
    out = []
    for p, v in pairs.get(k.model, ()):
        if v.quality < k.min_quality:
            continue
        rtt = rtts.get(p.region)
        if rtt is None:
            rtt = rtts[p.region] = problem.rtt_ms(k.edge_region, p.region)
        rho = max_utilisation(rtt, p.compute_ms(v), p.concurrency_per_gpu, slo)
        if rho + 1e-9 >= lowest:
            out.append((p, v, rho))
    if s.max_pools_per_class <= 0:
        return out

    def per_call(c: tuple[PlanPool, PlanVariant, float]) -> float:
        p, v, rho = c
        return (p.usd_per_gpu_hour * p.compute_ms(v)
                / (p.concurrency_per_gpu * (1.0 - p.reclaim_risk) * rho))

    ranked = sorted(out, key=lambda c: (per_call(c), c[0].id, c[1].name))
    keep: dict[str, None] = {}  # pool ids, cheapest first
    for c in ranked:
        keep.setdefault(c[0].id)
    chosen = set(list(keep)[:s.max_pools_per_class])
    for name in {c[1].name for c in ranked}:  # per variant: two on-demand pools, one elsewhere
        mine = [c[0] for c in ranked if c[1].name == name]
        on_demand = [p for p in mine if p.price_class == ON_DEMAND][:2]
        away = [p for p in mine if p.region != mine[0].region][:1]
        chosen |= {p.id for p in on_demand + away}
    return [c for c in out if c[0].id in chosen]


def _policy_rows(md: _Model) -> None:
    problem = md.problem
    by_id = {p.id: p for p in problem.pools}
    floors = {(k.model, k.min_quality) for k in problem.demand if k.rate_rps > 0}
    if problem.settings.survive_region_loss:
        # "Some variant outside every region R" is "loaded in two regions or more": z[r] <= 1
        # marks a region holding one, Σ_r z[r] >= 2 (O(loads) non-zeros, not O(loads·regions)).
        variants = {v.name: v for v in problem.variants}
        for model, floor in sorted(floors):
            by_region: dict[str, dict[int, float]] = defaultdict(dict)
            for (pid, vname), col in md.y.items():
                if variants[vname].model == model and variants[vname].quality >= floor:
                    by_region[by_id[pid].region][col] = -1.0
            marks: dict[int, float] = {}
            for _, cols in sorted(by_region.items()):
                z = md.var(0.0, False, 1)
                marks[z] = 1.0
                md.rows.add({z: 1.0, **cols}, -math.inf, 0, "region_loss")
            md.rows.add(marks, 2, math.inf, "region_loss")
    for ki, k in enumerate(problem.demand):
        if k.rate_rps <= 0:
            continue
        cols = {md.y[pid, v]: 1.0 for (kj, pid, v) in md.x
                if kj == ki and by_id[pid].price_class == ON_DEMAND}
        if not cols and problem.settings.spot_rule_where_possible:
            # No on-demand option at all: on spot alone whatever the plan. A slack forced to
            # 1 would only add SPOT_SLACK_USD to every objective, and the solver's relative
            # gap would then accept plans dearer by 5 % of that (single-cloud-hetero: $29/h
            # accepted where $10.6/h was found).
            md.forced_alone.append(ki)
            continue
        if problem.settings.spot_rule_where_possible:  # soft: a slack priced far above GPUs
            md.spot_slack[ki] = md.var(SPOT_SLACK_USD, False, 1)
            cols[md.spot_slack[ki]] = 1.0
        md.rows.add(cols, 1, math.inf, "spot")


def _variant(problem: Problem, name: str) -> PlanVariant:
    return next(v for v in problem.variants if v.name == name)


def _precheck(problem: Problem) -> Infeasible | None:
    s = problem.settings
    for k in problem.demand:
        if k.rate_rps <= 0:
            continue
        pairs = [(p, v) for p in problem.pools for v in problem.variants
                 if _allowed(p, v) and v.model == k.model and v.quality >= k.min_quality]
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


def _solve(md: _Model, drop: str = "", fixed: Plan | None = None, relax: bool = False,
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


def _support(md: _Model, relaxed: FloatArray) -> set[tuple[str, str]]:
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


def _optimise(md: _Model) -> tuple[FloatArray, float] | None:
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
    # The spot rule's slack and calls not carried are penalties, not money: the gap is
    # measured on GPU cost.
    cost = best.cost - _penalty(md, best.x)
    return best.x, min(1.0, max(0.0, (best.cost - bound) / cost)) if cost > 0 else 0.0


def _read(md: _Model, x: FloatArray, gap: float = 0.0) -> Plan:
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
    return Plan(tuple(pools), sum(pp.usd_per_hour for pp in pools), gap, alone,
                not_carried=shed, cut_short=md.cut_short)


def _slack(md: _Model, x: FloatArray) -> float:
    return float(sum(x[col] for col in md.spot_slack.values()))


def _penalty(md: _Model, x: FloatArray) -> float:
    """The objective's part that is not GPU cost: spot-rule slack and calls not carried."""
    return SPOT_SLACK_USD * _slack(md, x) + SHED_USD * float(sum(x[c] for c in md.shed.values()))


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
    short = check(found)
    best, least, last, solves = found, sum(short.values()), found, 1
    cut = found.cut_short
    asked = problem
    for _ in range(rounds):
        if not short or least <= tolerance:
            break
        asked = dataclasses.replace(asked, demand=tuple(
            dataclasses.replace(k, rate_rps=k.rate_rps + short.get(i, 0.0))
            for i, k in enumerate(asked.demand)))
        again = solve(asked, last)
        solves += 1
        if isinstance(again, Infeasible):
            break
        last = again
        cut += again.cut_short
        short = check(again)
        if sum(short.values()) < least - 1e-9:
            best, least = again, sum(short.values())
    return dataclasses.replace(best, solves=solves, cut_short=cut)


def _plan(problem: Problem, previous: Plan | None = None) -> Plan | Infeasible:
    """The cheapest plan; with ``previous`` (a route round), restricted first to what the
    last plan and the LP relaxation load (:func:`_reoptimise`), in full only if that finds
    nothing."""
    pre = _precheck(problem)
    if pre is not None:
        return pre
    md = _build(problem)
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
            fixes = _solve(_build(problem, gpu_limits=False)) is not None
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
    md = _build(problem, shed=True)
    found = _reoptimise(md, previous) if previous is not None else None
    if found is None:
        found = _optimise(md)
    return None if found is None else _read(md, *found)


def _reoptimise(md: _Model, previous: Plan) -> tuple[FloatArray, float] | None:
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
        md = _build(asked)
        allow = {key for key in md.y if key[1] in loaded.get(key[0], frozenset())}
        return _solve_current(md, "the current variants cannot serve this forecast",
                              allow=allow)

    return _routed(problem, counts)


def evaluate(problem: Problem, current: Plan) -> Plan | Infeasible:
    """``current``'s GPUs and variants under ``problem``'s demand (flows re-optimised)."""
    return _solve_current(_build(problem), "the current placement cannot serve this forecast",
                          fixed=current)


def _solve_current(md: _Model, infeasible: str, fixed: Plan | None = None,
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
