"""The fleets compared by provisioned cost (``benchmarks.costsim.provisioned`` runs them).

- :class:`StaticFleet`: one plan all day (the static peak fleet: the MILP for each class's
  peak rate of the day);
- :class:`ReactiveFleet`: a per-pool autoscaler like a Kubernetes HPA on the static fleet's
  pools and variants: ``desired = ceil(busy servers / (concurrency × target))``, no change
  within a 10 % tolerance, scale-up at once (at most ×2 or +4 GPUs per 15-second sync,
  compounded over the syncs of a bucket: Kubernetes' default scale-up policies), scale-down
  to the highest recommendation of the last ``down_window_s`` (HPA's stabilisation window,
  300 s); the target utilisation per pool is 0.9 × the cap its SLOs allow (the static plan's
  ``utilisation_cap``: what a load test against the SLO would find), at least one GPU per
  pool; each pool scales on its own (``independent_pools``: one HPA per workload);
- :class:`SkyServeFleet`: SkyServe-like spot/on-demand mix: each static pool becomes a group
  of the cheapest spot pool and the cheapest on-demand pool in its region that may load its
  variants; the group's replicas are sized like the HPA but with SkyServe's default
  delays (scale-up after 300 s above, scale-down after 1,200 s below), placed on spot plus one
  extra spot GPU, with on-demand GPUs only as fallback for spot capacity not serving;
- :class:`PlannerFleet`: Switchyard's planner, forecast learned from the calls it saw,
  re-planning by :class:`placement.plan_cadence.Cadence` (the rule placement's capacity loop
  runs: full plans hourly ``lead_s`` before the hour, on a sustained forecast error and when
  an outage starts or ends, down pools excluded; with ``resize_every_s``, GPU counts
  right-sized between them for the next ``resize_every_s + lead_s``; with
  ``react_tolerance``, every plan made for at least each class's observed peak over the react
  window × the forecast's margin, and a class observed above what the plan in force serves it
  right-sized at once) and deciding with hysteresis (:func:`placement.replan.revise`);
- :class:`OracleFleet`: the offline optimum: the same MILP for each hour's true peak, outages
  known, each hour's plan requested ``lead_s`` ahead.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from benchmarks.costsim.provisioned import BUCKET_S, PROVISION_DELAY_S, Observed
from placement.forecast import ClassKey, DemandForecaster
from placement.plan_cadence import Cadence, CadenceSettings, Due
from placement.plan_scale import PoolScaler, ScaleSettings
from placement.plan_types import DemandClass, Infeasible, Plan, PlanPool, Problem
from placement.planner import plan
from placement.replan import ChurnCost, revise

ProblemOf = Callable[[list[DemandClass], frozenset[str]], Problem]


def demand_classes(rates: Mapping[ClassKey, float]) -> list[DemandClass]:
    return [DemandClass(k.model, k.min_quality, k.slo_ms, k.edge_region, r)
            for k, r in sorted(rates.items())]


class StaticFleet:
    def __init__(self, name: str, fixed: Plan) -> None:
        self.name, self._plan = name, fixed

    def control(self, seen: Observed) -> None:
        return None

    def targets(self) -> Mapping[str, int]:
        return self._plan.gpus()

    def loaded(self) -> Mapping[str, frozenset[str]]:
        return self._plan.loaded()


@dataclass
class Stabiliser:
    """Kubernetes-style stabilisation: act on the recommendations of a trailing window."""

    up_delay_s: float
    down_window_s: float
    history: list[tuple[float, int]] = field(default_factory=list)

    def step(self, now_s: float, desired: int, current: int) -> int:
        self.history.append((now_s, desired))
        horizon = max(self.up_delay_s, self.down_window_s)
        self.history = [(t, d) for t, d in self.history if t > now_s - horizon - 1e-9]
        if desired > current:  # up only once every recommendation of up_delay_s was higher
            if self.history[0][0] > now_s - self.up_delay_s + 1e-9:
                return current
            recent = [d for t, d in self.history if t > now_s - self.up_delay_s - 1e-9]
            return max(current, min(recent))
        if desired < current:
            recent = [d for t, d in self.history if t > now_s - self.down_window_s - 1e-9]
            return min(current, max(recent))
        return current


def _desired(work: float, servers_per_gpu: int, target: float, current: int) -> int:
    if current > 0 and abs(work / (servers_per_gpu * target * current) - 1) <= 0.1:
        return current
    return math.ceil(work / (servers_per_gpu * target) - 1e-9)


HPA_SYNC_S = 15.0  # --horizontal-pod-autoscaler-sync-period's default


def _scale_up_limit(current: int, bucket_s: float) -> int:
    """Kubernetes' default: per sync, the larger of +100 % and +4 pods."""
    limit = current
    for _ in range(max(1, round(bucket_s / HPA_SYNC_S))):
        limit = max(2 * limit, limit + 4)
        if limit > 100_000:
            break
    return limit


class ReactiveFleet:
    independent_pools = True

    def __init__(self, base: Plan, pools: Mapping[str, PlanPool], target_share: float = 0.9,
                 down_window_s: float = 300.0, name: str = "reactive autoscaler (HPA)") -> None:
        self.name = name
        self._pools = {pp.pool: pools[pp.pool] for pp in base.pools}
        self._target = {pp.pool: target_share * pp.utilisation_cap for pp in base.pools}
        self._loaded = base.loaded()
        self._gpus = dict(base.gpus())
        self._stab = {pid: Stabiliser(0.0, down_window_s) for pid in self._pools}

    def control(self, seen: Observed) -> None:
        for pid, p in self._pools.items():
            cur = self._gpus[pid]
            want = _desired(seen.work.get(pid, 0.0), p.concurrency_per_gpu, self._target[pid],
                            seen.ready.get(pid, 0))
            want = min(max(want, 1), p.max_gpus, _scale_up_limit(cur, seen.bucket_s))
            self._gpus[pid] = self._stab[pid].step(seen.now_s, want, cur)

    def targets(self) -> Mapping[str, int]:
        return self._gpus

    def loaded(self) -> Mapping[str, frozenset[str]]:
        return self._loaded


@dataclass
class _Group:
    base: PlanPool
    target: float
    variants: frozenset[str]
    spot: PlanPool | None
    on_demand: PlanPool | None
    replicas: int  # in GPUs of ``base``
    stab: Stabiliser


class SkyServeFleet:
    EXTRA_SPOT = 1

    def __init__(self, base: Plan, problem: Problem, target_share: float = 0.9,
                 name: str = "SkyServe-like spot mix") -> None:
        self.name = name
        pools = {p.id: p for p in problem.pools}
        mem = {v.name: v.memory_gb for v in problem.variants}
        self._groups = []
        for pp in base.pools:
            p = pools[pp.pool]
            need = frozenset(pp.variants)
            fits = [q for q in problem.pools if q.region == p.region
                    and (not q.variants or need <= q.variants)
                    and sum(mem[v] for v in need) <= q.gpu_memory_gb]

            def cheapest(kind: str, fits: list[PlanPool] = fits) -> PlanPool | None:
                c = [q for q in fits if q.price_class == kind]
                return min(c, key=lambda q: (q.usd_per_gpu_hour / q.speed, q.id)) if c else None

            self._groups.append(_Group(p, target_share * pp.utilisation_cap, need,
                                       cheapest("spot"), cheapest("on-demand"), pp.gpus,
                                       Stabiliser(300.0, 1200.0)))
        self._targets: dict[str, int] = {}
        self._ready: Mapping[str, int] = {}
        self._place()

    def _place(self) -> None:
        t: dict[str, int] = {}
        for g in self._groups:
            if g.spot is None:
                assert g.on_demand is not None or g.base is not None
                only = g.on_demand or g.base
                t[only.id] = t.get(only.id, 0) + math.ceil(g.replicas * g.base.speed / only.speed)
                continue
            t[g.spot.id] = t.get(g.spot.id, 0) + math.ceil(
                g.replicas * g.base.speed / g.spot.speed) + self.EXTRA_SPOT
            if g.on_demand is not None:
                serving = self._ready.get(g.spot.id, 0) * g.spot.speed / g.base.speed
                fallback = max(0, math.ceil(g.replicas - serving - 1e-9))
                t[g.on_demand.id] = t.get(g.on_demand.id, 0) + fallback
        self._targets = t

    def control(self, seen: Observed) -> None:
        for g in self._groups:
            members = {m.id: m for m in (g.spot, g.on_demand, g.base) if m is not None}
            work = sum(seen.work.get(pid, 0.0) * m.speed / g.base.speed
                       for pid, m in members.items())
            ready = sum(seen.ready.get(pid, 0) * m.speed / g.base.speed
                        for pid, m in members.items())
            want = _desired(work, g.base.concurrency_per_gpu, g.target, round(ready))
            g.replicas = g.stab.step(seen.now_s, max(want, 1), g.replicas)
        self._ready = seen.ready
        self._place()

    def targets(self) -> Mapping[str, int]:
        return self._targets

    def loaded(self) -> Mapping[str, frozenset[str]]:
        out: dict[str, frozenset[str]] = {}
        for g in self._groups:
            for m in (g.spot, g.on_demand, g.base):
                if m is not None:
                    ok = frozenset(v for v in g.variants if not m.variants or v in m.variants)
                    out[m.id] = out.get(m.id, frozenset()) | ok
        return out


@dataclass
class SolveLog:
    seconds: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    adopted: int = 0
    infeasible: list[str] = field(default_factory=list)
    spot_alone: set[str] = field(default_factory=set)
    reactions: int = 0  # right-sizings on a class observed above its plan
    cut_short: int = 0  # solver runs the wall-clock safety net stopped (Plan.cut_short)

    def note(self, p: Plan, took_s: float) -> None:
        self.seconds.append(took_s)
        self.gaps.append(p.gap)
        self.spot_alone |= set(p.spot_alone)
        self.cut_short += p.cut_short


class _PlanInForce:
    """What a planner fleet serves: the plan in force (and the one before it while the new
    GPUs come up), its GPU counts as the pool scaler last sized them, if there is one.
    Shared by :class:`PlannerFleet` and :class:`ReplayedPlanner`."""

    def __init__(self, pools: Mapping[str, PlanPool], scale: ScaleSettings | None) -> None:
        self._pools = pools
        self._scaler = PoolScaler(scale) if scale is not None else None
        self._scaled: dict[str, int] | None = None
        self._current: Plan | None = None
        self._previous: Plan | None = None

    def _rescale(self, seen: Observed) -> None:
        if self._scaler is not None and self._current is not None:
            self._scaled = self._scaler.targets(seen.now_s, self._current, self._pools,
                                                seen.work, seen.ready)

    @property
    def current(self) -> Plan | None:
        return self._current

    def targets(self) -> Mapping[str, int]:
        if self._scaled is not None:
            return self._scaled
        return self._current.gpus() if self._current else {}

    def loaded(self) -> Mapping[str, frozenset[str]]:
        now = self._current.loaded() if self._current else {}
        if self._previous is None:
            return now
        before = self._previous.loaded()  # until the new GPUs serve, the old placement does
        return {p: now.get(p, frozenset()) | before.get(p, frozenset())
                for p in set(now) | set(before)}


class PlannerFleet(_PlanInForce):
    """Switchyard's planner: :class:`placement.plan_cadence.Cadence` says when to re-plan and
    for what demand (the rule placement's capacity loop runs), :func:`placement.replan.revise`
    decides; the day's time axis is shifted by ``day_offset_s`` for the forecaster."""

    def __init__(self, problem_of: ProblemOf, forecaster: DemandForecaster, churn: ChurnCost,
                 cadence: CadenceSettings | None = None, day_offset_s: float = 0.0,
                 name: str = "switchyard planner", scale: ScaleSettings | None = None) -> None:
        super().__init__({p.id: p for p in problem_of([], frozenset()).pools}, scale)
        self.name = name
        self.scale = scale
        # (now_s, plan in force, plan before it) at each control: ReplayedPlanner's input
        self.history: list[tuple[float, Plan | None, Plan | None]] = []
        self.first_plan: Plan | None = None  # the plan start made
        self._problem_of, self._churn, self._offset_s = problem_of, churn, day_offset_s
        self.cadence = Cadence(cadence or CadenceSettings(
            lead_s=PROVISION_DELAY_S + 2 * BUCKET_S), forecaster)
        self._down: frozenset[str] = frozenset()
        self.log = SolveLog()

    def start(self, now_s: float) -> None:
        self._replan(now_s, self.cadence.begin(self._offset_s + now_s))
        self.first_plan = self._current

    def _replan(self, now_s: float, due: Due) -> None:
        t = self._offset_s + now_s
        demand = self.cadence.demand(t, due.horizon_s)
        problem = self._problem_of(list(demand), self._down)
        current = self._current
        if current is not None and self._down:  # what is down serves nothing, whatever it runs
            kept = tuple(pp for pp in current.pools if pp.pool not in self._down)
            current = Plan(kept, sum(pp.usd_per_hour for pp in kept), current.gap)
        t0 = time.perf_counter()
        d = revise(problem, current, self._churn, due.resize)
        took = time.perf_counter() - t0
        if isinstance(d, Infeasible):
            self.cadence.solved(t, demand, None)
            self.log.infeasible.append(f"{now_s / 3600:.2f} h: {d.explain()}")
            return
        self.cadence.solved(t, demand, d.plan)
        self.log.note(d.plan, took)
        if d.adopt and self._current is not None:
            self.log.adopted += 1
            self._previous = self._current
        self._current = d.plan

    def control(self, seen: Observed) -> None:
        due = self.cadence.observe(self._offset_s + seen.now_s, seen.rates, seen.bucket_s,
                                   down=seen.down)
        self._down = seen.down
        if due is not None:
            if due.kind == "drift":  # right-sized at once, as an HPA would scale
                self.log.reactions += 1
            self._replan(seen.now_s, due)
        self.history.append((seen.now_s, self._current, self._previous))
        self._rescale(seen)


class OracleFleet:
    """The offline optimum: hourly plans for the true peak, requested ``lead_s`` ahead."""

    def __init__(self, plans: list[Plan], lead_s: float = PROVISION_DELAY_S + BUCKET_S,
                 name: str = "offline optimum") -> None:
        self.name, self._plans, self._lead_s = name, plans, lead_s
        self._now = 0.0

    def _at(self, t: float) -> Plan:
        return self._plans[min(int(t // 3600), len(self._plans) - 1)]

    def control(self, seen: Observed) -> None:
        self._now = seen.now_s

    def targets(self) -> Mapping[str, int]:
        a, b = self._at(self._now).gpus(), self._at(self._now + self._lead_s).gpus()
        return {p: max(a.get(p, 0), b.get(p, 0)) for p in set(a) | set(b)}

    def loaded(self) -> Mapping[str, frozenset[str]]:
        a, b = self._at(self._now).loaded(), self._at(self._now + self._lead_s).loaded()
        return {p: a.get(p, frozenset()) | b.get(p, frozenset()) for p in set(a) | set(b)}


def without(problem: Problem, down: frozenset[str]) -> Problem:
    """``problem`` with the pools in ``down`` unable to run GPUs."""
    if not down:
        return problem
    return dataclasses.replace(problem, pools=tuple(
        dataclasses.replace(p, max_gpus=0) if p.id in down else p for p in problem.pools))


class PlanRefused(Exception):
    """A baseline's plan is infeasible: the scenario cannot be compared."""


def solve_or_fail(problem: Problem, what: str) -> Plan:
    """A baseline's plan; a solve cut short with no plan gets one retry with 4× the time."""
    result = plan(problem)
    if isinstance(result, Infeasible) and result.constraint == "time_limit":
        longer = dataclasses.replace(problem.settings,
                                     time_limit_s=4 * problem.settings.time_limit_s)
        result = plan(dataclasses.replace(problem, settings=longer))
    if isinstance(result, Infeasible):
        raise PlanRefused(f"{what}: {result.explain()}")
    return result


class ReplayedPlanner(_PlanInForce):
    """A planner fleet's day of plans (:attr:`PlannerFleet.history`) run again with another
    :class:`placement.plan_scale.PoolScaler` (or none): the plans do not depend on the GPU
    counts a scaler sets (the cadence sees call rates, the hysteresis the plan in force), so
    scaler settings are compared on the same plans without solving them again."""

    def __init__(self, first: Plan | None, history: list[tuple[float, Plan | None, Plan | None]],
                 pools: Mapping[str, PlanPool], scale: ScaleSettings | None, name: str) -> None:
        super().__init__(pools, scale)
        self.name = name
        self._history = {round(t, 6): (cur, prev) for t, cur, prev in history}
        self._current = first

    def control(self, seen: Observed) -> None:
        self._current, self._previous = self._history[round(seen.now_s, 6)]
        self._rescale(seen)

