"""Decomposition by region for large fleets: solve groups of nearby regions apart, then join.

:func:`split` cuts a :class:`~placement.plan_types.Problem` into problems of about
``settings.group_pools`` pools each: groups grow from the region with the most pools left,
taking the nearest regions (by the problem's RTT) until the group holds that many pools;
each edge region's demand goes to the group holding its own region, or to the group with the
lowest RTT from it. :func:`join` sums the groups' plans. A heuristic: calls never cross
groups, so the joined plan may cost more than the whole MILP's; each group keeps every rule
(region loss within the group, spot never alone), so the joined plan keeps them too.
``Plan.gap`` is the largest gap of a group, measured within that group.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from placement.plan_types import DemandClass, Plan, PlanPool, Problem


def split(problem: Problem) -> list[Problem]:
    size = problem.settings.group_pools
    by_region: dict[str, list[PlanPool]] = defaultdict(list)
    for p in problem.pools:
        by_region[p.region].append(p)
    left = set(by_region)
    groups: list[list[str]] = []
    while left:
        seed = max(sorted(left), key=lambda r: len(by_region[r]))
        near = sorted(left, key=lambda r: (problem.rtt_ms(seed, r) if r != seed else -1.0, r))
        group: list[str] = []
        count = 0
        for r in near:
            if count >= size and len(group) >= 2:
                break
            group.append(r)
            count += len(by_region[r])
        if len(left) - len(group) == 1:  # never leave one region alone (region loss)
            group.extend(left - set(group))
        left -= set(group)
        groups.append(group)
    home = {r: i for i, g in enumerate(groups) for r in g}
    demand: dict[int, list[DemandClass]] = defaultdict(list)
    for k in problem.demand:
        gi = home.get(k.edge_region)
        if gi is None:
            gi = min(range(len(groups)), key=lambda i: min(
                problem.rtt_ms(k.edge_region, r) for r in groups[i]))
        demand[gi].append(k)
    return [dataclasses.replace(
        problem, pools=tuple(p for r in g for p in by_region[r]), demand=tuple(demand[i]),
        settings=dataclasses.replace(problem.settings, group_pools=0))
        for i, g in enumerate(groups)]


def join(plans: list[Plan]) -> Plan:
    pools = sorted((pp for p in plans for pp in p.pools), key=lambda pp: (pp.usd_per_hour,
                                                                          pp.pool))
    return Plan(tuple(pools), sum(p.usd_per_hour for p in plans),
                max((p.gap for p in plans), default=0.0),
                tuple(k for p in plans for k in p.spot_alone), sum(p.solves for p in plans),
                tuple(k for p in plans for k in p.not_carried),
                sum(p.cut_short for p in plans),
                tuple(k for p in plans for k in p.pool_loss_uncovered))
