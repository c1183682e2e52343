"""A FAKE pynvml, for tests and drills: same function names, return types and errors.

``FakeNvml`` stands in for the ``pynvml`` module at its function boundary, so the real
:class:`services.agent.nvml.NvmlReader` runs unmodified against it. It behaves like the
real library where the reader can tell: handles are real ``c_nvmlDevice_t`` pointers
(never dereferenced), memory and utilisation come back as pynvml's own ctypes structures,
power is in milliwatts, ``nvmlEventSetWait`` returns ``c_nvmlEventData_t``-shaped data or
raises the timeout error, and every failure is ``pynvml.NVMLError(code)``, which pynvml maps
to its generated subclass (``NVMLError_NotSupported``, ``NVMLError_GpuIsLost``, ...).
Every ``NVML_*`` constant, ``NVMLError*`` class and ``nvml*`` bitmask of the real module is
re-exported, so code reading constants off the module sees the real values.

Scenarios are set per GPU with the methods at the bottom: :meth:`FakeNvml.throttle`,
:meth:`~FakeNvml.fill_memory`, :meth:`~FakeNvml.ecc_errors`, :meth:`~FakeNvml.xid`,
:meth:`~FakeNvml.lose`, :meth:`~FakeNvml.unsupported`, :meth:`~FakeNvml.recover`,
:meth:`~FakeNvml.fail_init`. For the real pynvml against a C library with NVML's ABI, see
``tests/native/fake_nvml.c``.
"""

# Method, argument and field names are pynvml's own, so the fake is a drop-in module.
# ruff: noqa: N802, N803, N815

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass, field
from typing import Any

import pynvml

_HANDLE_BASE = 0x5A000  # fake device "addresses"; the pointers are never dereferenced


@dataclass
class FakeGpu:
    """The state of one fake GPU; a healthy, lightly loaded L4 by default."""

    name: str = "NVIDIA L4"
    uuid: str = ""
    gpu_util: int = 35
    mem_util: int = 20
    mem_total: int = 24 * 1024**3
    mem_used: int = 6 * 1024**3
    power_mw: int = 38_000
    power_limit_mw: int = 72_000
    temperature_c: int = 52
    slowdown_c: int = 92
    sm_clock_mhz: int = 2040
    sm_clock_max_mhz: int = 2040
    throttle_reasons: int = 0
    ecc_uncorrected: int = 0
    ecc_corrected: int = 0
    lost: bool = False
    # pynvml function name -> NVML error code it raises on this GPU (e.g. NOT_SUPPORTED)
    errors: dict[str, int] = field(default_factory=dict)
    xid_supported: bool = True


@dataclass
class _FakeEventData:
    """Shaped like ``pynvml.c_nvmlEventData_t`` (device, eventType, eventData, ...)."""

    device: Any
    eventType: int
    eventData: int
    gpuInstanceId: int = 0
    computeInstanceId: int = 0


class FakeNvml:
    """A FAKE of the ``pynvml`` module with ``count`` GPUs (see the module docstring).

    ``init_error`` makes ``nvmlInit`` fail with that NVML code (e.g.
    ``NVML_ERROR_LIBRARY_NOT_FOUND``), as on a machine without a driver.
    """

    def __init__(self, count: int = 1, *, init_error: int | None = None,
                 event_support: bool = True) -> None:
        for name in dir(pynvml):
            if name.startswith(("NVML_", "NVMLError", "nvmlClocks", "nvmlEventType")):
                setattr(self, name, getattr(pynvml, name))
        self.gpus = [FakeGpu(uuid=f"GPU-fake-{i:04d}-0000-0000-000000000000")
                     for i in range(count)]
        self.init_error = init_error
        self.event_support = event_support
        self.initialized = False
        self.init_failures = 0  # see fail_init
        self.calls: list[str] = []
        self.threads: set[str] = set()  # names of the threads that called a device function
        self._event_sets: dict[int, list[_FakeEventData]] = {}
        self._registered: dict[int, set[int]] = {}  # event set id -> gpu indexes

    # -- library lifecycle -----------------------------------------------------------

    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        if self.init_failures:
            self.init_failures -= 1
            raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self._check_init()
        self.initialized = False

    def nvmlDeviceGetCount(self) -> int:
        self._check_init()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self._check_init()
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        self._gpu("nvmlDeviceGetHandleByIndex", self._handle(index))
        return self._handle(index)

    # -- per-device readings -----------------------------------------------------------

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self._gpu("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._gpu("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> pynvml.c_nvmlUtilization_t:
        g = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return pynvml.c_nvmlUtilization_t(gpu=g.gpu_util, memory=g.mem_util)

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Any = None) -> Any:
        g = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        free = g.mem_total - g.mem_used
        if version:
            return pynvml.c_nvmlMemory_v2_t(version=version, total=g.mem_total, reserved=0,
                                            free=free, used=g.mem_used)
        return pynvml.c_nvmlMemory_t(total=g.mem_total, free=free, used=g.mem_used)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        g = self._gpu("nvmlDeviceGetTemperature", handle)
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return g.temperature_c

    def nvmlDeviceGetTemperatureThreshold(self, handle: Any, threshold: int) -> int:
        g = self._gpu("nvmlDeviceGetTemperatureThreshold", handle)
        if threshold != pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return g.slowdown_c

    def nvmlDeviceGetClockInfo(self, handle: Any, type: int) -> int:
        g = self._gpu("nvmlDeviceGetClockInfo", handle)
        return g.sm_clock_mhz if type == pynvml.NVML_CLOCK_SM else 1000

    def nvmlDeviceGetMaxClockInfo(self, handle: Any, type: int) -> int:
        g = self._gpu("nvmlDeviceGetMaxClockInfo", handle)
        return g.sm_clock_max_mhz if type == pynvml.NVML_CLOCK_SM else 1000

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetCurrentClocksEventReasons", handle).throttle_reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetCurrentClocksThrottleReasons", handle).throttle_reasons

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, errorType: int,
                                    counterType: int) -> int:
        g = self._gpu("nvmlDeviceGetTotalEccErrors", handle)
        if errorType == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED:
            return g.ecc_uncorrected
        return g.ecc_corrected

    # -- events ----------------------------------------------------------------------

    def nvmlEventSetCreate(self) -> Any:
        self._check_init()
        set_id = len(self._event_sets) + 1
        self._event_sets[set_id] = []
        self._registered[set_id] = set()
        return ctypes.cast(set_id, pynvml.c_nvmlEventSet_t)

    def nvmlDeviceRegisterEvents(self, handle: Any, eventTypes: int,
                                 eventSet: Any) -> None:
        g = self._gpu("nvmlDeviceRegisterEvents", handle)
        if not (self.event_support and g.xid_supported):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if eventTypes & pynvml.nvmlEventTypeXidCriticalError:
            self._registered[_address(eventSet)].add(self._index(handle))

    def nvmlEventSetWait(self, eventSet: Any, timeoutms: int) -> Any:
        self._check_init()
        queue = self._event_sets[_address(eventSet)]
        if not queue:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
        return queue.pop(0)

    def nvmlEventSetFree(self, eventSet: Any) -> None:
        self._check_init()
        self._event_sets.pop(_address(eventSet), None)

    # -- scenarios -------------------------------------------------------------------

    def throttle(self, index: int, *, thermal: bool = True, power: bool = True) -> None:
        """Clocks pulled down to 55% of max, temperature at slowdown, the reason bits set."""
        g = self.gpus[index]
        g.sm_clock_mhz = int(g.sm_clock_max_mhz * 0.55)
        g.gpu_util = 100
        if thermal:
            g.temperature_c = g.slowdown_c
            g.throttle_reasons |= (pynvml.nvmlClocksEventReasonSwThermalSlowdown
                                   | pynvml.nvmlClocksEventReasonHwThermalSlowdown)
        if power:
            g.power_mw = g.power_limit_mw
            g.throttle_reasons |= pynvml.nvmlClocksEventReasonSwPowerCap

    def fill_memory(self, index: int, fraction: float = 0.98) -> None:
        g = self.gpus[index]
        g.mem_used = int(g.mem_total * fraction)
        g.mem_util = 95

    def ecc_errors(self, index: int, *, uncorrected: int = 2, corrected: int = 40) -> None:
        g = self.gpus[index]
        g.ecc_uncorrected += uncorrected
        g.ecc_corrected += corrected

    def xid(self, index: int, code: int = 79) -> None:
        """Queue an XID critical error on every event set the GPU is registered with."""
        for set_id, gpus in self._registered.items():
            if index in gpus:
                self._event_sets[set_id].append(_FakeEventData(
                    device=self._handle(index),
                    eventType=pynvml.nvmlEventTypeXidCriticalError, eventData=code))

    def fail_init(self, times: int) -> None:
        """The next ``times`` ``nvmlInit`` calls fail with DRIVER_NOT_LOADED (driver loading)."""
        self.init_failures = times

    def lose(self, index: int) -> None:
        """Every call on this GPU raises NVML_ERROR_GPU_IS_LOST from now on."""
        self.gpus[index].lost = True

    def unsupported(self, index: int, *functions: str) -> None:
        """These pynvml functions raise NVML_ERROR_NOT_SUPPORTED on this GPU (as on MIG)."""
        for fn in functions:
            self.gpus[index].errors[fn] = pynvml.NVML_ERROR_NOT_SUPPORTED

    def recover(self, index: int) -> None:
        """Back to a healthy GPU with the same identity (ECC counters are volatile: reset)."""
        old = self.gpus[index]
        self.gpus[index] = FakeGpu(name=old.name, uuid=old.uuid)

    # -- internals -------------------------------------------------------------------

    def _check_init(self) -> None:
        if not self.initialized:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def _handle(self, index: int) -> Any:
        return ctypes.cast(_HANDLE_BASE + index, pynvml.c_nvmlDevice_t)

    def _index(self, handle: Any) -> int:
        index = _address(handle) - _HANDLE_BASE
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return index

    def _gpu(self, fn: str, handle: Any) -> FakeGpu:
        self._check_init()
        self.calls.append(fn)
        self.threads.add(threading.current_thread().name)
        g = self.gpus[self._index(handle)]
        if g.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if fn in g.errors:
            raise pynvml.NVMLError(g.errors[fn])
        return g


def _address(pointer: Any) -> int:
    return int(ctypes.cast(pointer, ctypes.c_void_p).value or 0)
