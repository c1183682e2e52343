"""A plan checked against how edges route (placement/plan_route.py, placement.planner's
route rounds, placement.replan): a class with another option takes the room a plan kept on a
pool for a class with none, and the planner plans for it (the far-edge scenario's misses)."""

from __future__ import annotations

import dataclasses

import pytest

from placement.plan_route import shortfall
from placement.plan_types import max_utilisation
from placement.planner import (
    DemandClass,
    Plan,
    PlannerSettings,
    PlanPool,
    PlanVariant,
    Problem,
    plan,
    resize,
)
from placement.replan import ChurnCost, Decision, decide, right_size

V = PlanVariant("m-small", "m", 0.7, memory_gb=12, compute_ms=100)
# hub: cheap per call, the only pool the far edge reaches in SLO; other: dear, kept for its
# own region's class, with room the planner gives the near class.
HUB = PlanPool("hub", "cloud", "hub", "gpu", "on-demand", 1.0, 80)
OTHER = PlanPool("other", "cloud", "other", "gpu", "on-demand", 5.0, 80)
RTT = {("a-near", "hub"): 1.0, ("a-near", "other"): 1.0, ("b-far", "hub"): 150.0,
       ("b-far", "other"): 400.0, ("other", "other"): 1.0, ("other", "hub"): 500.0}
NEAR = DemandClass("m", 0.0, 400, "a-near", 1.0)  # sorts before the far class: routed first
FAR = DemandClass("m", 0.0, 400, "b-far", 5.0)  # work 0.5: one hub GPU at the 0.5 tier
LOCAL = DemandClass("m", 0.0, 400, "other", 2.0)


def problem(rounds: int, demand: tuple[DemandClass, ...] = (NEAR, FAR, LOCAL)) -> Problem:
    return Problem((HUB, OTHER), (V,), demand, lambda e, r: RTT[e, r],
                   PlannerSettings(survive_region_loss=False, route_rounds=rounds))


def solved(p: Problem) -> Plan:
    result = plan(p)
    assert isinstance(result, Plan), result.explain()
    return result


def test_the_far_class_rho_is_the_hubs_lowest_tier_it_fills() -> None:
    # the instance is what the test says: far calls tolerate ~0.55 on the hub, near ~0.73
    assert max_utilisation(150.0, 100, 1, 400) == pytest.approx(0.545, abs=1e-3)
    assert max_utilisation(1.0, 100, 1, 400) == pytest.approx(0.729, abs=1e-3)


def test_flows_alone_leave_the_far_class_short_as_edges_route() -> None:
    lean = solved(problem(rounds=0))
    assert lean.gpus() == {"hub": 1, "other": 1}  # near calls planned on the dear pool
    # Edges send near calls to the hub (cheaper per call): they fill 0.1 of its one server
    # and the far class, capped at 0.545, finds room for 4.45 of its 5 calls/s.
    short = shortfall(problem(rounds=0), lean)
    assert set(short) == {1}
    assert short[1] == pytest.approx(5.0 - (0.545454 - 0.1) / 0.1, abs=1e-3)


def test_the_planner_plans_for_what_edges_take() -> None:
    routed = solved(problem(rounds=3))
    assert routed.gpus()["hub"] == 2
    assert shortfall(problem(rounds=3), routed) == {}
    assert routed.usd_per_hour > solved(problem(rounds=0)).usd_per_hour


def test_no_class_short_means_one_solve_the_same_plan() -> None:
    alone = (dataclasses.replace(FAR, rate_rps=4.0), LOCAL)  # no near class: nothing to take
    assert solved(problem(3, alone)).gpus() == solved(problem(0, alone)).gpus()
    assert shortfall(problem(3, alone), solved(problem(3, alone))) == {}


def test_right_sizing_plans_for_what_edges_take() -> None:
    lean = solved(problem(rounds=0))
    sized = resize(problem(rounds=3), lean)
    assert isinstance(sized, Plan)
    assert sized.gpus()["hub"] == 2 and shortfall(problem(rounds=3), sized) == {}
    d = right_size(problem(rounds=3), lean, ChurnCost())
    assert isinstance(d, Decision) and d.adopt and d.plan.gpus()["hub"] == 2


def test_a_dearer_plan_is_adopted_when_the_current_one_leaves_calls_short() -> None:
    lean = solved(problem(rounds=0))
    d = decide(problem(rounds=3), lean, ChurnCost(usd_per_gpu_change=0.0))
    assert isinstance(d, Decision) and d.adopt
    assert "edges' routing" in d.reason
    assert d.plan.gpus()["hub"] == 2
    # with the check off, the cheaper current plan stays (its flows serve the forecast)
    off = decide(problem(rounds=0), lean, ChurnCost(usd_per_gpu_change=0.0))
    assert isinstance(off, Decision) and not off.adopt


def _count_solves(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each HiGHS run ``plan`` makes, by kind: relax, restricted (an ``allow``) or full."""
    from placement import planner
    runs: list[str] = []
    real = planner._solve

    def counted(md, drop="", fixed=None, relax=False, allow=None):  # type: ignore[no-untyped-def]
        runs.append("relax" if relax else "full" if allow is None and fixed is None
                    else "restricted")
        return real(md, drop=drop, fixed=fixed, relax=relax, allow=allow)

    monkeypatch.setattr(planner, "_solve", counted)
    return runs


def test_nothing_short_means_no_second_solve(monkeypatch: pytest.MonkeyPatch) -> None:
    alone = (dataclasses.replace(FAR, rate_rps=4.0), LOCAL)
    runs = _count_solves(monkeypatch)
    found = solved(problem(3, alone))
    assert found.solves == 1
    assert runs.count("relax") == 1  # one _optimise (it starts with the relaxation), no round


def test_a_route_round_restarts_from_the_last_plan_not_the_full_milp(
        monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _count_solves(monkeypatch)
    routed = solved(problem(rounds=3))
    assert routed.solves >= 2  # the near class took the far class's room: one round at least
    assert routed.gpus()["hub"] == 2 and shortfall(problem(rounds=3), routed) == {}
    # only the first solve may run the full MILP; a round runs a relaxation and a restricted
    # MILP from the last plan
    assert runs.count("full") <= 1
    assert runs.count("restricted") >= 1 + (routed.solves - 1)
    assert runs.count("relax") == routed.solves


def test_the_router_is_built_once_per_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    from placement import plan_route
    built: list[int] = []
    real = plan_route.Router.__init__

    def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        built.append(1)
        real(self, *args, **kwargs)

    monkeypatch.setattr(plan_route.Router, "__init__", counted)
    routed = solved(problem(rounds=3))
    assert routed.solves >= 2 and len(built) == 1
