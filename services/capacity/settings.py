"""The ``[capacity]`` section of the mesh file: the capacity loop placement runs (issue 13).

::

    [capacity]
    enabled = true
    apply = "approve"          # or "auto"; "approve" waits for `switchyard plan --approve`
    interval_s = 3600          # scheduled full plan; GPU counts right-sized every resize_every_s
    observe_s = 5              # how often the edges' call rates are read (drift, new classes)

    [[capacity.pools]]         # GPUs of one kind the loop may add (local provider: tritonserver)
    id = "t4-east"
    region = "aws-us-east-1"
    accelerator = "nvidia-t4"
    variants = ["summarize-small", "summarize-large"]   # what its repository holds
    gpu_memory_gb = 16
    max_gpus = 2

    [[capacity.variants]]      # declared footprint/compute until NVML measures the first load
    name = "summarize-large"
    memory_gb = 10
    compute_ms = 120

Cross-references (regions, variants, pool ids against backend ids) are checked by
:func:`check_capacity`, which ``MeshConfig`` calls from its validator.

When to re-plan and for what demand is :mod:`placement.plan_cadence` (:func:`cadence`), the
churn a plan must pay for :class:`placement.replan.ChurnCost` (:func:`churn`): the defaults
are the planner ``python -m benchmarks.provisioned`` measures (its one-minute run: lead 300 s,
observed floor over 60 s; its ``--quick`` run stretches both to its 5-minute buckets).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # imported where used: every process reads this config, few plan (scipy)
    from placement.forecast import ForecastSettings
    from placement.plan_cadence import CadenceSettings
    from placement.replan import ChurnCost


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CapacityPoolConfig(_Strict):
    """GPUs of one kind in one region at one price class; each GPU is one Triton server."""

    id: str
    region: str
    accelerator: str
    price_class: Literal["on-demand", "spot", "reserved"] = "on-demand"
    variants: list[str]
    speed: float = Field(default=1.0, gt=0)  # emulated accelerator speed (see BackendConfig)
    max_concurrency: int = Field(default=4, ge=1)
    max_gpus: int = Field(default=2, ge=0, le=64)
    gpu_memory_gb: float = Field(default=24.0, gt=0)
    usd_per_gpu_hour: float | None = Field(default=None, ge=0)  # else from the prices file
    reclaim_risk: float = Field(default=0.0, ge=0, lt=1)


class CapacityVariantConfig(_Strict):
    """What the planner assumes of a variant before it has measured it."""

    name: str
    memory_gb: float = Field(default=8.0, gt=0)  # declared footprint until NVML measures it
    compute_ms: float | None = Field(default=None, gt=0)  # on a speed-1 GPU; else a prior


class CapacityConfig(_Strict):
    enabled: bool = False
    provider: Literal["local"] = "local"
    apply: Literal["auto", "approve"] = "approve"
    interval_s: float = Field(default=3600.0, gt=0)  # full plans at k × interval_s − lead_s
    # GPU counts for the variants loaded, re-sized this often between full plans (0: never)
    resize_every_s: float = Field(default=900.0, ge=0)
    # plans are made this long before the window they are for (a GPU's cold start and more)
    lead_s: float = Field(default=300.0, ge=0)
    # A new class, a forecast error or drift re-plans sooner, but not more often than this.
    min_replan_s: float = Field(default=30.0, ge=0)
    observe_s: float = Field(default=5.0, gt=0)
    # the forecast is fed each class's mean rate over windows of this length
    forecast_every_s: float = Field(default=600.0, gt=0)
    # the forecast a curve through hourly means (peak within the window), not whole hours
    forecast_within_hour: bool = True
    # > 0: a class observed above what the plan serves it by more than this (and 3 sigma)
    # right-sizes at once, and every plan is made for at least what was observed over
    # react_window_s (× the forecast's margin)
    react_tolerance: float = Field(default=0.05, ge=0)
    react_window_s: float = Field(default=60.0, gt=0)
    horizon_s: float = Field(default=3600.0, gt=0)  # a plan's saving is counted over this
    # Classes forecast below this many calls/s are not planned for (a stray call, e.g. one
    # spread onto another variant, is not demand); they ride on what is loaded.
    min_class_rps: float = Field(default=0.2, ge=0)
    survive_region_loss: bool = True
    # A forecast the pools' GPU limits (max_gpus) cannot carry, as when an outage takes a
    # cloud's pools: plan for what they can carry and name the rest (Plan.not_carried, in
    # `switchyard plan`'s why), rather than refuse and keep a plan for pools that are down
    # (placement.planner._carry_what_fits; the provisioned-cost benchmark's planner runs so)
    carry_what_fits: bool = True
    memory_headroom: float = Field(default=0.1, ge=0, lt=1)
    # churn: a flat price per GPU added or removed, and each GPU added billed for its cold
    # start (a flat price above a cheap GPU's hourly price never lets that GPU go)
    usd_per_gpu_change: float = Field(default=0.0, ge=0)
    cold_start_s: float = Field(default=180.0, ge=0)
    usd_per_variant_change: float = Field(default=0.1, ge=0)
    solve_time_limit_s: float = Field(default=10.0, gt=0)
    # After a variant leaves the route tables: how long edges get to receive the push
    # before its queue is drained and it is unloaded.
    drain_settle_s: float = Field(default=0.3, ge=0)
    pools: list[CapacityPoolConfig] = []
    variants: list[CapacityVariantConfig] = []


def cadence(cap: CapacityConfig) -> CadenceSettings:
    """When the loop re-plans and for what demand (:mod:`placement.plan_cadence`)."""
    from placement.plan_cadence import CadenceSettings
    return CadenceSettings(plan_every_s=cap.interval_s, lead_s=cap.lead_s,
                           resize_every_s=cap.resize_every_s,
                           forecast_every_s=cap.forecast_every_s,
                           react_tolerance=cap.react_tolerance,
                           react_window_s=cap.react_window_s, min_replan_s=cap.min_replan_s,
                           min_class_rps=cap.min_class_rps)


def churn(cap: CapacityConfig) -> ChurnCost:
    """What a plan must save to be adopted (:class:`placement.replan.ChurnCost`)."""
    from placement.replan import ChurnCost
    return ChurnCost(cap.usd_per_gpu_change, cap.usd_per_variant_change,
                     cap.horizon_s / 3600.0, cap.cold_start_s)


def forecast(cap: CapacityConfig) -> ForecastSettings:
    from placement.forecast import ForecastSettings
    return ForecastSettings(within_hour=cap.forecast_within_hour)


def is_instance_id(pool: str, backend_id: str) -> bool:
    """``backend_id`` is the id of one of ``pool``'s managed instances (``{pool}-{serial}``,
    as the providers name them): the loop owns every such backend (it forgets those it does
    not run at start, :meth:`CapacityLoop.forget_leftovers`)."""
    serial = backend_id[len(pool) + 1:]
    return backend_id.startswith(f"{pool}-") and serial.isdigit()


def check_capacity(cap: CapacityConfig, regions: Iterable[str], variants: Iterable[str],
                   backend_ids: Iterable[str]) -> None:
    """Raise ``ValueError`` naming the path when ``[capacity]`` refers to unknown names."""
    known_regions, known_variants, backends = set(regions), set(variants), set(backend_ids)
    seen: set[str] = set()
    for i, p in enumerate(cap.pools):
        where = f"capacity.pools[{i}]"
        if p.id in seen:
            raise ValueError(f"{where}.id {p.id!r} is defined twice")
        if p.id in backends:
            raise ValueError(f"{where}.id {p.id!r} is also a backend id; pool instances are "
                             "named after their pool, so the ids must differ")
        if clash := sorted(b for b in backends if is_instance_id(p.id, b)):
            raise ValueError(f"{where}.id {p.id!r}: backend id {clash[0]!r} is named like one "
                             f"of its instances ({p.id}-<n>), which the capacity loop owns: "
                             "it would be deregistered when the loop starts; rename the "
                             "backend or the pool")
        seen.add(p.id)
        if p.region not in known_regions:
            raise ValueError(f"{where}.region {p.region!r} is not in regions "
                             f"{sorted(known_regions)}")
        for v in p.variants:
            if v not in known_variants:
                raise ValueError(f"{where}.variants {v!r} is not a variant of any model "
                                 f"{sorted(known_variants)}")
    named: set[str] = set()
    for i, cv in enumerate(cap.variants):
        if cv.name not in known_variants:
            raise ValueError(f"capacity.variants[{i}].name {cv.name!r} is not a variant of "
                             f"any model {sorted(known_variants)}")
        if cv.name in named:
            raise ValueError(f"capacity.variants[{i}].name {cv.name!r} is defined twice")
        named.add(cv.name)
    if cap.enabled and not cap.pools:
        raise ValueError("capacity.enabled is true but capacity.pools is empty: the loop "
                         "has no GPUs to place")
