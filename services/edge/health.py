"""Which deployments this edge may use right now, and why not: one owner.

``HealthView`` owns everything the edge itself decides about health: outlier ejection per
deployment and per backend (``outlier.py``: a server's timeouts and lost connections block
all its variants at once), the verdicts of the active ``ServerReady`` checks (run by
``control.HealthChecker``, which only does the I/O and reports here), and slow start for
whatever comes back (``slowstart.py``). Operator intent (drain, cordon) arrives with the
route table (placement owns it): a drained row carries its ``dropped_reason`` (the routable
filter drops it) and a cordoned one its ``availability`` (the cordon filter); ``usable``
folds drain in for the control RPCs.

Each call reads ``view()``: an immutable ``HealthSnapshot`` (deployment → the true reason it
may not be used; deployment → slow-start share; of the unusable, those kept out only by
outlier detection → when their ejection ends), rebuilt only when something changes.
Nobody else holds or mutates these sets.

When every deployment a call may use is ejected by outlier detection, the router tries one
of them anyway (panic routing, ``placement.panic``: the soonest back first, every other
filter of the call still applied); a deployment failing its active health check is never
a panic target (a ``ServerReady`` that fails says more than a run of failed calls).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import structlog

from placement.model import Candidate
from services.edge.outlier import OutlierDetector, OutlierSettings
from services.edge.routes import RouteStore
from services.edge.slowstart import SlowStart

log = structlog.get_logger("switchyard.edge")

OUTLIER = "ejected by the edge (outlier detection: failed calls)"
SERVER_OUTLIER = "server ejected by the edge (outlier detection: timeouts or lost connections)"
CHECK_FAILING = "health check failing (ServerReady)"
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """What one call may use: read-only, never changed after it is handed out."""

    unusable: Mapping[str, str]  # deployment id -> why the edge will not use it
    warming: Mapping[str, float]  # deployment id -> slow-start share of traffic
    # Of ``unusable``, those kept out only by outlier detection (not a failing health check)
    # -> when their ejection ends (the view's clock): panic targets (``placement.panic``).
    ejected_until: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))


class HealthView:
    def __init__(self, store: RouteStore, outliers: OutlierSettings, slow_start_s: float,
                 unhealthy_after: int = 2, clock: Callable[[], float] = time.monotonic,
                 on_eject: Callable[[str, float], None] | None = None,
                 on_backend_eject: Callable[[str, float], None] | None = None) -> None:
        """``on_eject(deployment_id, seconds)`` on each deployment ejection and
        ``on_backend_eject(backend_id, seconds)`` on each whole backend's (metrics, log; a
        backend's is only logged when none is given)."""
        self.store = store
        self.clock = clock
        self.unhealthy_after = unhealthy_after
        self._deployments = OutlierDetector.from_settings(outliers, clock, on_eject)
        self._backends = OutlierDetector.from_settings(
            outliers, clock, on_backend_eject or (
                lambda b, for_s: log.warning("backend_ejected", backend=b, for_s=for_s)))
        self._slow_start = SlowStart(slow_start_s, clock)
        self._failed_checks: dict[str, int] = {}
        self._unhealthy: dict[str, str] = {}  # backend ids failing active checks -> why
        self._view = HealthSnapshot(_EMPTY, MappingProxyType({}))

    # -- read ----------------------------------------------------------------------------

    def view(self) -> HealthSnapshot:
        return self._view

    def usable(self, c: Candidate) -> bool:
        """May any call use ``c`` now (not drained, not blocked by the edge)?"""
        return not c.dropped_reason and c.deployment_id not in self._view.unusable

    def failing(self, backend_id: str) -> bool:
        """Is ``backend_id`` failing its active checks (``unhealthy_after`` in a row)?"""
        return backend_id in self._unhealthy

    def ejected_for(self, deployment_id: str, backend_id: str) -> float:
        return max(self._deployments.ejected_for(deployment_id),
                   self._backends.ejected_for(backend_id))

    # -- feed ----------------------------------------------------------------------------

    def table_changed(self) -> None:
        """A new route table: learn its deployments and backends."""
        self._deployments.known(self.store.deployment_ids())
        self._backends.known(set(self.store.endpoints()))
        self._rebuild()

    def success(self, c: Candidate) -> None:
        self._deployments.success(c.deployment_id)
        self._backends.success(c.backend_id)

    def failure(self, c: Candidate, server_failure: bool) -> None:
        """A call failed on ``c`` for a reason that is the backend's; ``server_failure``:
        the server failed (timeout, lost connection), not just this variant."""
        ejected = self._deployments.failure(c.deployment_id)
        if server_failure and self._backends.failure(c.backend_id):
            ejected = True
        if ejected:
            self._rebuild()

    def checked(self, backend_id: str, ok: bool, detail: str = "") -> None:
        """One active health-check result for a backend; ``detail``: how a failed one failed
        (kept in the blocked deployments' reason)."""
        if ok:
            self._failed_checks[backend_id] = 0
            if backend_id in self._unhealthy:
                del self._unhealthy[backend_id]
                log.info("backend_healthy", backend=backend_id,
                         slow_start_s=self._slow_start.ramp_s)
                # It failed checks and passes again: end its ejections now and let its
                # traffic return gradually (slow start) rather than after a doubled timer.
                self._backends.reinstate(backend_id)
                for dep in self.store.deployments_of(backend_id):
                    self._deployments.reinstate(dep)
                    self._slow_start.returned(dep)
                self._rebuild()
            return
        n = self._failed_checks[backend_id] = self._failed_checks.get(backend_id, 0) + 1
        if n >= self.unhealthy_after and backend_id not in self._unhealthy:
            self._unhealthy[backend_id] = f"{CHECK_FAILING}: {n} failed in a row, last {detail}"
            log.warning("backend_unhealthy", backend=backend_id, failed_checks=n, last=detail)
            self._rebuild()

    def tick(self) -> None:
        """Periodic: expire ejections into slow start, advance slow-start ramps."""
        for dep in self._deployments.tick():
            log.info("deployment_returned", deployment=dep)
            self._slow_start.returned(dep)
        for backend_id in self._backends.tick():
            log.info("backend_returned", backend=backend_id)
            for dep in self.store.deployments_of(backend_id):
                self._slow_start.returned(dep)
        self._slow_start.tick()
        self._rebuild()

    def _rebuild(self) -> None:
        unusable: dict[str, str] = {}
        until: dict[str, float] = {}
        now = self.clock()
        for b, why in self._unhealthy.items():
            unusable.update(dict.fromkeys(self.store.deployments_of(b), why))
        for b in self._backends.ejected - self._unhealthy.keys():
            for dep in self.store.deployments_of(b):
                if dep not in unusable:
                    unusable[dep] = SERVER_OUTLIER
                    until[dep] = now + self.ejected_for(dep, b)
        for dep in self._deployments.ejected:
            if dep not in unusable:
                unusable[dep] = OUTLIER
                until[dep] = now + self._deployments.ejected_for(dep)
        self._view = HealthSnapshot(MappingProxyType(unusable),
                                    MappingProxyType(dict(self._slow_start.shares)),
                                    MappingProxyType(until))
