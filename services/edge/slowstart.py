"""Slow start for deployments that come back (from ejection, failed health checks, or a
region outage): their share of traffic ramps linearly over ``ramp_s`` (Envoy's slow-start
mode, without the aggression exponent). Owned by ``services.edge.health.HealthView``, which
hands calls a read-only copy of ``shares``."""

from __future__ import annotations

import time
from collections.abc import Callable

from placement.filters.slow_start import MIN_SHARE, ramp_share


class SlowStart:
    def __init__(self, ramp_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ramp_s = ramp_s
        self.clock = clock
        self._since: dict[str, float] = {}
        self.shares: dict[str, float] = {}

    def returned(self, deployment_id: str) -> None:
        if self.ramp_s <= 0:
            return
        self._since[deployment_id] = self.clock()
        self.shares[deployment_id] = MIN_SHARE

    def tick(self) -> None:
        now = self.clock()
        for dep, since in list(self._since.items()):
            share = ramp_share(now - since, self.ramp_s)
            if share is None:
                del self._since[dep]
                self.shares.pop(dep, None)
            else:
                self.shares[dep] = share
