"""The capacity planner's inputs and results (``placement.planner`` solves them).

Pools, variants and demand classes in; per-pool GPUs, loaded variants, utilisation and the
flows that explain them out, or :class:`Infeasible` naming the constraint that blocks a plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from placement.latency import COMPUTE_P95_FACTOR, MAX_RHO

TIERS = tuple(round(0.3 + 0.05 * i, 2) for i in range(13))  # 0.30, 0.35, ..., 0.90


@dataclass(frozen=True, slots=True)
class PlanVariant:
    """A model variant as the planner sees it: footprint per GPU, compute on a speed-1 GPU."""

    name: str
    model: str
    quality: float
    memory_gb: float
    compute_ms: float


@dataclass(frozen=True, slots=True)
class PlanPool:
    """GPUs of one kind in one region at one price class."""

    id: str
    cloud: str
    region: str
    accelerator: str
    price_class: str
    usd_per_gpu_hour: float
    gpu_memory_gb: float
    speed: float = 1.0  # compute time = variant.compute_ms / speed
    concurrency_per_gpu: int = 1
    reclaim_risk: float = 0.0  # expected share of spot capacity taken back; 0 on-demand
    max_gpus: int = 64
    variants: frozenset[str] = frozenset()  # allowed here; empty = every variant

    def compute_ms(self, v: PlanVariant) -> float:
        return v.compute_ms / self.speed


@dataclass(frozen=True, slots=True)
class DemandClass:
    """Forecast calls/s of one model at one quality floor and SLO from one edge region."""

    model: str
    min_quality: float
    slo_ms: float
    edge_region: str
    rate_rps: float

    @property
    def key(self) -> str:
        return f"{self.model}/q>={self.min_quality:g}/{self.slo_ms:g}ms/{self.edge_region}"


@dataclass(frozen=True, slots=True)
class PlannerSettings:
    memory_headroom: float = 0.1  # share of each GPU's memory left free
    survive_region_loss: bool = True
    # A pool's GPUs are counted at the highest tier under the lowest ρ* of its flows, while
    # edges (placement.plan_route) and the provisioned-cost day run it up to that ρ*: a
    # 0.05 grid loses at most 0.05 of ρ (the grid before, 0.3 then 0.5, planned a pool
    # whose tight flows allow 0.47 at 0.3: a third of its GPUs idle by construction).
    tiers: tuple[float, ...] = TIERS
    slo_margin_ms: float = 0.0
    # A wall-clock safety net per HiGHS run, not the limit that decides a plan: a run it stops
    # depends on the host's load (``Plan.cut_short`` counts them). ``node_limit`` is the
    # limit: branch-and-bound nodes per MILP run, deterministic, so the same problem gives
    # the same plan on any host (0 = none).
    time_limit_s: float = 30.0
    mip_rel_gap: float = 1e-4
    # A baseline, not a policy: every pool runs >= 1 GPU with every variant it may load
    # (memory not checked), GPUs still sized by the solver.
    load_everywhere: bool = False
    # Speed for large fleets (see ``placement.planner``'s doc): False = the LP relaxation and
    # the MILP restricted to what it loads, no full MILP after it.
    full_milp: bool = True
    # Each class may be served only by its ``max_pools_per_class`` cheapest pools per call
    # that meet its SLO idle (0 = every pool); pools the rules need are always kept.
    max_pools_per_class: int = 0
    # Above this many pools, groups of nearby regions of about this size are planned apart
    # and joined (placement.plan_regions; 0 = one problem).
    group_pools: int = 0
    # "Spot never alone" as a preference, not a rule: a class may stay on spot alone at a
    # penalty far above any GPU price (a fleet whose tight classes cannot also have an
    # on-demand variant in reach, e.g. for memory, is then planned, not refused).
    spot_rule_where_possible: bool = False
    # Edges route each call to the cheapest deployment within its SLO, not along the plan's
    # flows (placement.plan_route): a plan whose demand the edges' rule leaves partly
    # without a deployment in SLO is solved again, up to this many times, with each class's
    # shortfall added to its demand; the plan that leaves least short is kept (0 = off).
    route_rounds: int = 3
    # A route round also plans the calls/s the edges' rule sends each class beyond its planned
    # flow on a (pool, variant): a class that finds a pool cheaper per call takes it at the
    # utilisation its own SLO allows there, whatever the plan kept it for (Problem.drawn;
    # far-edge: Tokyo's 250 ms class pinned Virginia's A100 at its long-RTT 0.36 and São
    # Paulo's, which only that A100 reached, was late all night). Measured on the
    # provisioned-cost day's 8 scenarios and kept (benchmarks/RESULTS.md, 2026-11-28, "the
    # calls the edges' rule draws").
    route_drawn: bool = True
    # A route round also tries the plan without the (pool, variant) pairs where a drawn class
    # pins the pool below the tier the plan ran it at (placement.plan_route.pinning): the
    # variant unloaded there, its own classes served elsewhere, the drawn calls going to
    # their next option. The round keeps that plan when it leaves no more short (or within
    # the tolerance) and costs less than planning for the pinned pool (default: gcp's Iowa
    # L4 spot loaded summarize-large, the edges drew Europe's calls to it at 0.33). Measured
    # on the provisioned-cost day's 8 scenarios and kept (benchmarks/RESULTS.md, 2026-11-28,
    # ninth session, "the pairs a drawn class pins").
    route_unpin: bool = True
    # When the pools' GPU limits cannot carry the forecast (max_gpus), plan what they can
    # carry (each call/s left out priced far above any GPU; Plan.not_carried) instead of
    # refusing, which keeps the plan in force (placement.planner._carry_what_fits).
    carry_what_fits: bool = False
    # Branch-and-bound nodes per MILP run (HiGHS ``mip_max_nodes``; see ``time_limit_s``).
    node_limit: int = 1000
    # After the MILP, a local search on the plan's pools: re-planned on them alone, then
    # each taken out while the rest carry the demand more cheaply (placement.plan_prune).
    # Built and off: measured on the provisioned-cost day and not kept (benchmarks/RESULTS.md,
    # 2026-11-27, "which pools the MILP keeps").
    prune: bool = False
    # N+1 on spot: each spot pool is planned to carry its flows with one of its GPUs taken
    # back (its capacity row counts n - 1 GPUs at the chosen tier), the loss that lasts a
    # cold start before a replacement serves (placement.plan_milp). Built and off: measured
    # on the provisioned-cost day and not kept (benchmarks/RESULTS.md, 2026-11-27, evening,
    # "a spot GPU held spare": dearer, no attainment gained).
    spot_spare: bool = False
    # N+1 across pools per class: each class's calls/s on any one pool fit, within its SLO,
    # into the room the other pools' planned GPUs leave (placement.plan_pool_loss), at each
    # pool's utilisation tier + ``pool_loss_boost`` (capped at MAX_RHO) for the cold start.
    # Built and off: measured on the provisioned-cost day and not kept (benchmarks/RESULTS.md,
    # 2026-11-27, night, "N+1 across pools per class": no missed call where measured, but it
    # turns noisy-cheap-spot's win against the HPA into a loss, and at 100 synthetic pools
    # the 4-node search finds no plan or one 34 times dearer).
    pool_loss: bool = False
    pool_loss_boost: float = 0.0
    # The factor the demand asked of the planner already carries above the forecast (the
    # forecaster's margin, ``ForecastSettings.peak_factor``). A spot pool's reclaim reserve
    # then counts only what that margin does not cover: its GPUs count for
    # ``min(1, (1 − reclaim_risk) · demand_margin)`` of their servers (:func:`counted`), so
    # the plan carries the margin's demand on every GPU, or the forecast itself with the
    # reclaims taken, not both at once (1.1 / 0.9: ×1.22 the forecast's work on spot).
    # 1 = the reserve on top of any margin. Built and off: measured on part of the
    # provisioned-cost day and not kept (benchmarks/RESULTS.md, 2026-11-28, tenth session:
    # the whole margin cost few-large-pools 0.11 point at its burst, half of it (1.05)
    # single-cloud-hetero 0.34 point; default $592 -> $570/day with half).
    demand_margin: float = 1.0


@dataclass(frozen=True, slots=True)
class Problem:
    pools: tuple[PlanPool, ...]
    variants: tuple[PlanVariant, ...]
    demand: tuple[DemandClass, ...]
    rtt_ms: Callable[[str, str], float]  # (edge region, pool region) -> RTT
    settings: PlannerSettings = field(default_factory=PlannerSettings)
    # (class index into ``demand``, pool, variant, calls/s): calls/s the edges' rule sends
    # that class there whenever the variant is loaded on the pool, beyond the flow the plan
    # chose; a route round's finding (placement.planner._routed, plan_route.Shortfall.drawn)
    drawn: tuple[tuple[int, str, str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class PoolPlan:
    pool: str
    gpus: int
    variants: tuple[str, ...]
    utilisation: float  # expected: work / (GPUs × concurrency)
    utilisation_cap: float  # the highest ρ every class served here tolerates (its SLO)
    usd_per_hour: float
    serves: tuple[tuple[str, str, float], ...]  # (class key, variant, calls/s)


@dataclass(frozen=True, slots=True)
class Plan:
    pools: tuple[PoolPlan, ...]  # pools with at least one GPU, cheapest-per-hour first
    usd_per_hour: float
    gap: float = 0.0  # relative distance to the best lower bound found (0 = proven optimal)
    spot_alone: tuple[str, ...] = ()  # classes left on spot only (spot_rule_where_possible)
    solves: int = 1  # MILP solves it took: 1 + route rounds (planner._routed)
    # (class key, calls/s) the pools' GPU limits cannot carry (carry_what_fits)
    not_carried: tuple[tuple[str, float], ...] = ()
    # HiGHS runs stopped by the wall-clock safety net (PlannerSettings.time_limit_s) rather
    # than by the node limit or the gap: a plan with any depends on the host's load.
    cut_short: int = 0
    # (class key, calls/s) no other pool has room for when one of its pools is lost
    # (PlannerSettings.pool_loss: the pools' GPU limits leave no plan that covers them)
    pool_loss_uncovered: tuple[tuple[str, float], ...] = ()

    def gpus(self) -> dict[str, int]:
        return {p.pool: p.gpus for p in self.pools}

    def loaded(self) -> dict[str, frozenset[str]]:
        return {p.pool: frozenset(p.variants) for p in self.pools}

    def carried_note(self) -> str:
        """What the plan leaves out because the pools' GPU limits cannot carry it ('' if
        nothing)."""
        if not self.not_carried:
            return ""
        return "not carried (the pools' GPU limits): " + ", ".join(
            f"{key} {rps:.2f}/s" for key, rps in self.not_carried)

    def cut_short_note(self) -> str:
        """Whether the wall-clock safety net stopped a solve ('' if not): such a plan is not
        reproducible (another host, or this one under another load, finds another)."""
        if not self.cut_short:
            return ""
        return (f"{self.cut_short} solver run(s) stopped by the wall-clock safety net, not the "
                f"node limit: this plan depends on the host's load")

    def explain(self) -> str:
        lines = [f"plan: ${self.usd_per_hour:.2f}/h"
                 + (f" (within {self.gap:.1%} of the solver's lower bound)"
                    if self.gap > 1e-3 else "")]
        if self.spot_alone:
            lines.append(f"  on spot alone (no on-demand option fits): "
                         f"{', '.join(self.spot_alone)}")
        if self.not_carried:
            lines.append("  " + self.carried_note())
        if self.cut_short:
            lines.append("  " + self.cut_short_note())
        if self.pool_loss_uncovered:
            lines.append("  not covered if one of its pools is lost (the pools' GPU limits): "
                         + ", ".join(f"{key} {rps:.2f}/s" for key, rps in
                                     self.pool_loss_uncovered))
        for p in self.pools:
            lines.append(f"  {p.pool}: {p.gpus} GPU(s) ${p.usd_per_hour:.2f}/h, "
                         f"{','.join(p.variants)}, utilisation {p.utilisation:.0%} "
                         f"(cap {p.utilisation_cap:.0%})")
            lines.extend(f"    {key} via {v}: {rps:.2f}/s" for key, v, rps in p.serves)
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Infeasible:
    """No plan exists; ``constraint`` is the family that blocks it (see the module doc)."""

    constraint: str  # "quality", "slo", "spot", "region_loss", "memory", "max_gpus", ...
    detail: str

    def explain(self) -> str:
        return f"infeasible ({self.constraint}): {self.detail}"


def max_utilisation(rtt_ms: float, compute_ms: float, concurrency: int, slo_ms: float) -> float:
    """Highest ρ at which ``placement.latency``'s p95 stays within ``slo_ms`` (0 = never)."""
    budget = slo_ms - rtt_ms - compute_ms * COMPUTE_P95_FACTOR
    if budget <= 0:
        return 0.0
    a = budget * max(concurrency, 1) / compute_ms
    return min(a / (1.0 + a), MAX_RHO)


def reclaim_reserve(reclaims_per_gpu_hour: float, exposure_s: float) -> float:
    """The share of a spot pool's GPUs to expect lost before replacements serve.

    ``exposure_s``: how long a reclaimed GPU goes unreplaced (until the next re-plan or
    reconcile notices, plus the cold start). With reclaims at a steady rate per GPU, a
    GPU is lost within that time with probability ``1 − exp(−rate·exposure)``: the
    capacity the plan counts a spot GPU for is ``1 −`` that (``PlanPool.reclaim_risk``).
    """
    return 1.0 - math.exp(-max(reclaims_per_gpu_hour, 0.0) * max(exposure_s, 0.0) / 3600.0)


def counted(p: PlanPool, s: PlannerSettings) -> float:
    """The share of ``p``'s GPUs the plan counts: ``1 − reclaim_risk``, or with a demand
    margin (``PlannerSettings.demand_margin``) the reserve the margin does not already
    cover, ``min(1, (1 − reclaim_risk) · margin)``. Every capacity the planner counts
    (``plan_milp``'s rows, ``plan_route``'s check, ``plan_pool_loss``) uses this one rule."""
    kept = 1.0 - p.reclaim_risk
    return kept if kept >= 1.0 else min(1.0, kept * max(s.demand_margin, 1.0))
