"""The forecast's margin covers a spot pool's reclaims (PlannerSettings.demand_margin): a spot
GPU counts for ``min(1, (1 − reclaim_risk) · margin)`` of its servers, not ``1 − risk`` on top
of a margin the demand already carries (placement/plan_types.py ``counted``)."""

from __future__ import annotations

import dataclasses

import pytest

from placement.plan_types import counted
from tests.unit.test_planner import NO_SURVIVAL, demand, pool, problem, solved

MARGIN = dataclasses.replace(NO_SURVIVAL, demand_margin=1.1)
POOLS = [pool("spot", price=0.1, price_class="spot", reclaim_risk=0.1),
         pool("od", price=10.0, max_gpus=1)]


def test_spot_counts_for_what_the_margin_leaves_of_its_reserve() -> None:
    # 26/s = 2.6 GPUs of work; the one on-demand GPU carries 0.9 at the 0.9 tier, spot 1.7:
    # at 0.9 x 0.9 a GPU that is 3 GPUs, at 0.9 x 0.99 (0.9 x 1.1) it is 2
    assert solved(problem(POOLS, [demand(26)])).gpus() == {"spot": 3, "od": 1}
    told = solved(problem(POOLS, [demand(26)], settings=MARGIN))
    assert told.gpus() == {"spot": 2, "od": 1}
    # the planner's own route check counts spot alike: no round was needed for a shortfall
    assert told.solves == 1


def test_a_spot_gpu_never_counts_for_more_than_its_servers() -> None:
    # 28/s: spot carries 1.9, over 2 GPUs at 0.9 whatever the margin: 3 GPUs
    wide = dataclasses.replace(NO_SURVIVAL, demand_margin=2.0)
    assert solved(problem(POOLS, [demand(28)], settings=wide)).gpus() == {"spot": 3, "od": 1}


@pytest.mark.parametrize(("risk", "margin", "share"), [
    (0.1, 1.0, 0.9), (0.1, 1.1, 0.99), (0.1, 1.25, 1.0), (0.5, 1.1, 0.55), (0.0, 1.1, 1.0),
    (0.1, 0.8, 0.9)])  # a margin under 1 is no margin: the reserve stays whole
def test_counted_share(risk: float, margin: float, share: float) -> None:
    p = pool("p", price_class="spot", reclaim_risk=risk)
    assert counted(p, dataclasses.replace(NO_SURVIVAL, demand_margin=margin)) == \
        pytest.approx(share)


def test_on_demand_pools_are_unchanged() -> None:
    # 10/s = 1 GPU of work: 2 on-demand GPUs at 0.9 with or without the margin
    assert solved(problem([pool("a")], [demand(10)], settings=MARGIN)).gpus() == {"a": 2}
