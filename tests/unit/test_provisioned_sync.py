"""The provisioned-cost day's timing against a real controller (benchmarks/costsim/
provisioned.py): acting within a bucket, GPUs serving pro rata from when they are ready,
independent autoscalers, Kubernetes' compounded scale-up limit."""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Mapping

import pytest

from benchmarks.costsim import provisioned as sim
from benchmarks.costsim.provisioned_fleets import _scale_up_limit
from benchmarks.costsim.scenario import load_scenario
from benchmarks.planner import keys, problem_of
from placement.plan_types import PlannerSettings
from services.capacity.provider import Instance

SMALL = pathlib.Path(__file__).parents[2] / "benchmarks" / "scenarios" / "small.toml"
H100 = "aws-us-east-1.h100-80gb.on-demand"
SPOT = "gcp-us-central1.l4.spot"


class Follow:
    """GPUs on one pool in proportion to the calls it last saw."""

    name = "follow"

    def __init__(self, variants: frozenset[str], per_gpu_rps: float) -> None:
        self.variants, self.per_gpu, self.gpus = variants, per_gpu_rps, 1

    def control(self, seen: sim.Observed) -> None:
        self.gpus = max(1, math.ceil(sum(seen.rates.values()) / self.per_gpu))

    def targets(self) -> Mapping[str, int]:
        return {H100: self.gpus}

    def loaded(self) -> Mapping[str, frozenset[str]]:
        return {H100: self.variants}


def test_a_controller_acting_within_the_bucket_serves_a_step_sooner() -> None:
    s = dataclasses.replace(load_scenario(SMALL), outages=())
    base = problem_of(s, [], PlannerSettings())
    variants = frozenset(v.name for v in base.variants)
    low = dict.fromkeys(keys(s), 0.5)
    high = dict.fromkeys(keys(s), 300.0)
    demand = [low] * 100 + [high] * 188  # 5-minute buckets, a step at bucket 100
    late = sim.simulate(s, base, Follow(variants, 100.0), demand, seed=1)
    synced = sim.simulate(s, base, Follow(variants, 100.0), demand, seed=1, sync_s=15.0)
    missed_late, missed_synced = late.calls - late.met, synced.calls - synced.met
    # acting at the end of a bucket, the new GPUs serve from two buckets after the step;
    # 15 s into it, they serve the step's last (300 - 15 - 180) s and every bucket after
    assert missed_late > 0 and missed_synced < missed_late * (1 + 105 / 300) / 2
    assert synced.usd == pytest.approx(late.usd, rel=0.02)  # the same GPUs, sooner


def test_gpus_serve_pro_rata_from_when_they_are_ready() -> None:
    a, b = (Instance(i, "p", "sim://" + i, "") for i in ("a", "b"))
    served = sim._served({"p": [a, b]}, {"a": -10.0, "b": 150.0}, 0.0, 300.0)
    assert served == {"p": pytest.approx(1.5)}


class Swap:
    """Two GPUs on the spot pool to one, and the H100 pool from one to two, at bucket 10."""

    name = "swap"

    def __init__(self, independent: bool) -> None:
        self.independent_pools, self.step = independent, 0

    def control(self, seen: sim.Observed) -> None:
        self.step += 1

    def targets(self) -> Mapping[str, int]:
        return {SPOT: 2, H100: 1} if self.step < 10 else {SPOT: 1, H100: 2}

    def loaded(self) -> Mapping[str, frozenset[str]]:
        return {}


def test_an_independent_autoscaler_lets_a_gpu_go_while_another_pool_boots() -> None:
    s = dataclasses.replace(load_scenario(SMALL), outages=())
    base = problem_of(s, [], PlannerSettings())
    demand = [dict.fromkeys(keys(s), 0.0)] * 288
    held = sim.simulate(s, base, Swap(False), demand, seed=1)
    alone = sim.simulate(s, base, Swap(True), demand, seed=1)
    # make before break holds the spot GPU one more bucket, until the H100 serves
    assert held.gpu_hours_by_pool[SPOT] - alone.gpu_hours_by_pool[SPOT] == pytest.approx(
        300 / 3600, abs=0.09)
    assert held.gpu_hours_by_pool[SPOT] > alone.gpu_hours_by_pool[SPOT]


def test_hpa_scale_up_limit_compounds_over_the_syncs_of_a_bucket() -> None:
    assert _scale_up_limit(1, 15.0) == 5  # one sync: max(2 × 1, 1 + 4)
    assert _scale_up_limit(1, 60.0) == 40  # 1 → 5 → 10 → 20 → 40
    assert _scale_up_limit(3, 5.0) == 7  # at least one sync


@pytest.mark.parametrize("name", ["before", "reserve"])
def test_a_planner_configuration_runs_the_small_scenarios_day(name: str) -> None:
    from benchmarks import provisioned as bench
    s = load_scenario(SMALL)
    su = bench.setup(s, quick=True)
    fleet = bench.planner_fleet(s, su, bench.CONFIGS[name])
    r = sim.simulate(s, su.base, fleet, su.today, seed=3, sync_s=bench.SYNC_S)
    assert not fleet.log.infeasible
    assert r.attainment > 0.95 and r.usd > 0
    solves = len(fleet.log.seconds)
    # hourly (and on surprises, outages), or also every 15 minutes and on drift
    assert solves >= 24 and (name == "before" or solves >= 4 * 24)
