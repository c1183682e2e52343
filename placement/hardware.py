"""Hardware health from NVML readings: what removes a GPU and what only penalises it.

Pure: :func:`carry` folds the previous reading of each GPU into the new one (placement's
fleet calls it once per report, with the report's arrival time), and :func:`assess` judges
the result. Absent readings (not supported) are never treated as bad.

**Removed** (the deployment is dropped before ranking):

* GPU lost (``NVML_ERROR_GPU_IS_LOST``) or uncorrected volatile ECC errors.
* An XID critical error, for ``XID_HOLD_S`` after the last one: an XID is an event,
  reported once, and the GPU it hit (79 fallen off the bus, 48 double-bit ECC, 63/64 row
  remapping, 94/95 contained/uncontained errors) rarely recovers within one report.
* Memory pressure, judged by what the serving process still asks for, not by free bytes
  alone: LLM servers (vLLM, TensorRT-LLM) preallocate their KV cache and run for their
  whole life at 90-98 % used, which is healthy. A GPU is under pressure when it is nearly
  full (less than ``MEM_NEARLY_FULL_FRACTION`` free) **and** its used memory grew by at
  least ``MEM_GROWTH_FRACTION`` of the total since the previous reading: something is
  still allocating into the last few percent, so the next allocation may fail. The
  deployment stays out while the GPU stays nearly full, for ``MEM_PRESSURE_HOLD_S`` after
  the last growth. A full but steady GPU is not removed.

**Penalised** (compute estimate multiplied by ``max_clock / clock``, at least
``THROTTLE_MIN_FACTOR``): clocks held down for a reason NVIDIA documents as a real slowdown
(``THROTTLE_MASK``), or temperature at the slowdown threshold. NVIDIA's clocks-event reasons
(``nvmlClocksEventReason*``, formerly ``nvmlClocksThrottleReason*``) split three ways:

* real slowdown, penalised: ``HwSlowdown`` (0x8), ``SwThermalSlowdown`` (0x20),
  ``HwThermalSlowdown`` (0x40), ``HwPowerBrakeSlowdown`` (0x80);
* routine, not penalised: ``GpuIdle`` (0x1), ``ApplicationsClocksSetting`` (0x2) and
  ``SwPowerCap`` (0x4) — a busy GPU running at its power limit is doing its job and its
  clocks are already what its measured compute time reflects;
* neutral: ``SyncBoost`` (0x10), ``DisplayClockSetting`` (0x100).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

THROTTLE_MIN_FACTOR = 1.5
XID_HOLD_S = 300.0
MEM_NEARLY_FULL_FRACTION = 0.05
MEM_GROWTH_FRACTION = 0.01
MEM_PRESSURE_HOLD_S = 30.0

# NVML clocks-event reasons that mean the GPU is slowed against its will (see above).
HW_SLOWDOWN = 0x8
SW_THERMAL_SLOWDOWN = 0x20
HW_THERMAL_SLOWDOWN = 0x40
HW_POWER_BRAKE_SLOWDOWN = 0x80
THROTTLE_MASK = HW_SLOWDOWN | SW_THERMAL_SLOWDOWN | HW_THERMAL_SLOWDOWN | HW_POWER_BRAKE_SLOWDOWN


@dataclass(frozen=True, slots=True)
class GpuState:
    """One GPU reading, placement's own copy. ``None`` = not supported / not reported.

    The last three fields are not read from the GPU: :func:`carry` sets them from earlier
    readings (``held_xids`` seen within the hold, when the last XID and the last memory
    growth into a nearly full GPU were seen).
    """

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
    held_xids: tuple[int, ...] = field(default_factory=tuple)
    xid_at: float | None = None
    mem_pressure_at: float | None = None


@dataclass(frozen=True, slots=True)
class HardwareVerdict:
    removed: str = ""  # non-empty: drop the deployment
    penalty: float = 1.0  # multiplier on compute time
    penalty_reason: str = ""


def carry(previous: Sequence[GpuState], current: Sequence[GpuState],
          now: float) -> tuple[GpuState, ...]:
    """``current`` with the XID and memory-pressure holds carried from ``previous`` (by index)."""
    if current is previous and isinstance(current, tuple) and not any(
            g.xid_events or g.held_xids or g.xid_at is not None or g.mem_pressure_at is not None
            for g in current):  # the very readings again, nothing held: nothing to carry
        return current
    before = {g.index: g for g in previous}
    out = tuple(_carry_one(before.get(g.index), g, now) for g in current)
    # Nothing held (the common report): ``current`` itself, so callers can skip a copy.
    if isinstance(current, tuple) and all(a is b for a, b in zip(out, current, strict=True)):
        return current
    return out


def _carry_one(p: GpuState | None, g: GpuState, now: float) -> GpuState:
    held: tuple[int, ...] = ()
    xid_at: float | None = None
    if p is not None and p.xid_at is not None and now - p.xid_at < XID_HOLD_S:
        held, xid_at = p.held_xids, p.xid_at
    if g.xid_events:
        held = tuple(dict.fromkeys((*held, *g.xid_events)))
        xid_at = now
    pressure_at = None
    if _nearly_full(g):
        if p is not None and p.mem_pressure_at is not None \
                and now - p.mem_pressure_at < MEM_PRESSURE_HOLD_S:
            pressure_at = p.mem_pressure_at
        if _grew(p, g):
            pressure_at = now
    if (held == g.held_xids and xid_at == g.xid_at  # already so: no copy (the common case)
            and pressure_at == g.mem_pressure_at):
        return g
    return replace(g, held_xids=held, xid_at=xid_at, mem_pressure_at=pressure_at)


def _nearly_full(g: GpuState) -> bool:
    return (g.mem_free_bytes is not None and bool(g.mem_total_bytes)
            and g.mem_free_bytes < MEM_NEARLY_FULL_FRACTION * (g.mem_total_bytes or 0))


def _grew(p: GpuState | None, g: GpuState) -> bool:
    if p is None or p.mem_free_bytes is None or g.mem_free_bytes is None \
            or not g.mem_total_bytes:
        return False
    return p.mem_free_bytes - g.mem_free_bytes >= MEM_GROWTH_FRACTION * g.mem_total_bytes


def assess(gpus: list[GpuState]) -> HardwareVerdict:
    """The worst verdict over a backend's GPUs."""
    penalty, reasons = 1.0, []
    for g in gpus:
        if g.lost:
            return HardwareVerdict(removed=f"GPU {g.index} lost (NVML_ERROR_GPU_IS_LOST)")
        if g.ecc_uncorrected:
            return HardwareVerdict(removed=f"GPU {g.index} has {g.ecc_uncorrected} "
                                           "uncorrected ECC errors")
        xids = tuple(dict.fromkeys((*g.held_xids, *g.xid_events)))
        if xids:
            return HardwareVerdict(removed=f"GPU {g.index} reported XID "
                                           f"{', '.join(map(str, xids))} (kept out for "
                                           f"{XID_HOLD_S:.0f} s after the last XID)")
        if g.mem_pressure_at is not None and g.mem_total_bytes:
            free = (g.mem_free_bytes or 0) / g.mem_total_bytes
            return HardwareVerdict(removed=f"GPU {g.index} memory pressure: {free:.1%} free "
                                           "and still growing (kept out for "
                                           f"{MEM_PRESSURE_HOLD_S:.0f} s after it stops)")
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
