"""The capacity planner on instances small enough to check by hand (placement/planner.py)."""

from __future__ import annotations

import dataclasses

import pytest

from placement import latency
from placement.planner import (
    DemandClass,
    Infeasible,
    Plan,
    PlannerSettings,
    PlanPool,
    PlanVariant,
    Problem,
    evaluate,
    max_utilisation,
    plan,
)
from placement.replan import ChurnCost, decide

SMALL = PlanVariant("m-small", "m", 0.7, memory_gb=12, compute_ms=100)
LARGE = PlanVariant("m-large", "m", 0.9, memory_gb=12, compute_ms=100)
OTHER = PlanVariant("o-small", "o", 0.7, memory_gb=12, compute_ms=100)
NO_SURVIVAL = PlannerSettings(survive_region_loss=False)


def pool(pid: str, region: str = "r1", price: float = 1.0, price_class: str = "on-demand",
         memory: float = 80, **kw: object) -> PlanPool:
    return PlanPool(pid, "cloud", region, "gpu", price_class, price, memory, **kw)  # type: ignore[arg-type]


def demand(rate: float, slo: float = 10_000, quality: float = 0.0, model: str = "m",
           edge: str = "r1") -> DemandClass:
    return DemandClass(model, quality, slo, edge, rate)


def rtt(edge: str, region: str) -> float:
    return 1.0 if edge == region else 200.0


def problem(pools: list[PlanPool], classes: list[DemandClass],
            variants: tuple[PlanVariant, ...] = (SMALL,),
            settings: PlannerSettings = NO_SURVIVAL) -> Problem:
    return Problem(tuple(pools), variants, tuple(classes), rtt, settings)


def solved(p: Problem) -> Plan:
    result = plan(p)
    assert isinstance(result, Plan), result.explain()
    return result


def test_max_utilisation_inverts_the_brains_p95() -> None:
    rho = max_utilisation(rtt_ms=1, compute_ms=100, concurrency=1, slo_ms=231)
    assert rho == pytest.approx(0.5)
    p95 = latency.p95_ms(1, latency.queue_ms(100, rho, 1), 100)
    assert p95 == pytest.approx(231)
    assert max_utilisation(1, 100, 1, 131) == 0.0  # no budget left for any queue
    assert max_utilisation(1, 100, 1, 1e9) == latency.MAX_RHO


def test_gpus_cover_the_work_at_the_highest_tier() -> None:
    # 10 calls/s × 0.1 s = 1 GPU of work; at the 0.9 tier that is 1.11 → 2 GPUs.
    result = solved(problem([pool("a")], [demand(10)]))
    assert result.gpus() == {"a": 2}
    assert result.usd_per_hour == pytest.approx(2.0)
    (pp,) = result.pools
    assert pp.variants == ("m-small",)
    assert pp.utilisation == pytest.approx(0.5)
    assert pp.utilisation_cap == latency.MAX_RHO


def test_slo_lowers_the_utilisation_and_adds_a_gpu() -> None:
    # 6/s × 0.1 s = 0.6 of a GPU: fine at 0.9, but an SLO of 231 ms allows only ρ = 0.5.
    assert solved(problem([pool("a")], [demand(6, slo=1000)])).gpus() == {"a": 1}
    tight = solved(problem([pool("a")], [demand(6, slo=231)]))
    assert tight.gpus() == {"a": 2}
    assert tight.pools[0].utilisation_cap == pytest.approx(0.5)


def test_a_pool_is_sized_near_its_flows_cap_not_a_coarse_tier_below() -> None:
    # SLO 223 ms: ρ* = 0.48 (a budget of 92 ms over 100 ms of compute). 8.5/s × 0.1 s = 0.85
    # of a GPU's work: 2 GPUs at the 0.45 tier (0.425 each), 3 at the 0.3 tier that the
    # grid before (0.3, 0.5, ...) put under 0.48.
    rho = max_utilisation(1, 100, 1, 223)
    assert 0.45 < rho < 0.5
    result = solved(problem([pool("a")], [demand(8.5, slo=223)]))
    assert result.gpus() == {"a": 2}
    assert result.pools[0].utilisation == pytest.approx(0.425)
    assert result.pools[0].utilisation <= result.pools[0].utilisation_cap


def test_slo_rules_out_a_cheap_far_pool() -> None:
    pools = [pool("near", "r1", price=3.0), pool("far", "r2", price=1.0)]
    assert solved(problem(pools, [demand(1, slo=1000)])).gpus() == {"far": 1}
    assert solved(problem(pools, [demand(1, slo=300)])).gpus() == {"near": 1}


def test_quality_floor_picks_the_better_variant() -> None:
    result = solved(problem([pool("a")], [demand(1, quality=0.85)], variants=(SMALL, LARGE)))
    assert result.loaded() == {"a": frozenset({"m-large"})}


def test_memory_headroom_keeps_two_variants_apart() -> None:
    # 12 + 12 GB on a 24 GB GPU: fits with no headroom, not with 10 % kept free (21.6 GB);
    # then one variant must go to the dearer 16 GB pool.
    pools = [pool("cheap", price=1.0, memory=24), pool("big", price=2.0, memory=16)]
    classes = [demand(1), demand(1, model="o")]
    tight = solved(problem(pools, classes, (SMALL, OTHER),
                           PlannerSettings(survive_region_loss=False, memory_headroom=0.0)))
    assert tight.loaded() == {"cheap": frozenset({"m-small", "o-small"})}
    roomy = solved(problem(pools, classes, (SMALL, OTHER), NO_SURVIVAL))
    assert roomy.gpus() == {"cheap": 1, "big": 1}
    assert len(roomy.loaded()["cheap"]) == 1


def test_region_loss_needs_a_second_region() -> None:
    pools = [pool("r1-a", "r1", price=1.0), pool("r2-a", "r2", price=2.0)]
    classes = [demand(1, slo=1000)]
    assert solved(problem(pools, classes)).gpus() == {"r1-a": 1}
    both = solved(problem(pools, classes, settings=PlannerSettings()))
    assert both.gpus() == {"r1-a": 1, "r2-a": 1}
    assert all(v == frozenset({"m-small"}) for v in both.loaded().values())


def test_spot_is_never_the_only_capacity() -> None:
    # 20/s = 2 GPUs of work; spot is 4× cheaper but one on-demand GPU must hold the class.
    pools = [pool("spot", price=0.25, price_class="spot"), pool("od", price=1.0)]
    result = solved(problem(pools, [demand(20)]))
    assert result.gpus()["od"] >= 1
    assert "m-small" in result.loaded()["od"]
    assert result.gpus()["spot"] >= 1


def test_reclaim_risk_discounts_spot_capacity() -> None:
    # 20/s = 2 GPUs of work; the one on-demand GPU carries 0.9, spot the other 1.1:
    # 1.1 / 0.9 → 2 GPUs, but with half of spot expected back 1.1 / (0.9 × 0.5) → 3.
    pools = [pool("spot", price=0.1, price_class="spot", reclaim_risk=0.5),
             pool("od", price=10.0, max_gpus=1)]
    safe = dataclasses.replace(pools[0], reclaim_risk=0.0)
    assert solved(problem([safe, pools[1]], [demand(20)])).gpus() == {"spot": 2, "od": 1}
    assert solved(problem(pools, [demand(20)])).gpus() == {"spot": 3, "od": 1}


@pytest.mark.parametrize(("pools", "classes", "variants", "settings", "constraint"), [
    ([pool("a")], [demand(1, quality=0.95)], (SMALL, LARGE), NO_SURVIVAL, "quality"),
    ([pool("far", "r2")], [demand(1, slo=150)], (SMALL,), NO_SURVIVAL, "slo"),
    ([pool("a", memory=10)], [demand(1)], (SMALL,), NO_SURVIVAL, "memory"),
    ([pool("a", max_gpus=1)], [demand(20)], (SMALL,), NO_SURVIVAL, "max_gpus"),
    ([pool("s", price_class="spot")], [demand(1)], (SMALL,), NO_SURVIVAL, "spot"),
    ([pool("a"), pool("b")], [demand(1)], (SMALL,), PlannerSettings(), "region_loss"),
])
def test_infeasible_names_the_constraint(pools: list[PlanPool], classes: list[DemandClass],
                                         variants: tuple[PlanVariant, ...],
                                         settings: PlannerSettings, constraint: str) -> None:
    result = plan(problem(pools, classes, variants, settings))
    assert isinstance(result, Infeasible)
    assert result.constraint == constraint, result.explain()


def test_explain_names_pools_classes_and_flows() -> None:
    text = solved(problem([pool("a")], [demand(10)])).explain()
    assert "a: 2 GPU(s) $2.00/h, m-small, utilisation 50% (cap 95%)" in text
    assert "m/q>=0/10000ms/r1 via m-small: 10.00/s" in text


def test_hysteresis_keeps_a_plan_whose_saving_does_not_pay_for_churn() -> None:
    pools = [pool("a")]
    current = solved(problem(pools, [demand(10)]))  # 2 GPUs
    lower = problem(pools, [demand(5)])  # 0.5 of a GPU: 1 GPU saves $1/h
    expensive = decide(lower, current, ChurnCost(usd_per_gpu_change=2.0, horizon_h=1.0))
    assert not isinstance(expensive, Infeasible)
    assert not expensive.adopt
    assert expensive.plan.gpus() == {"a": 2}
    assert expensive.saving_usd == pytest.approx(1.0)
    assert expensive.churn_usd == pytest.approx(2.0)
    cheap = decide(lower, current, ChurnCost(usd_per_gpu_change=0.5, horizon_h=1.0))
    assert not isinstance(cheap, Infeasible)
    assert cheap.adopt
    assert cheap.plan.gpus() == {"a": 1}


def test_hysteresis_adopts_when_the_current_plan_no_longer_serves() -> None:
    pools = [pool("a")]
    current = solved(problem(pools, [demand(5)]))  # 1 GPU
    higher = problem(pools, [demand(10)])
    assert isinstance(evaluate(higher, current), Infeasible)
    result = decide(higher, current, ChurnCost(usd_per_gpu_change=1000.0))
    assert not isinstance(result, Infeasible)
    assert result.adopt
    assert result.plan.gpus() == {"a": 2}
    assert "no longer serves" in result.reason


def test_load_everywhere_baseline_runs_every_pool_with_every_variant() -> None:
    pools = [pool("a", price=1.0), pool("b", price=2.0, memory=16)]
    settings = PlannerSettings(survive_region_loss=False, load_everywhere=True)
    assert solved(problem(pools, [demand(1)], (SMALL, OTHER))).gpus() == {"a": 1}
    result = solved(problem(pools, [demand(1)], (SMALL, OTHER), settings))
    assert result.gpus() == {"a": 1, "b": 1}  # 24 GB on a 16 GB GPU: memory not checked
    assert result.loaded() == {"a": frozenset({"m-small", "o-small"}),
                               "b": frozenset({"m-small", "o-small"})}
