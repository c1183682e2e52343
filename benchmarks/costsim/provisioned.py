"""Provisioned cost over one simulated day: GPUs billed per pool, busy or idle (issue 13).

A **fluid model per one-minute bucket**, not a per-call simulation (a day of the default
scenario is ~40 million calls). Each bucket:

1. **demand**: each class's calls/s from the scenario's daily cycle and bursts
   (:func:`benchmarks.planner.class_rate`), drawn as a Poisson count for the bucket (seeded;
   the same draws for every fleet);
2. **capacity**: GPUs that exist now in ``services.capacity.simulated.SimulatedProvider``
   (requested GPUs arrive after ``provision_delay_s``, billed from the request; spot GPUs
   are reclaimed at random and by the scenario's spot outages; a pool in an outage serves
   nothing and takes no new GPUs, its on-demand GPUs still billed);
3. **routing** (:class:`Router`): the switchyard rule in fluid form — each class goes to the
   deployment cheapest per call (placement's cost model: price per GPU-second × compute)
   among those loaded, up and within the class's SLO at the pool's resulting utilisation
   (the brain's p95, :func:`placement.plan_types.max_utilisation`; a pool never runs above
   the lowest cap of any class it serves). Classes are placed one after another, and the
   order matters: loosest SLO first (loose calls take the cheapest pools, tight calls find
   the pools still cool) and tightest first (tight calls pin the pools they need to a low
   utilisation) each lose 5-20 % of some lean plan's calls that its own flows serve, so
   each bucket takes the better of the two — an *optimistic* stand-in for edges that move
   calls away from deployments that miss. The cap a class pins is not kept against a class
   that tolerates more: once the better of the two orders misses calls, each is also run
   with *taking back* — a class may take a pool from flows placed there before it at a
   lower cap when that serves more of its calls than those flows carry, and the calls it
   displaces are placed again (on their other options) after every class; the best of the
   four routings counts. Without it a far class that took a sliver of a pool at its low
   cap (long RTT) kept the pool's local classes off it all day (single-cloud-hetero:
   7.5 % of the evening's calls late on GPUs the plan had sized for them). What finds no
   such room is served late where any loaded pool has room (a miss) or fails (a miss);
4. **control**: the fleet (:mod:`benchmarks.costsim.provisioned_fleets`) sees the bucket's
   observed rates and per-pool utilisation and sets GPU targets and loaded variants; the
   reconciler adds GPUs at once and removes surplus only when no GPU is still booting
   (make before break, as ``services.capacity.actor`` does).

Attainment = calls within SLO / calls. Queueing inside a bucket is the p95 model's, not
simulated; a bucket has no memory of the last one's backlog.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from benchmarks.costsim.provisioned_router import Router
from benchmarks.costsim.scenario import Scenario
from benchmarks.planner import class_rate, keys
from placement.forecast import ClassKey
from placement.plan_types import Problem
from services.capacity.provider import Instance
from services.capacity.simulated import SimPool, SimulatedProvider

BUCKET_S = 60.0
DAY_S = 86_400.0
PROVISION_DELAY_S = 180.0  # request → GPU serving, model loaded (cold start)
SPOT_RECLAIMS_PER_GPU_HOUR = 0.05  # random reclaims on top of the scenario's spot outages


@dataclass(frozen=True, slots=True)
class Observed:
    """What a fleet's controller sees at the end of a bucket."""

    now_s: float
    rates: Mapping[ClassKey, float]  # observed calls/s per class in the bucket
    work: Mapping[str, float]  # busy servers per pool (calls/s × service s), late calls too
    ready: Mapping[str, int]  # GPUs serving per pool
    active: Mapping[str, int]  # GPUs requested and not removed (booting included)
    down: frozenset[str]  # pools in an outage now
    bucket_s: float = BUCKET_S


class Fleet(Protocol):
    name: str

    def control(self, seen: Observed) -> None: ...

    def targets(self) -> Mapping[str, int]: ...

    def loaded(self) -> Mapping[str, frozenset[str]]: ...


def demand_day(s: Scenario, scale: float, seed: int, bursts: bool = True,
               bucket_s: float = BUCKET_S) -> list[dict[ClassKey, float]]:
    """Observed calls/s per class for each bucket of the day (Poisson counts, seeded)."""
    scen = s if bursts else _without_bursts(s)
    rng = np.random.default_rng(seed)
    out = []
    for b in range(int(DAY_S / bucket_s)):
        hour = (b + 0.5) * bucket_s / 3600.0
        out.append({k: float(rng.poisson(class_rate(scen, k, hour, scale) * bucket_s)) / bucket_s
                    for k in keys(s)})
    return out


def _without_bursts(s: Scenario) -> Scenario:
    return dataclasses.replace(s, bursts=())


def down_pools(s: Scenario, now_s: float) -> frozenset[str]:
    hour = now_s / 3600.0
    return frozenset(p.id for o in s.outages if o.start_h <= hour < o.start_h + o.duration_h
                     for p in s.pools if o.matches(p))


def _finish(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine whose awaits all complete at once (the provider on a fake clock)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("the simulated provider awaited something real")


async def _no_wait(_: float) -> None:
    return None


@dataclass
class DayResult:
    fleet: str
    calls: float
    met: float
    late: float
    failed: float
    usd: float
    gpu_hours: float
    reclaimed: int
    notes: list[str] = field(default_factory=list)
    gpu_hours_by_pool: dict[str, float] = field(default_factory=dict)

    @property
    def attainment(self) -> float:
        return self.met / self.calls if self.calls else 1.0


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bucket of a simulated day, for the diagnosis (``simulate(..., trace=[])``)."""

    start_s: float
    calls_rps: float
    met_rps: float
    late_rps: float
    failed_rps: float
    ready: Mapping[str, int]  # GPUs serving per pool
    active: Mapping[str, int]  # GPUs requested, booting included
    reclaimed: int  # spot GPUs taken back at the start of this bucket
    down: frozenset[str]


class _Clock:
    def __init__(self, start_s: float) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s


def simulate(s: Scenario, problem: Problem, fleet: Fleet, demand: list[dict[ClassKey, float]],
             seed: int, trace: list[Bucket] | None = None,
             sync_s: float | None = None) -> DayResult:
    """One day of ``fleet`` on ``demand`` (one dict of calls/s per bucket, the day split
    evenly); ``trace`` gets one :class:`Bucket` per bucket.

    ``sync_s``: the fleet acts ``sync_s`` into each bucket on that bucket's demand (a
    controller that syncs every 15 s sees a step in demand within one sync), and a GPU
    serves from the moment it is ready, pro rata of the bucket (time-averaged capacity).
    ``None``: the fleet acts at the end of each bucket and a GPU serves from the first
    bucket that starts after it is ready, so a reaction takes effect one to two buckets
    late (10 minutes in 5-minute buckets against a real HPA's ~3.5: sync + cold start).

    A fleet whose pools scale independently (``independent_pools``, the HPA: one
    autoscaler per workload) removes a pool's surplus when that pool has nothing booting;
    the others only when nothing in the fleet boots (make before break).
    """
    bucket_s = DAY_S / len(demand)
    clock = _Clock(-PROVISION_DELAY_S)
    pools = {p.id: p for p in problem.pools}
    provider = SimulatedProvider({p.id: SimPool(p.usd_per_gpu_hour, p.price_class,
                                                PROVISION_DELAY_S) for p in problem.pools},
                                 clock, _no_wait)
    mine: dict[str, list[Instance]] = {pid: [] for pid in pools}
    rng = np.random.default_rng(seed)
    router = Router(problem, keys(s))
    reclaimed = 0
    ready_at: dict[str, float] = {}  # instance id -> when it serves
    independent = bool(getattr(fleet, "independent_pools", False))

    def reconcile(down: frozenset[str]) -> None:
        targets = fleet.targets()
        for pid in sorted(pools):
            want, have = targets.get(pid, 0), len(mine[pid])
            if want > have and pid not in down:
                added = _finish(provider.add(pid, want - have))
                ready_at.update((i.id, clock.now_s + PROVISION_DELAY_S) for i in added)
                mine[pid] += added
        boots = {pid for pid in pools
                 if any(ready_at[i.id] > clock.now_s for i in mine[pid])}
        for pid in sorted(pools):
            surplus = len(mine[pid]) - targets.get(pid, 0)
            if surplus > 0 and not (pid in boots if independent else boots):
                for inst in mine[pid][-surplus:]:
                    _finish(provider.remove(inst))
                del mine[pid][-surplus:]

    reconcile(down_pools(s, 0.0))
    clock.now_s = 0.0
    billed0 = provider.billed_usd()
    seconds0 = {pid: provider.gpu_seconds(pid) for pid in pools}
    hours0 = sum(seconds0.values())
    calls = met = late = failed = 0.0
    was_down: frozenset[str] = frozenset()
    for b, rates in enumerate(demand):
        clock.now_s = b * bucket_s
        down = down_pools(s, clock.now_s)
        for pid in sorted(down - was_down):  # a spot pool's outage is the cloud taking it back
            if pools[pid].price_class == "spot" and provider.instances(pid):
                reclaimed += _take(provider, mine, pid, len(provider.instances(pid)))
        was_down = down
        lost_before = reclaimed
        for pid in sorted(pools):  # random reclaims, one draw per spot pool per bucket
            n = len(provider.instances(pid))
            if pools[pid].price_class == "spot" and n:
                lost = int(rng.binomial(n, SPOT_RECLAIMS_PER_GPU_HOUR * bucket_s / 3600.0))
                reclaimed += _take(provider, mine, pid, lost) if lost else 0
        ready = {pid: len(provider.instances(pid)) for pid in pools}
        t0, t1 = b * bucket_s, (b + 1) * bucket_s
        if sync_s is not None:
            probe = router.route(rates, _served(mine, ready_at, t0, t1), fleet.loaded(), down)
            clock.now_s = t0 + sync_s
            fleet.control(Observed(clock.now_s, rates, probe.work, ready,
                                   {pid: len(v) for pid, v in mine.items()}, down, bucket_s))
            reconcile(down)
            r = router.route(rates, _served(mine, ready_at, t0, t1), fleet.loaded(), down)
        else:
            r = router.route(rates, ready, fleet.loaded(), down)
        total = sum(rates.values())
        calls += total * bucket_s
        met += r.met * bucket_s
        late += r.late * bucket_s
        failed += r.failed * bucket_s
        if trace is not None:
            trace.append(Bucket(b * bucket_s, total, r.met, r.late, r.failed, ready,
                                {pid: len(v) for pid, v in mine.items()},
                                reclaimed - lost_before, down))
        clock.now_s = t1
        if sync_s is None:
            fleet.control(Observed(clock.now_s, rates, r.work, ready,
                                   {pid: len(v) for pid, v in mine.items()}, down, bucket_s))
            reconcile(down_pools(s, clock.now_s))
    usd = provider.billed_usd() - billed0
    gpu_h = (sum(provider.gpu_seconds(pid) for pid in pools) - hours0) / 3600.0
    return DayResult(fleet.name, calls, met, late, failed, usd, gpu_h, reclaimed,
                     gpu_hours_by_pool={pid: (provider.gpu_seconds(pid) - seconds0[pid]) / 3600.0
                                        for pid in sorted(pools)})


def _served(mine: Mapping[str, list[Instance]], ready_at: Mapping[str, float], t0: float,
            t1: float) -> dict[str, float]:
    """GPUs per pool averaged over ``[t0, t1]``: each counts for the share it was ready."""
    return {pid: sum(min(1.0, max(0.0, (t1 - max(ready_at[i.id], t0)) / (t1 - t0)))
                     for i in insts) for pid, insts in mine.items()}


def _take(provider: SimulatedProvider, mine: dict[str, list[Instance]], pid: str,
          count: int) -> int:
    taken = provider.reclaim(pid, count)
    mine[pid] = [i for i in mine[pid] if i not in taken]
    return len(taken)


def peak_rates(demand: list[dict[ClassKey, float]], first: int, last: int
               ) -> dict[ClassKey, float]:
    """Each class's highest bucket rate in buckets ``[first, last)``."""
    out: dict[ClassKey, float] = {}
    for rates in demand[max(first, 0):max(last, first + 1)]:
        for k, v in rates.items():
            out[k] = max(out.get(k, 0.0), v)
    return out


def buckets_per_hour(demand: list[dict[ClassKey, float]]) -> int:
    return math.ceil(len(demand) / 24)
