"""placement.hardware: NVIDIA's clocks-event reasons, memory pressure and the XID hold.

Verdicts are pure; the fleet tests at the end go through ``FleetState.ingest``, which carries
the holds from one report to the next.
"""

from __future__ import annotations

import pytest

from placement.fleet import FleetState, TelemetrySnapshot
from placement.hardware import (
    MEM_PRESSURE_HOLD_S,
    XID_HOLD_S,
    GpuState,
    assess,
    carry,
)
from placement.model import Backend, Variant

GIB = 1024**3
# pynvml's nvmlClocksEventReason* values
GPU_IDLE, APP_CLOCKS, SW_POWER_CAP, HW_SLOWDOWN = 0x1, 0x2, 0x4, 0x8
SYNC_BOOST, SW_THERMAL, HW_THERMAL, HW_POWER_BRAKE, DISPLAY = 0x10, 0x20, 0x40, 0x80, 0x100


def busy(reasons: int) -> GpuState:
    return GpuState(0, sm_clock_mhz=1400, sm_clock_max_mhz=2100, throttle_reasons=reasons,
                    temperature_c=70, temperature_slowdown_c=90, gpu_util_pct=100)


@pytest.mark.parametrize("reasons", [SW_POWER_CAP, GPU_IDLE, APP_CLOCKS, SYNC_BOOST, DISPLAY,
                                     SW_POWER_CAP | APP_CLOCKS | SYNC_BOOST])
def test_routine_and_neutral_clock_reasons_are_not_penalised(reasons: int) -> None:
    v = assess([busy(reasons)])
    assert (v.removed, v.penalty, v.penalty_reason) == ("", 1.0, "")


@pytest.mark.parametrize("reasons", [HW_SLOWDOWN, SW_THERMAL, HW_THERMAL, HW_POWER_BRAKE,
                                     SW_POWER_CAP | HW_THERMAL])
def test_real_slowdowns_are_penalised_by_the_clock_ratio(reasons: int) -> None:
    v = assess([busy(reasons)])
    assert v.penalty == pytest.approx(1.5)  # 2100 / 1400
    assert "throttling" in v.penalty_reason and not v.removed


def test_a_full_but_steady_gpu_is_healthy() -> None:
    kv_cache = GpuState(0, mem_free_bytes=int(0.02 * 80 * GIB), mem_total_bytes=80 * GIB)
    assert assess([kv_cache]).removed == ""
    gpus = carry([kv_cache], [kv_cache], now=1.0)
    assert assess(list(gpus)).removed == ""


def test_memory_growing_into_the_last_percent_is_pressure_until_hold_ends() -> None:
    total = 80 * GIB
    def gpu(free_fraction: float) -> GpuState:
        return GpuState(0, mem_free_bytes=int(free_fraction * total), mem_total_bytes=total)

    gpus = carry([], [gpu(0.10)], 0.0)
    gpus = carry(gpus, [gpu(0.03)], 1.0)  # grew by 7 % into the last 5 %
    assert "memory pressure" in assess(list(gpus)).removed
    gpus = carry(gpus, [gpu(0.03)], 1.0 + MEM_PRESSURE_HOLD_S - 1)  # steady, within hold
    assert "memory pressure" in assess(list(gpus)).removed
    gpus = carry(gpus, [gpu(0.03)], 1.0 + MEM_PRESSURE_HOLD_S + 1)
    assert assess(list(gpus)).removed == ""
    gpus = carry(carry([], [gpu(0.10)], 0.0), [gpu(0.03)], 1.0)
    gpus = carry(gpus, [gpu(0.20)], 2.0)  # memory freed: pressure over at once
    assert assess(list(gpus)).removed == ""


def test_an_xid_keeps_the_gpu_out_for_the_hold_time() -> None:
    gpus = carry([], [GpuState(0, xid_events=(79,))], 10.0)
    assert "XID 79" in assess(list(gpus)).removed
    gpus = carry(gpus, [GpuState(0)], 11.0)  # the next report has no event
    assert "XID 79" in assess(list(gpus)).removed
    gpus = carry(gpus, [GpuState(0, xid_events=(48,))], 12.0)
    assert "XID 79, 48" in assess(list(gpus)).removed
    gpus = carry(gpus, [GpuState(0)], 12.0 + XID_HOLD_S - 1)
    assert assess(list(gpus)).removed != ""
    gpus = carry(gpus, [GpuState(0)], 12.0 + XID_HOLD_S + 1)
    assert assess(list(gpus)).removed == ""


def _snap(*gpus: GpuState) -> TelemetrySnapshot:
    return TelemetrySnapshot(ready=True, simulated=False, gpus=gpus)


def test_fleet_keeps_an_xid_backend_out_across_reports() -> None:
    fleet = FleetState()
    fleet.register(Backend(id="b1", endpoint="127.0.0.1:1", cloud="aws", region="east",
                           accelerator="nvidia-l4", accelerator_count=1,
                           price_class="on-demand", variants=(Variant("v", "m", 0.9),),
                           max_concurrency=4))
    fleet.ingest("b1", _snap(GpuState(0, xid_events=(79,))), 100.0)
    fleet.ingest("b1", _snap(GpuState(0)), 101.0)
    last = fleet.backends["b1"].last
    assert last is not None
    assert "XID 79" in assess(list(last.gpus)).removed
    fleet.ingest("b1", _snap(GpuState(0)), 101.0 + XID_HOLD_S)
    last = fleet.backends["b1"].last
    assert last is not None
    assert assess(list(last.gpus)).removed == ""


def test_fleet_removes_a_gpu_whose_memory_grows_into_the_last_percent() -> None:
    fleet = FleetState()
    fleet.register(Backend(id="b1", endpoint="127.0.0.1:1", cloud="aws", region="east",
                           accelerator="nvidia-l4", accelerator_count=1,
                           price_class="on-demand", variants=(Variant("v", "m", 0.9),),
                           max_concurrency=4))
    fleet.ingest("b1", _snap(GpuState(0, mem_free_bytes=50, mem_total_bytes=1000)), 1.0)
    fleet.ingest("b1", _snap(GpuState(0, mem_free_bytes=10, mem_total_bytes=1000)), 2.0)
    last = fleet.backends["b1"].last
    assert last is not None
    assert "memory pressure: 1.0% free" in assess(list(last.gpus)).removed
