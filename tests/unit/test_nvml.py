"""NvmlReader against FakeNvml: every scenario goes through the real reading code."""

from __future__ import annotations

import pynvml
import pytest

from services.agent.fake_nvml import FakeNvml
from services.agent.nvml import NvmlReader, NvmlUnavailable


def _reader(count: int = 2, **kwargs: object) -> tuple[FakeNvml, NvmlReader]:
    fake = FakeNvml(count, **kwargs)  # type: ignore[arg-type]
    reader = NvmlReader(fake)
    assert reader.start() == count
    return fake, reader


def test_fake_raises_the_real_pynvml_error_classes() -> None:
    fake = FakeNvml(1)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    fake.nvmlInit()
    fake.lose(0)
    with pytest.raises(pynvml.NVMLError_GpuIsLost) as info:
        fake.nvmlDeviceGetName(fake.nvmlDeviceGetHandleByIndex(0))
    assert info.value.value == pynvml.NVML_ERROR_GPU_IS_LOST
    h = FakeNvml(1)
    h.nvmlInit()
    handle = h.nvmlDeviceGetHandleByIndex(0)
    assert isinstance(handle, pynvml.c_nvmlDevice_t)
    assert isinstance(h.nvmlDeviceGetMemoryInfo(handle), pynvml.c_nvmlMemory_t)
    assert isinstance(h.nvmlDeviceGetUtilizationRates(handle), pynvml.c_nvmlUtilization_t)


def test_normal_gpu_reads_every_field_in_proto_units() -> None:
    fake, reader = _reader()
    r = reader.read(0)
    g = fake.gpus[0]
    assert (r.index, r.uuid, r.name, r.lost) == (0, g.uuid, "NVIDIA L4", False)
    assert r.gpu_util_pct == 35.0
    assert r.mem_util_pct == 20.0
    assert r.mem_total_bytes == g.mem_total
    assert r.mem_used_bytes + r.mem_free_bytes == g.mem_total
    assert r.power_w == pytest.approx(38.0)  # milliwatts -> watts
    assert r.power_limit_w == pytest.approx(72.0)
    assert (r.temperature_c, r.temperature_slowdown_c) == (52.0, 92.0)
    assert (r.sm_clock_mhz, r.sm_clock_max_mhz) == (2040, 2040)
    for f in ("throttle_reasons", "ecc_uncorrected_volatile", "ecc_corrected_volatile"):
        assert r.HasField(f)
        assert getattr(r, f) == 0
    assert list(r.xid_events) == []
    assert [x.index for x in reader.read_all()] == [0, 1]


def test_throttling_shows_clocks_down_reasons_and_temperature_at_slowdown() -> None:
    fake, reader = _reader()
    fake.throttle(1)
    r = reader.read(1)
    assert r.sm_clock_mhz < r.sm_clock_max_mhz * 0.6
    assert r.temperature_c == r.temperature_slowdown_c
    assert r.throttle_reasons & pynvml.nvmlClocksEventReasonSwThermalSlowdown
    assert r.throttle_reasons & pynvml.nvmlClocksEventReasonSwPowerCap
    assert r.power_w == r.power_limit_w
    assert reader.read(0).throttle_reasons == 0


def test_older_pynvml_without_clocks_event_reasons_uses_throttle_reasons() -> None:
    fake, reader = _reader(1)
    fake.throttle(0)
    fake.gpus[0].errors["nvmlDeviceGetCurrentClocksEventReasons"] = (
        pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    r = reader.read(0)
    assert r.throttle_reasons & pynvml.nvmlClocksThrottleReasonSwPowerCap
    assert "nvmlDeviceGetCurrentClocksThrottleReasons" in fake.calls


def test_memory_nearly_full() -> None:
    fake, reader = _reader()
    fake.fill_memory(0, 0.98)
    r = reader.read(0)
    assert r.mem_free_bytes / r.mem_total_bytes < 0.03


def test_ecc_errors_are_counted() -> None:
    fake, reader = _reader()
    fake.ecc_errors(0, uncorrected=3, corrected=10)
    r = reader.read(0)
    assert (r.ecc_uncorrected_volatile, r.ecc_corrected_volatile) == (3, 10)


def test_xid_event_is_reported_once_on_its_own_gpu() -> None:
    fake, reader = _reader()
    fake.xid(1, 79)
    assert list(reader.read(0).xid_events) == []  # drained here, kept for GPU 1
    assert list(reader.read(1).xid_events) == [79]
    assert list(reader.read(1).xid_events) == []


def test_xid_events_not_supported_leaves_everything_else_working() -> None:
    fake, reader = _reader(1, event_support=False)
    fake.xid(0, 48)
    r = reader.read(0)
    assert list(r.xid_events) == []
    assert r.HasField("gpu_util_pct")


def test_gpu_lost_gives_a_lost_reading_with_its_identity() -> None:
    fake, reader = _reader()
    uuid = fake.gpus[0].uuid
    reader.read(0)
    fake.lose(0)
    r = reader.read(0)
    assert r.lost
    assert (r.index, r.uuid) == (0, uuid)
    assert not r.HasField("gpu_util_pct")
    assert not reader.read(1).lost


def test_lost_before_first_read_still_reports_lost() -> None:
    fake = FakeNvml(1)
    fake.lose(0)
    reader = NvmlReader(fake)
    reader.start()
    assert reader.read(0).lost


def test_not_supported_field_is_absent_not_zero() -> None:
    fake, reader = _reader()
    fake.unsupported(0, "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetTotalEccErrors",
                     "nvmlDeviceGetPowerUsage")
    r = reader.read(0)
    for absent in ("gpu_util_pct", "mem_util_pct", "ecc_uncorrected_volatile",
                   "ecc_corrected_volatile", "power_w"):
        assert not r.HasField(absent), absent
    assert "gpu_util_pct" not in str(r)
    assert r.HasField("mem_used_bytes")
    assert r.HasField("power_limit_w")
    assert not r.lost


def test_other_nvml_errors_leave_the_field_absent() -> None:
    fake, reader = _reader(1)
    fake.gpus[0].errors["nvmlDeviceGetTemperature"] = pynvml.NVML_ERROR_NO_PERMISSION
    r = reader.read(0)
    assert not r.HasField("temperature_c")
    assert r.HasField("temperature_slowdown_c")


def test_recover_brings_back_a_healthy_reading() -> None:
    fake, reader = _reader(1)
    fake.lose(0)
    assert reader.read(0).lost
    fake.recover(0)
    r = reader.read(0)
    assert not r.lost
    assert r.throttle_reasons == 0


def test_no_library_raises_nvml_unavailable_wrapping_the_pynvml_error() -> None:
    reader = NvmlReader(FakeNvml(1, init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    with pytest.raises(NvmlUnavailable) as info:
        reader.start()
    assert isinstance(info.value.__cause__, pynvml.NVMLError_LibraryNotFound)


def test_real_pynvml_on_this_machine_is_unavailable_or_reads() -> None:
    reader = NvmlReader()
    try:
        count = reader.start()
    except NvmlUnavailable:
        return  # no driver here: the agent falls back to the simulated source
    assert len(reader.read_all()) == count
    reader.close()


def test_close_frees_the_event_set_and_shuts_down() -> None:
    fake, reader = _reader(1)
    reader.close()
    assert not fake.initialized
