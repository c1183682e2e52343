"""One telemetry owner per backend, so two agents reporting one backend cannot interleave.

Without it, two agents that both report backend ``b`` (a second agent started on the same
node by mistake, a DaemonSet rolling over) make ``b``'s readings flip between their sources
every second, and placement derives rates from counter deltas that mix two Triton views.

Rule: the first telemetry stream to report a backend owns it; reports for it from any other
stream are ignored and counted, until the owner's stream ends or its last report is older
than ``stale_after_s`` (then the next reporter takes over, and the takeover is logged).
``switchyard status`` shows the owner and the ignored count.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

log = structlog.get_logger("switchyard.placement")


@dataclass(slots=True)
class Owner:
    stream: str  # one id per StreamTelemetry call; "" once that stream ended
    label: str  # "agent id @ peer", for people
    last_at: float


class TelemetryOwners:
    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_s = stale_after_s
        self._owners: dict[str, Owner] = {}
        self._ignored: dict[str, int] = {}

    def admit(self, backend_id: str, stream: str, label: str, now: float) -> bool:
        """Whether this stream's report for ``backend_id`` is used (it owns the backend)."""
        owner = self._owners.get(backend_id)
        if owner is not None and owner.stream == stream:
            owner.last_at = now
            return True
        if owner is None or not owner.stream or now - owner.last_at > self.stale_after_s:
            if owner is not None and owner.stream:
                log.warning("telemetry_owner_changed", backend=backend_id, old=owner.label,
                            new=label, old_silent_s=round(now - owner.last_at, 1))
            self._owners[backend_id] = Owner(stream, label, now)
            return True
        n = self._ignored.get(backend_id, 0) + 1
        self._ignored[backend_id] = n
        if n == 1 or n % 100 == 0:
            log.warning("telemetry_ignored", backend=backend_id, owner=owner.label,
                        reporter=label, ignored=n,
                        reason="another agent owns this backend's telemetry")
        return False

    def release(self, stream: str) -> None:
        """The stream ended: the backends it owned are free for the next reporter."""
        for o in self._owners.values():
            if o.stream == stream:
                o.stream = ""  # kept for status until the next reporter takes over

    def forget(self, backend_id: str) -> None:
        self._owners.pop(backend_id, None)
        self._ignored.pop(backend_id, None)

    def owner(self, backend_id: str) -> str:
        """The owner's label; "(stream ended)" when no stream owns it now."""
        o = self._owners.get(backend_id)
        if o is None:
            return ""
        return o.label if o.stream else f"{o.label} (stream ended)"

    def ignored(self, backend_id: str) -> int:
        return self._ignored.get(backend_id, 0)
