"""The planner fleet's right-sizing between hourly plans, and the miss diagnosis
(benchmarks/costsim/provisioned_fleets.py, benchmarks/provisioned_diag.py)."""

from __future__ import annotations

import itertools
import math
import pathlib

from benchmarks.costsim import provisioned as sim
from benchmarks.costsim.provisioned_fleets import PlannerFleet
from benchmarks.provisioned_diag import causes, held
from placement.forecast import ClassKey, DemandForecaster, ForecastSettings
from placement.plan_cadence import CadenceSettings
from placement.plan_types import DemandClass, PlannerSettings, PlanPool, PlanVariant, Problem
from placement.replan import ChurnCost

V = PlanVariant("m-small", "m", 0.7, 10, 100)
KEY = ClassKey("m", 0.0, 10_000.0, "r1")
POOL = PlanPool("p", "c", "r1", "gpu", "on-demand", 0.3, 80)
DAY = 86_400.0


def of(demand: list[DemandClass], down: frozenset[str]) -> Problem:
    return Problem((POOL,), (V,), tuple(demand), lambda a, b: 1.0,
                   PlannerSettings(survive_region_loss=False))


def daily(hour: float) -> float:
    return 200.0 + 150.0 * math.cos(2 * math.pi * (hour - 14.0) / 24)


def gpus_through_the_evening(resize_every_s: float) -> list[tuple[float, int]]:
    f = DemandForecaster(ForecastSettings(within_hour=True))
    for i in range(40 * 6):  # yesterday, and today until 16:00 (the forecast's state fresh)
        f.observe(KEY, i * 600.0, daily(i / 6))
    fleet = PlannerFleet(of, f, ChurnCost(usd_per_gpu_change=0.0, cold_start_s=180),
                         CadenceSettings(lead_s=300.0, resize_every_s=resize_every_s),
                         day_offset_s=DAY)
    fleet.start(16 * 3600.0)
    seen = []
    for b in range(16 * 12 + 1, 22 * 12):  # 16:05 to 22:00 in 5-minute buckets
        now = b * 300.0
        rate = daily(now / 3600.0)
        fleet.control(sim.Observed(now, {KEY: rate}, {}, {}, {}, frozenset(), 300.0))
        seen.append((now, fleet.targets()["p"]))
    return seen


def changes_off_the_hour(seen: list[tuple[float, int]]) -> int:
    return sum(1 for (_, a), (t, b) in itertools.pairwise(seen)
               if a != b and 600.0 < t % 3600 < 3000.0)


def test_right_sizing_follows_the_evening_down_between_hourly_plans() -> None:
    hourly, quarter = gpus_through_the_evening(0.0), gpus_through_the_evening(900.0)
    assert changes_off_the_hour(hourly) == 0
    assert changes_off_the_hour(quarter) >= 3
    assert sum(n for _, n in quarter) < sum(n for _, n in hourly)
    for now, n in quarter:  # never below what the calls need at the 0.9 tier
        assert n >= daily(now / 3600.0) * 0.1 / 0.9 - 1e-6


def bucket(calls: float, missed: float, *, ready: int = 2, active: int = 2,
           reclaimed: int = 0, down: frozenset[str] = frozenset()) -> sim.Bucket:
    return sim.Bucket(0.0, calls, calls - missed, missed, 0.0, {"p": ready}, {"p": active},
                      reclaimed, down)


def test_misses_are_put_on_the_first_cause_that_holds() -> None:
    trace = [bucket(10, 1, down=frozenset({"p"})),  # outage
             bucket(10, 0, reclaimed=1), bucket(10, 2),  # a reclaim just before: reclaim
             bucket(10, 0), bucket(10, 0), bucket(10, 3, ready=1, active=2),  # booting
             bucket(12, 4),  # the plan was for 11/s: under forecast
             bucket(10, 5)]  # none of these: steady
    planned = [11.0] * len(trace)
    got = causes(trace, planned, bucket_s=300.0)
    assert got == {"outage": 300.0, "reclaim": 600.0, "cold start": 900.0,
                   "under forecast": 1200.0, "steady": 1500.0}


def burst_targets(react: float) -> tuple[list[int], int]:
    """GPUs through a 3× burst at 14:00 that yesterday did not have."""
    f = DemandForecaster(ForecastSettings(within_hour=True))
    for i in range(24 * 6):
        f.observe(KEY, i * 600.0, daily(i / 6) / 3)
    fleet = PlannerFleet(of, f, ChurnCost(usd_per_gpu_change=0.0, cold_start_s=180),
                         CadenceSettings(lead_s=300.0, resize_every_s=900.0,
                                         react_tolerance=react, react_window_s=300.0),
                         day_offset_s=DAY)
    fleet.start(13 * 3600.0)
    seen = []
    for b in range(13 * 12, 15 * 12):
        now = b * 300.0 + 15.0
        rate = daily(now / 3600.0) * (3.0 if 14 * 3600 <= now < 14.5 * 3600 else 1.0)
        fleet.control(sim.Observed(now, {KEY: rate / 3}, {}, {}, {}, frozenset(), 300.0))
        seen.append(fleet.targets()["p"])
    return seen, fleet.log.reactions


def test_reacting_meets_a_burst_in_the_bucket_it_starts_and_noise_is_no_drift() -> None:
    calm, _ = burst_targets(0.0)
    quick, reactions = burst_targets(0.05)
    at = 12  # 14:00, the burst's first bucket
    assert quick[at] >= 3 * quick[at - 1] * 0.9  # three times the calls, at once
    assert calm[at] < 2 * calm[at - 1]  # the forecast alone waits for a surprise
    assert 1 <= reactions <= 2
    assert quick[-4:] == calm[-4:]  # after it, the forecast alone again (its level rose)


def test_the_diagnosis_goes_after_the_provisioned_sections_and_replaces_itself(
        tmp_path: pathlib.Path) -> None:
    from benchmarks.common import Section
    from benchmarks.provisioned_diag import TITLE, write
    results = tmp_path / "RESULTS.md"
    results.write_text("# R\n\n## Cost: a\n\nx\n\n## Provisioned cost: b\n\ny\n\n"
                       "## Provisioned cost: c\n\nz\n\n## Envoy\n\nw\n")
    write(Section(TITLE, "cmd one", "| t |"), results)
    write(Section(TITLE, "cmd two", "| t |"), results)
    text = results.read_text()
    titles = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert titles == ["Cost: a", "Provisioned cost: b", "Provisioned cost: c", TITLE, "Envoy"]
    assert "cmd two" in text and "cmd one" not in text


def test_a_replayed_day_runs_the_planners_plans_and_its_scaler_sizes_them() -> None:
    from benchmarks.costsim.provisioned_fleets import ReplayedPlanner
    from placement.plan_scale import ScaleSettings

    f = DemandForecaster(ForecastSettings(within_hour=True))
    for i in range(40 * 6):
        f.observe(KEY, i * 600.0, daily(i / 6))
    fleet = PlannerFleet(of, f, ChurnCost(usd_per_gpu_change=0.0, cold_start_s=180),
                         CadenceSettings(lead_s=300.0, resize_every_s=900.0), day_offset_s=DAY)
    fleet.start(16 * 3600.0)
    seen = []
    for b in range(16 * 12 + 1, 20 * 12):
        now = b * 300.0
        obs = sim.Observed(now, {KEY: daily(now / 3600.0)}, {"p": 1.0}, {"p": 50}, {"p": 50},
                           frozenset(), 300.0)
        fleet.control(obs)
        seen.append((obs, dict(fleet.targets()), dict(fleet.loaded())))
    pools = {"p": POOL}
    same = ReplayedPlanner(fleet.first_plan, fleet.history, pools, None, "replay")
    scaled = ReplayedPlanner(fleet.first_plan, fleet.history, pools,
                             ScaleSettings(down_window_s=0.0), "scaled")
    assert same.targets() == scaled.targets() == fleet.first_plan.gpus()  # type: ignore[union-attr]
    sized = []
    for obs, targets, loaded in seen:
        same.control(obs)
        scaled.control(obs)
        assert same.targets() == targets and same.loaded() == loaded
        assert scaled.loaded() == loaded
        assert scaled.targets()["p"] <= targets["p"]
        sized.append(scaled.targets()["p"])
    # one server busy: the HPA's rule wants 2 GPUs at 0.9 × the cap; the plan's count only
    # when a re-plan changes it
    assert min(sized) <= 2 < min(t["p"] for _, t, _ in seen)
    assert sum(sized) < sum(t["p"] for _, t, _ in seen) / 2


def test_held_names_where_a_fleet_misses_and_what_the_hpa_held_there() -> None:
    def at(b: int, missed: float, ready: dict[str, int]) -> sim.Bucket:
        return sim.Bucket(b * 300.0, 10, 10 - missed, missed, 0.0, ready, ready, 0,
                          frozenset())

    # the planner misses in buckets 13 and 14 (hour 1) and 40 (hour 3) on one GPU of p;
    # the HPA held p at 2 and q at 1 throughout, and missed only in bucket 40
    trace = [at(b, 1.0 if b in (13, 14, 40) else 0.0, {"p": 1}) for b in range(48)]
    hpa = [at(b, 0.5 if b == 40 else 0.0, {"p": 2, "q": 1}) for b in range(48)]
    got = held(hpa, trace, [100.0] * 48, bucket_s=300.0)
    assert got == ("steady: 3 buckets (hours 1, 3), 900 calls missed (the HPA 150 in them); "
                   "the HPA held more ready GPUs there on p +3, q +3 (GPU-buckets).")
    assert held(hpa, hpa[:40], [100.0] * 40, 300.0) == "no bucket with a missed call."
