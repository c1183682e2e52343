"""N+1 across pools per class: the capacity planner's pool-loss rule (``PlannerSettings.pool_loss``).

A pool can be lost for a cold start: an outage, spot reclaims, a pool filled past its plan.
The HPA holds a GPU in every pool, so a class whose pool fails finds room elsewhere; a plan
that puts a class on one pool and sizes the others for their own flows has none. The rule,
for each class ``k`` with demand and each pool ``p`` it may use (``plan_milp``'s ``x``
columns): the calls/s ``k`` sends ``p`` fit into the other pools' room, within ``k``'s SLO::

    Σ_{q≠p, v} h[k,q,v] >= Σ_v x[k,p,v] − u[k]

- ``h[k,q,v] >= 0``: calls/s of ``k`` pool ``q`` could take on variant ``v`` (loaded:
  ``h <= rate·y[q,v]``; within ``k``'s SLO at ``q``'s emergency utilisation:
  ``h <= rate·Σ_{l : e_l <= ρ*(k,q,v)} t[q,l]``);
- ``room[q] = c·(1 − reclaim_risk)·Σ_l e_l·m[q,l] − work[q] >= Σ_v h[k,q,v]·compute(q,v)``,
  for each class alone (one pool is lost at a time, and a class is checked on its own: the
  classes of a lost pool are not made to share the room);
- ``e_l = min(tier_l + pool_loss_boost, MAX_RHO)``: with no boost, ``q`` stays within the
  utilisation its own classes' SLOs allow; a boost lets it run hotter for the cold start;
- ``u[k]``: what no plan within the pools' limits can cover, at ``POOL_LOSS_USD`` per
  call/s-hour (far above any GPU's price per call/s), so the rule never makes a plan
  impossible (``Plan.pool_loss_uncovered``). A class with one pool in reach is left out.

Written as one total per class, ``H[k] = Σ h[k,·,·]``, and per pool ``H[k] − h[k,p] −
x[k,p] + u[k] >= 0``, so the rows grow with the ``x`` columns, not their square.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING

from placement.latency import MAX_RHO
from placement.plan_types import counted

if TYPE_CHECKING:
    from placement.plan_milp import Model

POOL_LOSS_USD = 1_000.0  # per hour, per call/s of a class no other pool has room for
ROOM_BOUND = 1e7  # upper bound of a pool's room column (concurrency-seconds per second)


def rows(md: Model, work: dict[str, dict[int, float]]) -> None:
    """Add the rule's columns and rows to ``md`` (``work``: per pool, x column -> seconds of
    a GPU slot per call, as in the capacity rows)."""
    problem = md.problem
    s = problem.settings
    by_id = md.by_id
    emergency = [min(lvl + s.pool_loss_boost, MAX_RHO) for lvl in s.tiers]
    per_class: dict[int, dict[str, list[tuple[str, int]]]] = defaultdict(
        lambda: defaultdict(list))
    for (ki, pid, v), col in md.x.items():
        per_class[ki][pid].append((v, col))
    room: dict[str, int] = {}

    def room_of(pid: str) -> int:
        if pid not in room:
            p = by_id[pid]
            share = p.concurrency_per_gpu * counted(p, md.problem.settings)
            room[pid] = md.var(0.0, False, ROOM_BOUND)
            coefs = {room[pid]: 1.0, **work[pid]}
            for li, lvl in enumerate(emergency):
                coefs[md.m[pid, li]] = -share * lvl
            md.rows.add(coefs, -math.inf, 0, "pool_loss")
        return room[pid]

    for ki, pools in sorted(per_class.items()):
        if len(pools) < 2:
            continue
        k = problem.demand[ki]
        total = md.var(0.0, False, math.inf)
        md.uncovered[ki] = md.var(POOL_LOSS_USD, False, k.rate_rps)
        h_of: dict[str, dict[int, float]] = {}
        everything: dict[int, float] = {total: 1.0}
        for pid, cols in sorted(pools.items()):
            h_of[pid] = {}
            fits: dict[int, float] = {}
            for v, xcol in cols:
                h = md.var(0.0, False, k.rate_rps)
                h_of[pid][h] = -1.0
                everything[h] = -1.0
                md.rows.add({h: 1.0, md.y[pid, v]: -k.rate_rps}, -math.inf, 0, "pool_loss")
                tiers = [li for li, e in enumerate(emergency) if e <= md.rho[xcol] + 1e-9]
                md.rows.add({h: 1.0, **{md.t[pid, li]: -k.rate_rps for li in tiers}},
                            -math.inf, 0, "pool_loss")
                fits[h] = work[pid][xcol]
            md.rows.add({**fits, room_of(pid): -1.0}, -math.inf, 0, "pool_loss")
        md.rows.add(everything, 0, 0, "pool_loss")
        for pid, cols in sorted(pools.items()):
            md.rows.add({total: 1.0, **h_of[pid], **{xcol: -1.0 for _, xcol in cols},
                         md.uncovered[ki]: 1.0}, 0, math.inf, "pool_loss")
