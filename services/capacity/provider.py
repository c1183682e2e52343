"""The ``Provider`` protocol: add and remove GPU capacity per pool.

A pool is GPUs of one kind in one region at one price class (``placement.planner.PlanPool``);
an *instance* is one GPU's Triton server in it. Providers: ``local`` (real Triton processes,
:mod:`services.capacity.local`), ``kubernetes`` (:mod:`services.capacity.kubernetes`),
``simulated`` (:mod:`services.capacity.simulated`: delay, reclaims, the bill).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Instance:
    """One GPU's Triton server in a pool, reachable at ``endpoint`` (gRPC)."""

    id: str
    pool: str
    endpoint: str
    metrics_url: str


class Provider(Protocol):
    """Adds and removes GPUs. ``add`` returns once the new servers are ready (nothing loaded)."""

    def instances(self, pool: str) -> list[Instance]: ...

    async def add(self, pool: str, count: int) -> list[Instance]: ...

    async def remove(self, instance: Instance) -> None: ...
