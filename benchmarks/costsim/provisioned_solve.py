"""Planner solve time on synthetic fleets of 10, 100 and 1,000 pools (issue 13).

A synthetic fleet (labelled so wherever it shows): ``pools / 10`` regions (at least two) on
a ring of cities ~800 km apart (RTT = 2 ms + km / 66.7), each with ten pools: T4, L4, A10G,
A100 and H100, on-demand and spot (the first five of these when there are only two regions);
spot at 40 % of on-demand with reclaim risk 0.1; list-price-like USD/GPU-hour. Two models
with a small and a large variant; three classes per edge region (tight, quality-floored,
loose), every region an edge with 5-30 calls/s (seeded).

Strategies, each under the same limits per HiGHS MILP run (the soft spot rule in all):
``NODE_LIMIT`` branch-and-bound nodes (deterministic: the same plan under any host load) and
a wall-clock safety net (``SAFETY_NET_S``; the runs it stopped are the ``cut short`` column):

- **exact**: LP relaxation, the MILP restricted to what it loads, then the full MILP;
- **fast**: LP relaxation and the restricted MILP only, each class limited to its 8 cheapest
  pools per call (``full_milp=False``, ``max_pools_per_class=8``);
- **regions**: fast, on groups of nearby regions of ~100 pools planned apart
  (``group_pools=100``, :mod:`placement.plan_regions`).

The gap is the plan's distance to the best lower bound found (the relaxation's, or the full
MILP's when it ran): an upper bound on how far from optimal the plan is.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from benchmarks.common import Section, command_for, md_table, progress
from placement.plan_types import (
    DemandClass,
    Infeasible,
    PlannerSettings,
    PlanPool,
    PlanVariant,
    Problem,
)
from placement.planner import plan

TITLE = "Provisioned cost: planner solve time at 10, 100 and 1,000 pools (synthetic fleets)"
# The provisioned-cost day's limits too (benchmarks.provisioned.settings_for): on its fleets
# (10-36 pools) a MILP's root node takes 3-15 s on this 2-core host and a node after it
# 0.2-3 s, so the 10 s wall-clock limit before reached 0-25 nodes, as many as the host's
# load allowed. The root and a few nodes, deterministic; the wall clock only as a safety net.
NODE_LIMIT = 4
SAFETY_NET_S = 60.0
# accelerator: (USD/GPU-hour on demand, speed vs a T4, GPU memory GB)
ACCELERATORS = {"t4": (0.53, 1.0, 16), "l4": (0.80, 2.0, 24), "a10g": (1.01, 2.3, 24),
                "a100": (3.67, 4.5, 80), "h100": (6.98, 7.0, 80)}
VARIANTS = (PlanVariant("chat-small", "chat", 0.72, 10, 80),
            PlanVariant("chat-large", "chat", 0.90, 20, 240),
            PlanVariant("gen-small", "gen", 0.70, 10, 500),
            PlanVariant("gen-large", "gen", 0.88, 20, 1500))
CLASSES = (("chat", 0.0, 300.0, 0.5), ("chat", 0.85, 400.0, 0.25), ("gen", 0.0, 2500.0, 0.25))
SPOT_SHARE = 0.4
RING_KM = 800.0


def synthetic(n_pools: int, seed: int = 13) -> Problem:
    """A fleet of ``n_pools`` pools (a multiple of 10) and its demand, seeded."""
    rng = np.random.default_rng(seed)
    regions = [f"r{i:03d}" for i in range(max(2, n_pools // 10))]
    per_region = n_pools // len(regions)
    pools = []
    for r in regions:
        kinds = [(acc, kind) for acc in ACCELERATORS for kind in ("on-demand", "spot")]
        for acc, kind in kinds[:per_region]:
            usd, speed, mem = ACCELERATORS[acc]
            price = usd * (SPOT_SHARE if kind == "spot" else 1.0)
            pools.append(PlanPool(f"{r}-{acc}-{kind}", "synthetic", r, acc, kind,
                                  round(price * rng.uniform(0.9, 1.1), 3), mem, speed, 2,
                                  0.1 if kind == "spot" else 0.0, 64))
    demand = tuple(DemandClass(m, q, slo, r, share * float(rng.uniform(5, 30)))
                   for r in regions for m, q, slo, share in CLASSES)
    index = {r: i for i, r in enumerate(regions)}

    def rtt(a: str, b: str) -> float:
        if a == b:
            return 1.0
        hops = abs(index[a] - index[b])
        hops = min(hops, len(regions) - hops)
        return 2.0 + hops * RING_KM / 66.7

    return Problem(tuple(pools), VARIANTS, demand, rtt, PlannerSettings())


def strategies(limit_s: float) -> dict[str, PlannerSettings]:
    both = PlannerSettings(time_limit_s=limit_s, node_limit=NODE_LIMIT, mip_rel_gap=0.02,
                           spot_rule_where_possible=True)
    return {"exact": both,
            "fast": dataclasses.replace(both, full_milp=False, max_pools_per_class=8),
            "regions": dataclasses.replace(both, full_milp=False, max_pools_per_class=8,
                                           group_pools=100)}


def with_pool_loss(named: dict[str, PlannerSettings]) -> dict[str, PlannerSettings]:
    """Each strategy, and beside it the same with N+1 across pools per class
    (``PlannerSettings.pool_loss``)."""
    out = {}
    for name, st in named.items():
        out[name] = st
        out[f"{name} + N+1 across pools"] = dataclasses.replace(st, pool_loss=True)
    return out


def solve_section(quick: bool, alone: bool = False, pool_loss: bool = False) -> Section:
    """The section; ``alone``: run by ``--solve-times-only`` (its command says so);
    ``pool_loss``: each strategy with and without N+1 across pools, at 10 and 100 pools."""
    t0 = time.monotonic()
    limit = SAFETY_NET_S
    sizes = (10, 100) if pool_loss else (10, 100, 1000)
    named = with_pool_loss(strategies(limit)) if pool_loss else strategies(limit)
    rows: list[list[Any]] = []
    for n in sizes:
        base = synthetic(n)
        for name, st in named.items():
            if n >= 1000 and (name == "exact" or (quick and name == "fast")):
                continue  # one LP relaxation of the whole fleet alone takes minutes here
            problem = Problem(base.pools, base.variants, base.demand, base.rtt_ms, st)
            t1 = time.perf_counter()
            result = plan(problem)
            took = time.perf_counter() - t1
            progress(f"provisioned: solve {n} pools, {name}: {took:.1f} s")
            if isinstance(result, Infeasible):
                rows.append([n, len(base.demand), name, f"{NODE_LIMIT} / {limit:g}",
                             f"{took:.1f}", "–", "–", "–", "–", result.explain()])
                continue
            gpus = sum(p.gpus for p in result.pools)
            rows.append([n, len(base.demand), name, f"{NODE_LIMIT} / {limit:g}", f"{took:.1f}",
                         f"{result.usd_per_hour:,.1f}", f"{result.gap:.1%}", result.solves,
                         result.cut_short,
                         f"{gpus} GPUs in {len(result.pools)} pools"])
    notes = ["Synthetic fleets (`benchmarks/costsim/provisioned_solve.py`), not a scenario: "
             "regions on a ring 800 km apart, ten pools each (five accelerators × on-demand/"
             "spot), three classes per edge region. Limits: branch-and-bound nodes per HiGHS "
             "MILP run (deterministic) / a wall-clock safety net per run in s (a solve makes "
             "up to three runs: relaxation, restricted MILP, full MILP); cut short: the runs "
             "the safety net stopped (0 = the plan does not depend on the host's load).",
             "Solves: the plan's MILP solves, 1 + the route rounds (a class the edges' "
             "cheapest-per-call rule leaves short is solved again, restricted to what the last "
             "plan and the relaxation load; summed over the groups for regions).",
             "Gap: (plan − best lower bound) / plan; the bound is the LP relaxation's unless "
             "the full MILP ran and proved a better one — weak with integer GPUs in many "
             "pools, so it over-states the distance to the optimum."]
    notes.append("Not run at 1,000 pools: " + ("any (--pool-loss)" if pool_loss else "exact"
                 + (" and fast" if quick else ""))
                 + " (the whole fleet's LP relaxation alone takes minutes on this machine).")
    faster = {r[0]: r for r in rows if r[2] == "fast"}
    exact = {r[0]: r for r in rows if r[2] == "exact"}
    for n in sorted(set(faster) & set(exact)):
        if faster[n][5] != "–" and exact[n][5] != "–":
            f_usd = float(str(faster[n][5]).replace(",", ""))
            e_usd = float(str(exact[n][5]).replace(",", ""))
            notes.append(f"{n} pools: fast plan {f_usd / e_usd - 1:+.1%} in $/h against "
                         f"exact, in {float(faster[n][4]) / max(float(exact[n][4]), 1e-9):.0%}"
                         " of its time.")
    return Section(TITLE, command_for("benchmarks.provisioned", quick)
                   + (" --solve-times-only" if alone else "")
                   + (" --pool-loss" if pool_loss else ""),
                   md_table(["pools", "classes", "strategy", "limits (nodes / s)", "wall s",
                             "USD/h", "gap", "solves", "cut short", "plan"], rows,
                            "rrllrrrrrl"),
                   notes, elapsed_s=time.monotonic() - t0)
