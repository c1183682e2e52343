"""Placement's own plain types: fleet, deployments, candidates and per-call hints.

These are not wire messages; ``services/`` converts protobuf to and from them at its boundary.
Candidates are frozen and slotted because the edge builds them once per route table and reads
them on every call.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Container, Mapping
from dataclasses import dataclass, field

from placement.token_learning import TokenSpeed

HARDWARE_PENALTY_PREFIX = "GPU "  # placement.hardware's penalty reasons start with it
# ``CallContext.latency_ms``'s worst case past the share waits for the backend's mix
# (``Candidate.ahead_ms``) rather than the row's own compute; False: only the fallback's
# wait does (``placement.meet``). See ``placement.routes.MIX_WAIT``.
WORST_CASE_AT_MIX = True


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
    edge_slots: float = 0.0  # this edge's share of the backend's ``concurrency``; 0 = all
    # the mean service time of the calls the backend serves, every variant (its FIFO's mix,
    # ``routes.mix_ms``); 0 = not known: the row's own ``compute_ms`` (``ahead_ms``)
    mix_compute_ms: float = 0.0
    tokens: TokenSpeed | None = None  # LLM streams: the fleet's learned token speed

    @property
    def ahead_ms(self) -> float:
        """The mean service time of a call ahead of this one in the backend's FIFO: every
        variant on the backend shares its servers, so the mix's (``mix_compute_ms``) when
        known, else this row's own compute."""
        return self.mix_compute_ms or self.compute_ms

    @property
    def slots(self) -> float:
        """The in-flight calls this edge may have on the backend (every variant) before it
        queues."""
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
    # deployment id -> margin (ms) learned from this SLO class's misses (placement.feedback)
    slo_margins: Mapping[str, float] = field(default_factory=dict)
    # the share of its calls this edge may risk on idle slots past its slot share
    # (``placement.shares.borrow_tail``; 0 = none: the worst case below)
    borrow_tail: float = 0.0
    # deployments whose recent miss rate for this SLO class rules them out of the fallback
    # (``placement.feedback.SloFeedback.excluded``, read by ``placement.meet``)
    slo_excluded: Container[str] = frozenset()
    edge: str = ""  # this edge's name (its region), for ``placement.meet``'s "hrw" spread
    _by_backend: dict[str, int] | None = field(default=None, repr=False, compare=False)

    def latency_ms(self, c: Candidate) -> float:
        """The p95 this call can expect from ``c``.

        The edge's observed p95 wins over the table's estimate, except that a hardware
        penalty (throttling GPU) is never hidden by older observations. On top, what this
        edge itself sent since the table: ``n`` its calls in flight on ``c``'s *backend*
        (every variant: they queue on the same servers), ``k = c.slots`` its share of the
        backend's slots (``edge_slots``, ``placement.shares``):

        - ``n < floor(k)``: a slot of its own share is free, no wait added;
        - ``floor(k) <= n < ceil(k)``: the fraction of a slot the share covers is taken
          with probability ``frac(k)`` (the call's draw; random rounding, so the edges'
          expected use of the backend is its concurrency);
        - otherwise the call would need a slot another edge owns. Whether that one is free
          is not known before the next table, and a call that takes it makes every later
          call on the backend wait, loose or tight (one FIFO). So the edge does not plan on
          it (risk-aware headroom): it expects the worst case, every slot busy ahead of its
          excess, ``(n - k + 1) × concurrency × ahead / k`` (``ahead``: the mean service
          time of the backend's mix of calls, ``Candidate.ahead_ms``; the calls ahead may be
          other variants', longer or shorter than this one), which removes the row for
          any SLO that can be met elsewhere and orders the fallback by how far past its
          share each row is.

        What this misjudges shows up as SLO misses; the SLO filter adds the margin the
        edge learned from them (``slo_margins``, ``placement.feedback``).
        """
        lat = self.p95_ms(c)
        k = c.slots
        if k <= 0:
            return lat
        n = self._backend_inflight().get(c.backend_id, 0)
        whole = math.floor(k)
        if n < whole or (n < math.ceil(k) and self.draw < k - whole):
            return lat
        ahead = c.ahead_ms if WORST_CASE_AT_MIX else c.compute_ms
        return lat + (n - k + 1) * max(c.concurrency, 1) * ahead / k

    def p95_ms(self, c: Candidate) -> float:
        """``c``'s p95 with no queue of this edge's own: what this edge observed there when
        it has samples (the larger of that and the table's while hardware penalises the
        backend), else the table's."""
        observed = self.observed_p95_ms.get(c.deployment_id)
        if observed is None:
            return c.latency_p95_ms
        return (max(observed, c.latency_p95_ms)
                if c.penalty_reason.startswith(HARDWARE_PENALTY_PREFIX) else observed)

    def backend_inflight(self, backend_id: str) -> int:
        """This edge's calls in flight on ``backend_id`` (every variant)."""
        return self._backend_inflight().get(backend_id, 0)

    def _backend_inflight(self) -> dict[str, int]:
        """This edge's calls in flight per backend (every variant), counted once per call."""
        if self._by_backend is None:
            by: dict[str, int] = {}
            for dep, n in self.inflight.items():
                if n:
                    b = dep.split("/", 1)[0]
                    by[b] = by.get(b, 0) + n
            self._by_backend = by
        return self._by_backend
