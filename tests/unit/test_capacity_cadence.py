"""The live capacity loop runs placement.plan_cadence (the rule the provisioned-cost day
measures): a class observed above its plan right-sizes at once, and GPU counts follow the
demand down at the next quarter-hour right-sizing, between full plans, loading nothing new.
Fake provider and model control, injected clocks (test_capacity_loop's rig)."""

from __future__ import annotations

import pathlib

from structlog.testing import capture_logs

from placement.plan_cadence import Due
from tests.unit.test_capacity_loop import Rig

DEP = "summarize/q>=0.7/300ms/r-east"


async def test_drift_right_sizes_at_once_and_the_quarter_hour_follows_demand_down(
        tmp_path: pathlib.Path) -> None:
    rig = Rig(tmp_path, apply="auto", forecast_every_s=600.0)  # [capacity]'s default cadence
    seen: list[tuple[str, int, list[frozenset[str]]]] = []

    async def at(calls_per_s: float, deployment: str = "east-1/small") -> Due | None:
        rig.calls(deployment, calls_per_s)
        due = rig.loop.observe()
        if due is not None:
            await rig.loop.replan(due)
            insts = rig.provider.instances("east")
            seen.append((due.kind, len(insts), [frozenset(rig.servers[i.id]) for i in insts]))
        return due

    first = await at(150.0, "static-1/small")  # 0:16:40 of a day: 150/s × 1.1 fits one GPU
    assert first is not None and seen == [("first", 1, [frozenset({"small"})])]
    rig.clock.t += 30  # min_replan_s after the first plan
    with capture_logs() as logs:
        drift = await at(260.0)  # above the plan's 165/s by more than 5 % and 3 sigma
    assert drift is not None and (drift.kind, drift.resize) == ("drift", True)
    assert seen[-1] == ("drift", 2, [frozenset({"small"})] * 2)  # a GPU more, nothing loaded
    (proposed,) = [e for e in logs if e["event"] == "capacity.proposed"]
    assert proposed["trigger"] == f"observed above the plan: {DEP}"
    while rig.clock.t < 1000 + 1800:  # the demand falls back: every observe_s for 30 min
        rig.clock.t += rig.cfg.capacity.observe_s
        await at(100.0)
    # no full plan: the quarter-hour right-sizing (0:25) took the GPU away, 0:40 kept one
    assert [(k, n) for k, n, _ in seen] == [("first", 1), ("drift", 2), ("resize", 1),
                                            ("resize", 1)]
    assert seen[2][2] == [frozenset({"small"})]


def test_the_benchmarked_planner_runs_the_live_loops_defaults() -> None:
    from benchmarks import provisioned as bench
    from benchmarks.costsim import provisioned as sim
    from benchmarks.costsim.scenario import load_scenario
    from services.capacity.settings import CapacityConfig, cadence, churn, forecast

    live = CapacityConfig()
    assert live.cold_start_s == sim.PROVISION_DELAY_S
    assert (bench.PLANNER.cadence, bench.PLANNER.churn, bench.PLANNER.forecast) == (
        cadence(live), churn(live), forecast(live))
    s = load_scenario(bench.SCENARIOS / "small.toml")
    fleet = bench.planner_fleet(s, bench.setup(s, quick=False))  # one-minute buckets
    assert fleet.cadence.settings == cadence(live)  # lead 300 s, observed floor over 60 s
    assert bench.BEFORE.cadence != cadence(live)  # the planner before this round differs
