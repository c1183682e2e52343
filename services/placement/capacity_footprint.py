"""GPU memory per variant, measured through NVML around each load (issue 13).

The agent's NVML readings already reach placement with every telemetry report
(``PlacementService.gpus``: a backend's ``GpuReading``s and the report's ``unix_ms``).
Around a load on an instance whose GPU is reported:

- **before**: the newest reading's ``mem_used_bytes``; a GPU whose used memory plus the
  variant's footprint would pass ``(1 − headroom) × mem_total`` takes no new variant
  (:class:`GpuFull`);
- **after**: the first reading sent after the load finished; ``after − before`` is one
  sample of the footprint (a sample ≤ 0, e.g. another process freed memory meanwhile, is
  discarded). The footprint is the mean of the samples.

Until a variant was measured, its footprint is the declared one (``[[capacity.variants]]``
``memory_gb``). An instance without NVML readings (the local provider on a machine without a
GPU) loads on the declared footprint, and nothing is measured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from placement.errors import SwitchyardError
from services.capacity.actor import Control
from services.capacity.model_control import DrainReport, RoutingGate
from services.capacity.provider import Instance

log = structlog.get_logger("switchyard.capacity")
GB = 1e9


class GpuFull(SwitchyardError):
    """The instance's GPU is near its memory limit: it takes no new variant."""

    grpc_code = "RESOURCE_EXHAUSTED"


@dataclass(frozen=True, slots=True)
class MemoryReading:
    used_bytes: int
    total_bytes: int
    unix_ms: int  # when the agent sent the report that carried it


# instance id -> its GPU's newest memory reading, or None when nothing reports it
Readings = Callable[[str], MemoryReading | None]


@dataclass(slots=True)
class _Pending:
    instance_id: str
    variant: str
    before_bytes: int
    loaded_ms: int


class FootprintBook:
    """Declared footprints, measured samples, and the loads still waiting for a reading."""

    def __init__(self, declared_gb: Mapping[str, float], default_gb: float = 8.0) -> None:
        self.declared_gb = dict(declared_gb)
        self.default_gb = default_gb
        self._samples: dict[str, list[float]] = {}
        self._pending: list[_Pending] = []

    def footprint_gb(self, variant: str) -> float:
        samples = self._samples.get(variant)
        if samples:
            return sum(samples) / len(samples)
        return self.declared_gb.get(variant, self.default_gb)

    def samples(self, variant: str) -> int:
        return len(self._samples.get(variant, ()))

    def known(self) -> list[str]:
        return sorted(set(self.declared_gb) | set(self._samples))

    def admit(self, instance_id: str, variant: str, reading: MemoryReading | None,
              headroom: float) -> None:
        """Raise :class:`GpuFull` when ``variant`` would push the GPU past its limit."""
        if reading is None or reading.total_bytes <= 0:
            return
        need = self.footprint_gb(variant) * GB
        limit = (1.0 - headroom) * reading.total_bytes
        if reading.used_bytes + need > limit:
            raise GpuFull(f"{instance_id}: GPU memory {reading.used_bytes / GB:.1f} GB used "
                          f"of {reading.total_bytes / GB:.1f} GB; {variant} needs "
                          f"{need / GB:.1f} GB more and the limit is {limit / GB:.1f} GB "
                          f"({headroom:.0%} headroom): no new variant here")

    def loaded(self, instance_id: str, variant: str, before: MemoryReading | None,
               loaded_ms: int) -> None:
        """A load finished; its footprint is measured by the first later reading."""
        if before is not None:
            self._pending.append(_Pending(instance_id, variant, before.used_bytes, loaded_ms))

    def measure(self, readings: Readings) -> list[tuple[str, float]]:
        """Take a sample from every pending load whose GPU has reported since; returns them."""
        taken: list[tuple[str, float]] = []
        keep: list[_Pending] = []
        for p in self._pending:
            r = readings(p.instance_id)
            if r is None or r.unix_ms <= p.loaded_ms:
                keep.append(p)
                continue
            delta_gb = (r.used_bytes - p.before_bytes) / GB
            if delta_gb > 0:
                self._samples.setdefault(p.variant, []).append(delta_gb)
                taken.append((p.variant, delta_gb))
                log.info("capacity.footprint_measured", instance=p.instance_id,
                         variant=p.variant, memory_gb=round(delta_gb, 3),
                         footprint_gb=round(self.footprint_gb(p.variant), 3))
        self._pending = keep
        return taken


class MeasuredControl:
    """A :class:`Control` that checks GPU memory before each load and measures it after."""

    def __init__(self, inner: Control, instance: Instance, book: FootprintBook,
                 readings: Readings, headroom: float, now_ms: Callable[[], int]) -> None:
        self.inner = inner
        self.instance = instance
        self.book = book
        self.readings = readings
        self.headroom = headroom
        self.now_ms = now_ms

    async def loaded(self) -> frozenset[str]:
        return await self.inner.loaded()

    async def load(self, variant: str) -> None:
        before = self.readings(self.instance.id)
        self.book.admit(self.instance.id, variant, before, self.headroom)
        await self.inner.load(variant)
        self.book.loaded(self.instance.id, variant, before, self.now_ms())

    async def drain_and_unload(self, variant: str, gate: RoutingGate) -> DrainReport:
        return await self.inner.drain_and_unload(variant, gate)

    async def close(self) -> None:
        await self.inner.close()
