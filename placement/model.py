"""Placement's own plain types: fleet, deployments, candidates and per-call hints.

These are not wire messages; ``services/`` converts protobuf to and from them at its boundary.
Candidates are frozen and slotted because the edge builds them once per route table and reads
them on every call.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

HARDWARE_PENALTY_PREFIX = "GPU "  # placement.hardware's penalty reasons start with it


class Availability(enum.IntEnum):
    """Operator intent for a backend. Values match ``switchyard.v1.Availability``."""

    ACTIVE = 1
    DRAINED = 2
    CORDONED = 3


@dataclass(frozen=True, slots=True)
class Variant:
    """A concrete model a backend serves under ``name`` for the logical model ``logical``."""

    name: str
    logical: str
    quality: float


@dataclass(frozen=True, slots=True)
class LogicalModel:
    name: str
    default_slo_ms: float
    variants: tuple[Variant, ...]
    decoupled: bool = False


@dataclass(frozen=True, slots=True)
class Backend:
    """One Triton server on some hardware in some region."""

    id: str
    endpoint: str
    cloud: str
    region: str
    accelerator: str
    accelerator_count: int
    price_class: str
    variants: tuple[Variant, ...]
    max_concurrency: int = 4


@dataclass(frozen=True, slots=True)
class Candidate:
    """A deployment (variant on a backend) as one edge region sees it, with estimates.

    ``dropped_reason`` is set by the table builder for deployments that no call may use
    right now (drained, unhealthy, GPU lost); the edge still keeps them for explanations.
    """

    deployment_id: str
    backend_id: str
    endpoint: str
    variant: str
    region: str
    cloud: str
    accelerator: str
    quality: float
    latency_p95_ms: float
    rtt_ms: float
    queue_ms: float
    compute_ms: float
    cost_usd: float
    spare_capacity: float
    observed: bool = False
    dropped_reason: str = ""
    availability: Availability = Availability.ACTIVE
    penalty_reason: str = ""


@dataclass(frozen=True, slots=True)
class Hints:
    """What a call asks for, read from its metadata (or the model's defaults)."""

    slo_ms: float
    min_quality: float = 0.0
    max_cost_usd: float = 0.0  # 0 = no limit
    allowed_regions: frozenset[str] = frozenset()  # empty = every region
    fail_fast: bool = False
    tenant: str = ""


@dataclass(slots=True)
class CallContext:
    """Per-call state the filters read: hints plus what the edge knows right now."""

    hints: Hints
    slo_margin_ms: float = 0.0
    exclude: frozenset[str] | set[str] = frozenset()  # deployment ids already tried
    avoid_regions: frozenset[str] | set[str] = frozenset()  # regions that just failed
    ejected: frozenset[str] | set[str] = frozenset()  # deployment ids ejected by the edge
    observed_p95_ms: dict[str, float] = field(default_factory=dict)  # edge's own view
    warming: dict[str, float] = field(default_factory=dict)  # slow start: deployment -> share
    draw: float = 0.0  # one uniform draw per call, for slow start

    def latency_ms(self, c: Candidate) -> float:
        """The edge's observed p95 for a deployment wins over the table's estimate, except
        that a hardware penalty (throttling GPU) is never hidden by older observations."""
        observed = self.observed_p95_ms.get(c.deployment_id)
        if observed is None:
            return c.latency_p95_ms
        if c.penalty_reason.startswith(HARDWARE_PENALTY_PREFIX):
            return max(observed, c.latency_p95_ms)
        return observed
