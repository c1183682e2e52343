"""Feedback on observed SLO misses, per deployment and SLO class: a learned safety margin.

The p95 estimate and the queueing model decide which deployments may take a call; what
they get wrong shows up as calls that missed their SLO. The edge counts, for every
deployment and SLO class (the call's SLO on a 10 % geometric grid, so arbitrary
``x-slo-ms`` values make a bounded set of keys), the calls it served there, and keeps a
margin ``m`` (ms) that the SLO filter adds to the deployment's predicted latency for calls
of that class (``CallContext.slo_margins``):

    miss:  m ← m + STEP × slo
    met:   m ← max(0, m − STEP × slo × τ / (1 − τ))
    time:  m ← m × 2^(−Δt / HALF_LIFE_S)

With ``τ = queueing.TAIL`` (0.5 %) the margin settles where a fraction ``τ`` of the calls
still sent there miss (a quantile tracker: one miss undoes ``(1 − τ)/τ`` met calls); the
decay in time lets a deployment that was pushed out get tried again once what made it
late is likely gone (a burst, a noisy neighbour). The clock is the caller's (``now``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

from placement import queueing

STEP = 0.3  # of the SLO, per miss
HALF_LIFE_S = 40.0
FLOOR_MS = 0.05  # margins below this are dropped
DECAY_EVERY_S = 0.25  # margins are decayed at most this often (per class)
GRID = math.log(1.1)


def slo_class(slo_ms: float) -> int:
    """The SLO on a 10 % geometric grid: calls within ~10 % of each other share a margin."""
    return round(math.log(max(slo_ms, 1.0)) / GRID)


class SloFeedback:
    """One edge's margins; the edge owns it, calls read ``margins(slo_ms, now)``."""

    def __init__(self, tail: float = queueing.TAIL, step: float = STEP,
                 half_life_s: float = HALF_LIFE_S) -> None:
        self.tail, self.step, self.half_life_s = tail, step, half_life_s
        self._margins: dict[int, dict[str, float]] = {}  # class -> deployment -> ms
        self._at: dict[int, float] = {}  # class -> when its margins were last decayed

    def record(self, deployment_id: str, slo_ms: float, met: bool, now: float) -> None:
        """One call of SLO ``slo_ms`` served by ``deployment_id``: it met its SLO or not."""
        k = slo_class(slo_ms)
        margins = self._decayed(k, now)
        m = margins.get(deployment_id, 0.0)
        if met:
            if m <= 0.0:
                return
            m -= self.step * slo_ms * self.tail / (1.0 - self.tail)
        else:
            m += self.step * slo_ms
        if m < FLOOR_MS:
            margins.pop(deployment_id, None)
        else:
            margins[deployment_id] = m

    def margins(self, slo_ms: float, now: float) -> Mapping[str, float]:
        """Deployment id -> margin (ms) for calls of this SLO (a read-only view)."""
        return MappingProxyType(self._decayed(slo_class(slo_ms), now))

    def _decayed(self, k: int, now: float) -> dict[str, float]:
        margins = self._margins.setdefault(k, {})
        last = self._at.get(k)
        if last is None or not margins:
            self._at[k] = now
            return margins
        if now - last < DECAY_EVERY_S:
            return margins
        self._at[k] = now
        factor = 0.5 ** ((now - last) / self.half_life_s)
        for dep in list(margins):
            m = margins[dep] * factor
            if m < FLOOR_MS:
                del margins[dep]
            else:
                margins[dep] = m
        return margins
