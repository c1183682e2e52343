"""Read the GPUs of this host through NVML (pynvml, from nvidia-ml-py) into ``GpuReading``.

The reader takes the pynvml module as a parameter so the unmodified reading code runs in
fast tests against :class:`services.agent.fake_nvml.FakeNvml`, a fake at the pynvml function
boundary; ``tests/unit/test_nvml_native.py`` runs it with the real pynvml against a C library
with NVML's ABI (``tests/native/fake_nvml.c``). The agent calls it from one dedicated thread
(``services.agent.gpus``), never from the event loop. Two rules from the contract shape everything here:

* a field the GPU does not support (``NVMLError_NotSupported``, e.g. utilisation on a MIG
  instance) is left *unset* in the proto, never reported as 0;
* ``NVMLError_GpuIsLost`` from any call turns the whole reading into ``lost=True``;
* a number no GPU can have (``services.placement.validate.gpu_problems``: NaN, a
  utilisation outside [0, 100], memory used over total: a driver fault) is left unset too,
  as an unreadable field, rather than sent: placement refuses a report carrying one.

``errors`` counts unreadable fields and such numbers (the agent's
``switchyard_agent_nvml_errors_total``).

XID critical errors are collected from an NVML event set (where the GPU supports it) and
reported once, in the next reading of the GPU they happened on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import structlog

from placement.errors import SwitchyardError
from services.api.switchyard.v1 import telemetry_pb2
from services.placement.validate import gpu_problems

log = structlog.get_logger("switchyard.agent.nvml")

T = TypeVar("T")


class NvmlUnavailable(SwitchyardError):
    """NVML could not initialise (no library, no driver, no GPU); the agent falls back."""

    grpc_code = "UNAVAILABLE"


class _GpuLost(Exception):
    """Internal: a call on this GPU returned NVML_ERROR_GPU_IS_LOST."""


def _real_pynvml() -> Any:
    import pynvml

    return pynvml


class NvmlReader:
    """Reads every field of ``GpuReading`` for GPUs by index, through an injectable pynvml.

    Call :meth:`start` once (it runs ``nvmlInit`` and raises :class:`NvmlUnavailable` when
    NVML is not there), then :meth:`read` or :meth:`read_all` as often as needed, and
    :meth:`close` at the end.
    """

    def __init__(self, nvml: Any = None) -> None:
        self._nvml: Any = nvml if nvml is not None else _real_pynvml()
        self._count = 0
        self._event_set: Any = None
        self._uuids: dict[int, str] = {}
        self._names: dict[int, str] = {}
        self._pending_xids: dict[int, list[int]] = {}
        self._warned: set[tuple[int, str]] = set()
        self.errors = 0  # NVML calls that failed (other than NotSupported) and numbers dropped

    @property
    def device_count(self) -> int:
        return self._count

    def start(self) -> int:
        """Initialise NVML, count the GPUs and subscribe to XID events; return the count."""
        nv = self._nvml
        try:
            nv.nvmlInit()
            self._count = int(nv.nvmlDeviceGetCount())
        except nv.NVMLError as exc:
            raise NvmlUnavailable(f"NVML did not initialise: {exc}") from exc
        for i in range(self._count):
            try:
                self._uuids[i] = _text(nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetHandleByIndex(i)))
            except nv.NVMLError as exc:
                log.warning("nvml.uuid_unreadable", gpu=i, error=str(exc))
        self._subscribe_xid()
        return self._count

    @property
    def uuids(self) -> dict[int, str]:
        """GPU index → UUID, as read at :meth:`start` (and refreshed by every read)."""
        return dict(self._uuids)

    def close(self) -> None:
        """Free the event set and shut NVML down; errors on the way out are only logged."""
        nv = self._nvml
        try:
            if self._event_set is not None:
                nv.nvmlEventSetFree(self._event_set)
                self._event_set = None
            nv.nvmlShutdown()
        except nv.NVMLError as exc:
            log.warning("nvml.shutdown_failed", error=str(exc))

    def read_all(self) -> list[telemetry_pb2.GpuReading]:
        """One reading per GPU, in index order."""
        return [self.read(i) for i in range(self._count)]

    def read_many(self, indexes: Iterable[int]) -> dict[int, telemetry_pb2.GpuReading]:
        """One reading per distinct index: a GPU shared by two backends is read (and its
        XID events drained) once, and both get the same reading."""
        return {i: self.read(i) for i in sorted(set(indexes))}

    def read(self, index: int) -> telemetry_pb2.GpuReading:
        """Read GPU ``index``; a lost GPU gives ``lost=True`` with index and last known uuid."""
        self._drain_xid_events()
        try:
            return self._read(index)
        except _GpuLost:
            pass
        log.error("nvml.gpu_lost", gpu=index, uuid=self._uuids.get(index, ""))
        return telemetry_pb2.GpuReading(index=index, uuid=self._uuids.get(index, ""),
                                        name=self._names.get(index, ""), lost=True)

    # -- reading ---------------------------------------------------------------------

    def _read(self, index: int) -> telemetry_pb2.GpuReading:
        nv = self._nvml
        h = self._call(index, "handle", nv.nvmlDeviceGetHandleByIndex, index)
        if h is None:  # no handle: nothing can be read, so every field stays absent
            return telemetry_pb2.GpuReading(index=index, uuid=self._uuids.get(index, ""))
        r = telemetry_pb2.GpuReading(index=index)
        uuid = self._call(index, "uuid", nv.nvmlDeviceGetUUID, h)
        if uuid is not None:
            self._uuids[index] = r.uuid = _text(uuid)
        name = self._call(index, "name", nv.nvmlDeviceGetName, h)
        if name is not None:
            self._names[index] = r.name = _text(name)

        util = self._call(index, "utilization", nv.nvmlDeviceGetUtilizationRates, h)
        if util is not None:
            r.gpu_util_pct = float(util.gpu)
            r.mem_util_pct = float(util.memory)
        mem = self._call(index, "memory", nv.nvmlDeviceGetMemoryInfo, h)
        if mem is not None:
            r.mem_used_bytes, r.mem_free_bytes = int(mem.used), int(mem.free)
            r.mem_total_bytes = int(mem.total)
        self._read_power_thermal(index, h, r)
        self._read_clocks_ecc(index, h, r)
        r.xid_events.extend(self._pending_xids.pop(index, []))
        for field, why in gpu_problems(r):  # a driver's impossible number: unread, not sent
            r.ClearField(field)
            self._error(index, field, f"impossible reading: {why}")
        return r

    def _read_power_thermal(self, index: int, h: Any, r: telemetry_pb2.GpuReading) -> None:
        nv = self._nvml
        power_mw = self._call(index, "power", nv.nvmlDeviceGetPowerUsage, h)
        if power_mw is not None:
            r.power_w = power_mw / 1000.0
        limit_mw = self._call(index, "power_limit", nv.nvmlDeviceGetEnforcedPowerLimit, h)
        if limit_mw is not None:
            r.power_limit_w = limit_mw / 1000.0
        temp = self._call(index, "temperature", nv.nvmlDeviceGetTemperature, h,
                          nv.NVML_TEMPERATURE_GPU)
        if temp is not None:
            r.temperature_c = float(temp)
        slowdown = self._call(index, "temperature_slowdown", nv.nvmlDeviceGetTemperatureThreshold,
                              h, nv.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)
        if slowdown is not None:
            r.temperature_slowdown_c = float(slowdown)

    def _read_clocks_ecc(self, index: int, h: Any, r: telemetry_pb2.GpuReading) -> None:
        nv = self._nvml
        sm = self._call(index, "sm_clock", nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM)
        if sm is not None:
            r.sm_clock_mhz = int(sm)
        sm_max = self._call(index, "sm_clock_max", nv.nvmlDeviceGetMaxClockInfo, h,
                            nv.NVML_CLOCK_SM)
        if sm_max is not None:
            r.sm_clock_max_mhz = int(sm_max)
        reasons = self._throttle_reasons(index, h)
        if reasons is not None:
            r.throttle_reasons = int(reasons)
        for field, error_type in (("ecc_uncorrected_volatile",
                                   nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
                                  ("ecc_corrected_volatile", nv.NVML_MEMORY_ERROR_TYPE_CORRECTED)):
            count = self._call(index, field, nv.nvmlDeviceGetTotalEccErrors, h, error_type,
                               nv.NVML_VOLATILE_ECC)
            if count is not None:
                setattr(r, field, int(count))

    def _throttle_reasons(self, index: int, handle: Any) -> int | None:
        """Clocks-event reasons; drivers/pynvml before 535 only have the 'Throttle' name."""
        nv = self._nvml
        new = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if new is not None:
            try:
                return self._call(index, "throttle_reasons", new, handle, quiet_missing=True)
            except _FunctionMissing:
                pass
        old = getattr(nv, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        if old is None:
            return None
        return self._call(index, "throttle_reasons", old, handle)

    def _call(self, index: int, field: str, fn: Callable[..., T], *args: Any,
              quiet_missing: bool = False) -> T | None:
        """Call one NVML function: NotSupported → None, GpuIsLost → _GpuLost, other → None+log."""
        nv = self._nvml
        try:
            return fn(*args)
        except nv.NVMLError_NotSupported:
            return None
        except nv.NVMLError_GpuIsLost as exc:
            raise _GpuLost from exc
        except nv.NVMLError_FunctionNotFound:
            if quiet_missing:
                raise _FunctionMissing from None
            return None
        except nv.NVMLError as exc:
            self._error(index, field, str(exc))
            return None

    def _error(self, index: int, field: str, error: str) -> None:
        self.errors += 1
        if (index, field) not in self._warned:
            self._warned.add((index, field))
            log.warning("nvml.field_unreadable", gpu=index, field=field, error=error)

    # -- XID events ------------------------------------------------------------------

    def _subscribe_xid(self) -> None:
        nv = self._nvml
        try:
            self._event_set = nv.nvmlEventSetCreate()
        except nv.NVMLError as exc:
            log.info("nvml.events_unavailable", error=str(exc))
            return
        for i in range(self._count):
            try:
                h = nv.nvmlDeviceGetHandleByIndex(i)
                nv.nvmlDeviceRegisterEvents(h, nv.nvmlEventTypeXidCriticalError, self._event_set)
            except nv.NVMLError as exc:  # NotSupported on many consumer GPUs and MIG
                log.info("nvml.xid_events_unsupported", gpu=i, error=str(exc))

    def _drain_xid_events(self) -> None:
        """Collect every queued event without blocking (timeout 0 ms)."""
        nv = self._nvml
        if self._event_set is None:
            return
        by_uuid = {u: i for i, u in self._uuids.items()}
        for _ in range(1024):  # bound the loop in case a driver floods events
            try:
                data = nv.nvmlEventSetWait(self._event_set, 0)
            except nv.NVMLError_Timeout:
                return
            except nv.NVMLError as exc:
                log.warning("nvml.event_wait_failed", error=str(exc))
                return
            if not int(data.eventType) & nv.nvmlEventTypeXidCriticalError:
                continue
            try:
                index = by_uuid.get(_text(nv.nvmlDeviceGetUUID(data.device)), -1)
            except nv.NVMLError:
                index = -1
            if index < 0:
                log.warning("nvml.xid_unknown_gpu", xid=int(data.eventData))
                continue
            log.error("nvml.xid", gpu=index, xid=int(data.eventData))
            self._pending_xids.setdefault(index, []).append(int(data.eventData))


class _FunctionMissing(Exception):
    """Internal: the driver does not export this NVML function (older driver)."""


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
