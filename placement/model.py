"""Placement's own plain types: fleet, deployments, candidates and per-call hints.

These are not wire messages; ``services/`` converts protobuf to and from them at its boundary.
Candidates are frozen and slotted because the edge builds them once per route table and reads
them on every call.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
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
    concurrency: int = 1
    edge_slots: float = 0.0  # this edge's share of ``concurrency``; 0 = all of it

    @property
    def slots(self) -> float:
        """The in-flight calls this edge may have on the deployment before it queues."""
        return self.edge_slots or float(self.concurrency)


@dataclass(frozen=True, slots=True)
class Hints:
    """What a call asks for, read from its metadata (or the model's defaults)."""

    slo_ms: float
    min_quality: float = 0.0
    max_cost_usd: float = math.inf  # a real cap, 0 included; inf = no cap
    allowed_regions: frozenset[str] = frozenset()  # empty = every region
    fail_fast: bool = False
    tenant: str = ""


@dataclass(slots=True)
class CallContext:
    """Per-call state the filters read: hints plus what the edge knows right now.

    The sets and mappings are read-only snapshots handed in by their owners (the call's
    ``placement.attempts.CallAttempts``, the edge's health view); a retry gets a new context
    rather than a mutated one.
    """

    hints: Hints
    slo_margin_ms: float = 0.0
    exclude: frozenset[str] = frozenset()  # deployments this call's failures rule out
    avoid_regions: frozenset[str] = frozenset()  # failure domains the call steers away from
    # deployment id -> why the edge will not use it (outlier ejection, failing health check)
    unusable: Mapping[str, str] = field(default_factory=dict)
    observed_p95_ms: Mapping[str, float] = field(default_factory=dict)  # edge's own view
    warming: Mapping[str, float] = field(default_factory=dict)  # slow start: deployment -> share
    draw: float = 0.0  # one uniform draw per call, for slow start
    inflight: Mapping[str, int] = field(default_factory=dict)  # this edge's calls in flight

    def latency_ms(self, c: Candidate) -> float:
        """The p95 this call can expect from ``c``.

        The edge's observed p95 wins over the table's estimate, except that a hardware
        penalty (throttling GPU) is never hidden by older observations. On top, the queue
        this edge itself is building right now: with ``n`` calls in flight on ``c`` and
        ``k = c.slots`` (this edge's share of the deployment's slots, see ``edge_slots``),
        ``(n - k + 1) × compute / k`` once ``n`` reaches ``k`` rounded at random (below; the
        table is as old as its last push, this is what the edge sent since).
        """
        lat = c.latency_p95_ms
        observed = self.observed_p95_ms.get(c.deployment_id)
        if observed is not None:
            lat = (max(observed, lat) if c.penalty_reason.startswith(HARDWARE_PENALTY_PREFIX)
                   else observed)
        n = self.inflight.get(c.deployment_id, 0)
        k = c.slots
        # A fractional share is rounded at random with the call's draw: ``floor(k) + 1``
        # calls in flight with probability ``frac(k)``, else ``floor(k)``, so edges keep
        # ``k`` on average instead of each taking a whole slot (herding). With ``draw`` 0
        # (a caller that draws nothing) this is ``ceil(k)``, the whole-slot rule.
        whole = math.floor(k)
        if k > 0 and n >= whole + (self.draw < k - whole):
            lat += (n - k + 1) * c.compute_ms / k
        return lat
