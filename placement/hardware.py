"""Hardware health from NVML readings: what removes a GPU and what only penalises it.

Removed (the deployment is dropped before ranking): GPU lost, uncorrected ECC errors, XID
critical errors, less than ``MIN_FREE_MEM_FRACTION`` memory free.
Penalised (compute estimate multiplied): clocks throttled for thermal/power/HW-slowdown
reasons or temperature at the slowdown threshold; the factor is ``max_clock / clock`` (at
least ``THROTTLE_MIN_FACTOR``). Absent readings (not supported) are never treated as bad.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_FREE_MEM_FRACTION = 0.05
THROTTLE_MIN_FACTOR = 1.5
# NVML clocks-event reasons that mean the GPU is slowed against its will.
THROTTLE_MASK = (
    0x0000000000000004  # SW power cap
    | 0x0000000000000008  # HW slowdown
    | 0x0000000000000020  # SW thermal slowdown
    | 0x0000000000000040  # HW thermal slowdown
    | 0x0000000000000080  # HW power brake slowdown
)


@dataclass(frozen=True, slots=True)
class GpuState:
    """One GPU reading, placement's own copy. ``None`` = not supported / not reported."""

    index: int
    lost: bool = False
    mem_free_bytes: int | None = None
    mem_total_bytes: int | None = None
    temperature_c: float | None = None
    temperature_slowdown_c: float | None = None
    sm_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    throttle_reasons: int | None = None
    ecc_uncorrected: int | None = None
    xid_events: tuple[int, ...] = field(default_factory=tuple)
    gpu_util_pct: float | None = None


@dataclass(frozen=True, slots=True)
class HardwareVerdict:
    removed: str = ""  # non-empty: drop the deployment
    penalty: float = 1.0  # multiplier on compute time
    penalty_reason: str = ""


def assess(gpus: list[GpuState]) -> HardwareVerdict:
    """The worst verdict over a backend's GPUs."""
    penalty, reasons = 1.0, []
    for g in gpus:
        if g.lost:
            return HardwareVerdict(removed=f"GPU {g.index} lost (NVML_ERROR_GPU_IS_LOST)")
        if g.ecc_uncorrected:
            return HardwareVerdict(removed=f"GPU {g.index} has {g.ecc_uncorrected} "
                                           "uncorrected ECC errors")
        if g.xid_events:
            return HardwareVerdict(removed=f"GPU {g.index} reported XID "
                                           f"{', '.join(map(str, g.xid_events))}")
        if g.mem_free_bytes is not None and g.mem_total_bytes:
            free = g.mem_free_bytes / g.mem_total_bytes
            if free < MIN_FREE_MEM_FRACTION:
                return HardwareVerdict(removed=f"GPU {g.index} memory {free:.1%} free "
                                               f"(< {MIN_FREE_MEM_FRACTION:.0%})")
        throttled = bool((g.throttle_reasons or 0) & THROTTLE_MASK)
        hot = (g.temperature_c is not None and g.temperature_slowdown_c is not None
               and g.temperature_c >= g.temperature_slowdown_c)
        if throttled or hot:
            factor = THROTTLE_MIN_FACTOR
            if g.sm_clock_mhz and g.sm_clock_max_mhz:
                factor = max(factor, g.sm_clock_max_mhz / g.sm_clock_mhz)
            penalty = max(penalty, factor)
            what = "throttling" if throttled else "at slowdown temperature"
            reasons.append(f"GPU {g.index} {what} (compute ×{factor:.1f})")
    return HardwareVerdict(penalty=penalty, penalty_reason="; ".join(reasons))
