"""Columns fixed before HiGHS runs (``placement.planner._idle``): idle pools and dominated
utilisation tiers. The model HiGHS gets is smaller; the optimum is the same (issue 13:
default's offline optimum spent its time in the roots of these MILPs)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from scipy.optimize import milp as real_milp  # type: ignore[import-untyped]

from benchmarks.costsim.provisioned_solve import synthetic
from placement import planner
from placement.plan_milp import build
from placement.plan_types import DemandClass, Plan, PlannerSettings, PlanPool, PlanVariant, Problem

SMALL = PlanVariant("m-small", "m", 0.7, memory_gb=12, compute_ms=100)


def _exact(problem: Problem) -> Problem:
    return dataclasses.replace(problem, settings=dataclasses.replace(
        problem.settings, mip_rel_gap=1e-6, node_limit=10_000, time_limit_s=120.0,
        spot_rule_where_possible=True, route_rounds=0))


def test_the_optimum_is_the_same_with_and_without_the_fixed_columns(
        monkeypatch: pytest.MonkeyPatch) -> None:
    problem = _exact(synthetic(10))
    free: list[int] = []

    def spy(c: Any, **kw: Any) -> Any:
        free.append(int(np.sum(kw["bounds"].ub > 0)))
        return real_milp(c, **kw)

    monkeypatch.setattr(planner, "milp", spy)
    reduced = planner.plan(problem)
    reduced_free = list(free)
    free.clear()
    monkeypatch.setattr(planner, "_idle", lambda md, allow: set())
    whole = planner.plan(problem)
    assert isinstance(reduced, Plan) and isinstance(whole, Plan)
    assert reduced.usd_per_hour == pytest.approx(whole.usd_per_hour, abs=1e-6)
    assert reduced.gap <= 1e-4 and whole.gap <= 1e-4  # both proven optimal
    # HiGHS was handed fewer free columns in every run
    assert len(reduced_free) >= 1
    assert all(r < w for r, w in zip(reduced_free, free, strict=False))


def _rtt(edge: str, region: str) -> float:
    return 1.0 if edge == region else 200.0


def test_a_pool_holding_a_variant_only_for_region_loss_keeps_a_tier() -> None:
    # r2 is 200 ms away: no flow of the 300 ms class may go there, but the region-loss rule
    # needs the variant loaded outside r1, so r2's pool runs one GPU that serves nothing.
    pools = (PlanPool("r1-a", "cloud", "r1", "gpu", "on-demand", 1.0, 80),
             PlanPool("r2-a", "cloud", "r2", "gpu", "on-demand", 2.0, 80))
    problem = Problem(pools, (SMALL,), (DemandClass("m", 0.0, 300, "r1", 1.0),), _rtt,
                      PlannerSettings())
    md = build(problem)
    assert not any(pid == "r2-a" for (_, pid, _) in md.x)  # r2 is no candidate ...
    found = planner.plan(problem)
    assert isinstance(found, Plan), found.explain()
    assert found.gpus() == {"r1-a": 1, "r2-a": 1}  # ... and still holds the variant
    assert found.loaded()["r2-a"] == frozenset({"m-small"})


def test_only_the_highest_tier_under_each_flows_limit_is_kept() -> None:
    pools = (PlanPool("a", "cloud", "r1", "gpu", "on-demand", 1.0, 80),)
    problem = Problem(pools, (SMALL,), (DemandClass("m", 0.0, 231 + 10, "r1", 6.0),), _rtt,
                      PlannerSettings(survive_region_loss=False))
    md = build(problem)
    (col,) = md.x.values()
    rho = md.rho[col]
    tiers = problem.settings.tiers
    kept = max(li for li, lvl in enumerate(tiers) if lvl <= rho + 1e-9)
    idle = planner._idle(md, None)
    assert md.t["a", kept] not in idle and md.m["a", kept] not in idle
    assert all(md.t["a", li] in idle for li in range(len(tiers)) if li != kept)
    assert md.n["a"] not in idle
    # a pool that may load nothing has no GPUs
    assert md.n["a"] in planner._idle(md, set())
