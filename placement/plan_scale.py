"""Between plans, the plan's pools sized on observed busy-ness, at an HPA's cadence.

The planner decides *where* capacity lives (pools, variants, the spot/on-demand mix) every
re-plan; :class:`PoolScaler` decides *how many* GPUs each of the plan's pools runs between
re-plans, from what the pools are observed doing, as Kubernetes' HPA sizes a workload:

- ``desired = ceil(busy servers / (concurrency × target))`` with ``target`` =
  ``target_share`` × the plan's utilisation cap for that pool (the highest utilisation every
  class the plan serves there tolerates: its SLO), no change within ``tolerance`` of the GPUs
  serving;
- up at once; down only to the highest recommendation of the last ``down_window_s``
  (the HPA's stabilisation window);
- bounded below by ``min(plan's GPUs, min_gpus)`` (every pool the plan runs keeps a GPU, so
  its variants stay loaded where the plan put them: the region-loss and spot-not-alone
  placement the plan chose keeps existing) and above by the pool's ``max_gpus``;
- a pool with no GPU serving yet (new in the plan, booting) runs the plan's count: there is
  nothing to observe;
- a plan that changes a pool's count (a re-plan for the forecast ahead) is itself a
  recommendation: taken at once if above, and held for ``down_window_s`` like any other, so
  a rise the forecast sees coming is provisioned before it is observed.

Pure: no clock; ``now_s`` is passed in. Pools not in the plan get nothing here (the plan's
placement is the plan's). Measured by the provisioned-cost day's planner fleet
(:class:`benchmarks.costsim.provisioned_fleets.PlannerFleet`, ``scale``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from placement.plan_types import Plan, PlanPool


@dataclass(frozen=True, slots=True)
class ScaleSettings:
    target_share: float = 0.9  # of the plan's utilisation cap per pool
    tolerance: float = 0.1  # no change while busy / (GPUs × target) is within this of 1
    down_window_s: float = 300.0  # scale down to the highest recommendation over this
    min_gpus: int = 1  # per pool the plan runs (at most the plan's count)
    above_plan: bool = True  # False: never above the plan's count (scale down only)


def desired(busy: float, concurrency: int, target: float, serving: int,
            tolerance: float) -> int:
    """The HPA's rule: GPUs for ``busy`` servers at ``target`` utilisation."""
    if serving > 0 and abs(busy / (concurrency * target * serving) - 1) <= tolerance:
        return serving
    return math.ceil(busy / (concurrency * target) - 1e-9)


@dataclass
class PoolScaler:
    """GPU counts for the plan in force's pools from each sync's observed busy servers."""

    settings: ScaleSettings = field(default_factory=ScaleSettings)
    _history: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    _last: dict[str, int] = field(default_factory=dict)
    _planned: dict[str, int] = field(default_factory=dict)  # the plan's count last seen

    def targets(self, now_s: float, plan: Plan, pools: Mapping[str, PlanPool],
                busy: Mapping[str, float], serving: Mapping[str, int]) -> dict[str, int]:
        """GPUs per pool of ``plan`` now; ``busy``: busy servers per pool over the last sync
        (calls/s × service s, late calls included), ``serving``: GPUs serving per pool."""
        s = self.settings
        out: dict[str, int] = {}
        for pp in plan.pools:
            if pp.gpus <= 0:
                continue
            pid, pool = pp.pool, pools[pp.pool]
            ready = serving.get(pid, 0)
            if ready <= 0 or pp.utilisation_cap <= 0:
                want = pp.gpus
            else:
                want = desired(busy.get(pid, 0.0), pool.concurrency_per_gpu,
                               s.target_share * pp.utilisation_cap, ready, s.tolerance)
            if self._planned.get(pid) != pp.gpus:  # the plan moved this pool: its count
                want = max(want, pp.gpus)
            top = max(pool.max_gpus, pp.gpus) if s.above_plan else pp.gpus
            want = min(max(want, min(pp.gpus, s.min_gpus)), top)
            out[pid] = self._stabilised(pid, now_s, want)
        self._last = out
        self._planned = {pp.pool: pp.gpus for pp in plan.pools if pp.gpus > 0}
        self._history = {p: h for p, h in self._history.items() if p in out}
        return out

    def _stabilised(self, pid: str, now_s: float, want: int) -> int:
        window = self.settings.down_window_s
        h = [(t, d) for t, d in self._history.get(pid, []) if t > now_s - window - 1e-9]
        h.append((now_s, want))
        self._history[pid] = h
        current = self._last.get(pid)
        if current is None or want >= current:
            return want
        return min(current, max(d for _, d in h))
