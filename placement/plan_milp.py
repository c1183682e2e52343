"""The capacity planner's MILP, as rows and columns (``placement.planner`` solves it).

A *pool* is GPUs of one kind (cloud × region × accelerator × price class); every GPU of a pool
loads the same variants. Variables, with ``k`` a demand class (model, quality floor, SLO,
edge region):

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
  (spot GPUs count only for the share the cloud is expected to leave us; with
  ``demand_margin``, only for what the demand's margin does not cover:
  :func:`placement.plan_types.counted`); with
  ``spot_spare`` a spot pool's right side is ``c·(1 − reclaim_risk)·Σ_l tier_l·(m[p,l] −
  t[p,l])``: its flows carried with one GPU taken back (N+1);
- **memory**: ``Σ_v y[p,v]·footprint(v) <= (1 − headroom)·gpu_memory(p)``;
- **region loss** (``survive_region_loss``): for each (model, quality floor) with demand and
  each region ``R``, some variant meeting the floor is loaded on a pool outside ``R`` —
  written as "loaded in at least two regions";
- **spot**: each class with demand has a feasible variant loaded on an on-demand pool;
- **drawn** (a route round's finding, ``Problem.drawn``): ``x[k,p,v] >= drawn(k,p,v) ·
  y[p,v]``, the calls/s the edges' cheapest-per-call rule sends ``k`` to ``p`` whenever
  ``v`` is loaded there (:func:`drawn_rows`);
- **pool loss** (``pool_loss``, N+1 across pools per class): for each class ``k`` and each
  pool ``p`` it may use, the calls/s ``k`` sends ``p`` fit, within ``k``'s SLO, into the
  room the other pools' planned GPUs have left (:mod:`placement.plan_pool_loss`).

Pure (no I/O, no clock): :func:`build` writes the model, the solver is run by
:mod:`placement.planner`. Constraint rows are grouped by family, so the planner can drop
one to name the family that blocks a plan.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from scipy.optimize import LinearConstraint  # type: ignore[import-untyped]
from scipy.sparse import coo_matrix  # type: ignore[import-untyped]

from placement import plan_pool_loss
from placement.plan_types import (
    DemandClass,
    PlanPool,
    PlanVariant,
    Problem,
    counted,
    max_utilisation,
)

ON_DEMAND = "on-demand"
SPOT = "spot"
LOAD_TIEBREAK_USD = 1e-4  # per loaded variant: never load what serves nothing
GPU_BOUND = 100_000.0  # GPUs per pool when its own limit is set aside (diagnosis only)
SPOT_SLACK_USD = 1_000.0  # per hour, per class left on spot alone (spot_rule_where_possible)
SHED_USD = 10_000.0  # per hour, per call/s a plan cannot carry (carry_what_fits)


class Rows:
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
class Model:
    problem: Problem
    cost: list[float] = field(default_factory=list)
    integral: list[int] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)
    n: dict[str, int] = field(default_factory=dict)
    y: dict[tuple[str, str], int] = field(default_factory=dict)
    m: dict[tuple[str, int], int] = field(default_factory=dict)
    t: dict[tuple[str, int], int] = field(default_factory=dict)
    x: dict[tuple[int, str, str], int] = field(default_factory=dict)
    rho: dict[int, float] = field(default_factory=dict)  # per x column: ρ* of its class
    spot_slack: dict[int, int] = field(default_factory=dict)  # class -> its slack column
    shed: dict[int, int] = field(default_factory=dict)  # class -> its calls/s not carried
    # class -> its calls/s no other pool has room for when one of its pools is lost
    uncovered: dict[int, int] = field(default_factory=dict)
    forced_alone: list[int] = field(default_factory=list)  # classes no on-demand pool serves
    cut_short: int = 0  # HiGHS runs the wall-clock safety net stopped (Plan.cut_short)

    @property
    def by_id(self) -> dict[str, PlanPool]:
        return {p.id: p for p in self.problem.pools}
    rows: Rows = field(default_factory=Rows)

    def var(self, cost: float, integral: bool, upper: float) -> int:
        self.cost.append(cost)
        self.integral.append(int(integral))
        self.upper.append(upper)
        return len(self.cost) - 1


def allowed(p: PlanPool, v: PlanVariant) -> bool:
    return not p.variants or v.name in p.variants


def build(problem: Problem, gpu_limits: bool = True, shed: bool = False) -> Model:
    """The MILP (module doc); ``shed``: each class may leave calls/s uncarried at
    ``SHED_USD`` per call/s-hour (a plan for what the pools can carry, ``carry_what_fits``)."""
    s = problem.settings
    md = Model(problem)
    t = md.t
    for p in problem.pools:
        cap = float(p.max_gpus) if gpu_limits else GPU_BOUND  # also the big-M of m ≤ cap·t
        md.n[p.id] = md.var(p.usd_per_gpu_hour, True, cap)
        for v in problem.variants:
            if allowed(p, v):
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
    pairs = pairs_of(problem)
    for ki, k in enumerate(problem.demand):
        if k.rate_rps <= 0:
            continue
        served: dict[int, float] = {}
        for p, v, rho in candidates(problem, k, pairs):
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
        share = p.concurrency_per_gpu * counted(p, s)
        coefs = dict(work[p.id])
        spare = s.spot_spare and p.price_class == SPOT
        for li, lvl in enumerate(s.tiers):
            coefs[md.m[p.id, li]] = -share * lvl
            if spare:  # one GPU at the chosen tier held for a reclaim
                coefs[t[p.id, li]] = share * lvl
        md.rows.add(coefs, -math.inf, 0, "capacity")
    drawn_rows(md)
    policy_rows(md)
    if s.pool_loss:
        plan_pool_loss.rows(md, work)
    return md


Pair = tuple[PlanPool, PlanVariant]


def pairs_of(problem: Problem) -> dict[str, list[Pair]]:
    """Per model, the (pool, variant) pairs a pool may load and that fit its memory."""
    s = problem.settings
    out: dict[str, list[Pair]] = defaultdict(list)
    for p in problem.pools:
        room = (1 - s.memory_headroom) * p.gpu_memory_gb
        for v in problem.variants:  # (a variant that can never fit is no candidate)
            if allowed(p, v) and (s.load_everywhere or v.memory_gb <= room):
                out[v.model].append((p, v))
    return out


def candidates(problem: Problem, k: DemandClass, pairs: Mapping[str, list[Pair]]
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
                / (p.concurrency_per_gpu * counted(p, s) * rho))

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


def drawn_rows(md: Model) -> None:
    """**drawn** (``Problem.drawn``, from a route round): a class the edges' rule sends to
    ``(p, v)`` whenever ``v`` is loaded there gets at least that flow, ``x[k,p,v] >= drawn ·
    y[p,v]``, so its work counts in ``p``'s capacity and its ρ* bounds ``p``'s tier, as the
    edges will run it. A pair with no ``x`` column (ρ* under the lowest tier) is left out."""
    for ki, pid, vname, rps in md.problem.drawn:
        xi, yi = md.x.get((ki, pid, vname)), md.y.get((pid, vname))
        if xi is None or yi is None:
            continue
        need = min(rps, md.problem.demand[ki].rate_rps)
        md.rows.add({xi: 1.0, yi: -need}, 0, math.inf, "route")


def policy_rows(md: Model) -> None:
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
