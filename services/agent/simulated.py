"""SIMULATED GPU readings, used only when NVML cannot initialise (no GPU on this host).

Nothing here is measured from a GPU. Readings are derived from the backend's *measured*
Triton load so that routing still reacts to load:

* utilisation = busy fraction: Δ(compute_input + compute_infer + compute_output ns) over
  Δ wall-clock ns between two reads, divided by the accelerator count, clamped to 0..100;
* memory used = a base context + a fixed size per hosted variant, capped at total;
* power = idle + utilisation × (limit − idle); SM clock at its maximum; temperature
  rises linearly from 35 °C with utilisation and stays below the slowdown threshold.

Every report built from these readings carries ``source=TELEMETRY_SOURCE_SIMULATED``.

Faults for drills and tests can be injected in two ways, merged:

* :meth:`SimulatedGpuSource.inject` / :meth:`~SimulatedGpuSource.clear` in-process;
* a JSON control file (``control_file``), re-read whenever its mtime changes, mapping a
  backend id to a list of fault names, e.g. ``{"use1-h100": ["throttling", "ecc"]}``.
  Fault names: ``throttling``, ``memory_full``, ``ecc``, ``xid``, ``lost``. ``memory_full``
  jumps to 98 % used: placement reads that jump as memory pressure and keeps the backend out
  for ``placement.hardware.MEM_PRESSURE_HOLD_S``, after which a full but steady GPU counts as
  healthy (see ``placement/hardware.py``).
"""

from __future__ import annotations

import enum
import json
import pathlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import structlog

from services.api.switchyard.v1 import telemetry_pb2

log = structlog.get_logger("switchyard.agent.simulated").bind(source="simulated")

GIB = 1024**3


class Fault(enum.Enum):
    """A simulated hardware fault; the value is its name in the control file."""

    THROTTLING = "throttling"
    MEMORY_FULL = "memory_full"
    ECC = "ecc"
    XID = "xid"
    LOST = "lost"


@dataclass(frozen=True)
class AcceleratorSpec:
    """Public board figures of an accelerator type, to keep simulated numbers plausible."""

    name: str
    memory_bytes: int
    idle_w: float
    limit_w: float
    sm_clock_max_mhz: int
    slowdown_c: float = 90.0


ACCELERATORS: dict[str, AcceleratorSpec] = {
    "nvidia-h100-80gb": AcceleratorSpec("NVIDIA H100 80GB HBM3", 80 * GIB, 70, 700, 1980),
    "nvidia-a100-80gb": AcceleratorSpec("NVIDIA A100-SXM4-80GB", 80 * GIB, 55, 400, 1410),
    "nvidia-a100-40gb": AcceleratorSpec("NVIDIA A100-SXM4-40GB", 40 * GIB, 50, 400, 1410),
    "nvidia-l4": AcceleratorSpec("NVIDIA L4", 24 * GIB, 16, 72, 2040),
    "nvidia-t4": AcceleratorSpec("Tesla T4", 16 * GIB, 10, 70, 1590),
    "nvidia-a10g": AcceleratorSpec("NVIDIA A10G", 24 * GIB, 20, 300, 1710),
}
_GENERIC = AcceleratorSpec("simulated GPU", 24 * GIB, 20, 250, 1800)


@dataclass
class _Busy:
    wall_s: float
    busy_ns: int


class SimulatedGpuSource:
    """Derives one simulated ``GpuReading`` per (backend, GPU index) from Triton statistics.

    ``clock`` returns seconds (monotonic); ``base_memory_bytes`` and ``variant_bytes`` size
    the simulated memory use (``variant_bytes`` maps a variant name to its size; missing
    variants use ``default_variant_bytes``).
    """

    def __init__(self, *, control_file: str | pathlib.Path | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 base_memory_bytes: int = 1 * GIB,
                 default_variant_bytes: int = 3 * GIB,
                 variant_bytes: dict[str, int] | None = None) -> None:
        self._control_file = pathlib.Path(control_file) if control_file else None
        self._control_mtime: float | None = None
        self._file_faults: dict[str, set[Fault]] = {}
        self._injected: dict[str, set[Fault]] = {}
        self._clock = clock
        self._base = base_memory_bytes
        self._default_variant = default_variant_bytes
        self._variant_bytes = variant_bytes or {}
        self._last: dict[tuple[str, int], _Busy] = {}
        self._xid_sent: set[str] = set()

    def inject(self, backend_id: str, *faults: Fault) -> None:
        """Add faults to every simulated GPU of ``backend_id`` until :meth:`clear`."""
        self._injected.setdefault(backend_id, set()).update(faults)
        log.warning("simulated.fault_injected", backend=backend_id,
                    faults=sorted(f.value for f in faults))

    def clear(self, backend_id: str | None = None) -> None:
        """Remove injected faults of one backend, or of all when ``backend_id`` is None."""
        if backend_id is None:
            self._injected.clear()
        else:
            self._injected.pop(backend_id, None)
        self._xid_sent.clear()

    def faults(self, backend_id: str) -> set[Fault]:
        """Faults in effect for a backend: injected ones plus the control file's."""
        self._reload_control_file()
        return self._injected.get(backend_id, set()) | self._file_faults.get(backend_id, set())

    def read(self, backend_id: str, index: int, accelerator: str, accelerator_count: int,
             variants: Sequence[str],
             models: Iterable[telemetry_pb2.ModelStats]) -> telemetry_pb2.GpuReading:
        """A plausible reading for GPU ``index`` of ``backend_id`` under its measured load."""
        spec = ACCELERATORS.get(accelerator, _GENERIC)
        faults = self.faults(backend_id)
        uuid = f"GPU-simulated-{backend_id}-{index}"
        if Fault.LOST in faults:
            return telemetry_pb2.GpuReading(index=index, uuid=uuid, name=spec.name, lost=True)
        util = self._utilisation(backend_id, index, accelerator_count, models)
        used = min(spec.memory_bytes,
                   self._base + sum(self._variant_bytes.get(v, self._default_variant)
                                    for v in variants))
        if Fault.MEMORY_FULL in faults:
            used = int(spec.memory_bytes * 0.98)
        r = telemetry_pb2.GpuReading(
            index=index, uuid=uuid, name=spec.name,
            gpu_util_pct=util, mem_util_pct=util * 0.6,
            mem_used_bytes=used, mem_free_bytes=spec.memory_bytes - used,
            mem_total_bytes=spec.memory_bytes,
            power_w=spec.idle_w + util / 100.0 * (spec.limit_w - spec.idle_w),
            power_limit_w=spec.limit_w,
            temperature_c=35.0 + util / 100.0 * (spec.slowdown_c - 45.0),
            temperature_slowdown_c=spec.slowdown_c,
            sm_clock_mhz=spec.sm_clock_max_mhz, sm_clock_max_mhz=spec.sm_clock_max_mhz,
            throttle_reasons=0, ecc_uncorrected_volatile=0, ecc_corrected_volatile=0)
        if Fault.THROTTLING in faults:
            r.sm_clock_mhz = int(spec.sm_clock_max_mhz * 0.55)
            r.temperature_c = spec.slowdown_c
            r.power_w = spec.limit_w
            # the same bits NVML uses: SwPowerCap | SwThermalSlowdown | HwThermalSlowdown
            r.throttle_reasons = 0x4 | 0x20 | 0x40
        if Fault.ECC in faults:
            r.ecc_uncorrected_volatile, r.ecc_corrected_volatile = 2, 40
        if Fault.XID in faults and uuid not in self._xid_sent:
            self._xid_sent.add(uuid)  # an XID is an event: reported once per injection
            r.xid_events.append(79)
        return r

    def _utilisation(self, backend_id: str, index: int, accelerator_count: int,
                     models: Iterable[telemetry_pb2.ModelStats]) -> float:
        now = self._clock()
        busy = sum(m.compute_input_ns + m.compute_infer_ns + m.compute_output_ns
                   for m in models)
        key = (backend_id, index)
        last = self._last.get(key)
        self._last[key] = _Busy(now, busy)
        if last is None or now <= last.wall_s or busy < last.busy_ns:
            return 0.0  # first sample, or Triton restarted and its counters went back
        fraction = (busy - last.busy_ns) / ((now - last.wall_s) * 1e9) / max(1, accelerator_count)
        return round(min(100.0, max(0.0, fraction * 100.0)), 1)

    def _reload_control_file(self) -> None:
        path = self._control_file
        if path is None:
            return
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            if self._file_faults:
                log.info("simulated.control_file_removed", path=str(path))
            self._file_faults, self._control_mtime = {}, None
            return
        if mtime == self._control_mtime:
            return
        self._control_mtime = mtime
        try:
            faults = _parse_control(path.read_text())
        except (ValueError, AttributeError, TypeError) as exc:
            log.error("simulated.control_file_invalid", path=str(path), error=str(exc),  # noqa: TRY400 - a bad file is the user's, no traceback
                      expected='{"<backend id>": ["throttling"|"memory_full"|"ecc"|"xid"|"lost"]}')
            return
        self._file_faults = faults
        self._xid_sent.clear()
        log.warning("simulated.control_file_loaded", path=str(path),
                    faults={b: sorted(f.value for f in fs) for b, fs in self._file_faults.items()})


def _parse_control(text: str) -> dict[str, set[Fault]]:
    raw = json.loads(text or "{}")
    return {str(b): {Fault(f) for f in names} for b, names in raw.items()}
