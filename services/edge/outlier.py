"""Outlier ejection, as Envoy does it, decided locally by each edge.

A deployment is ejected after ``consecutive`` failures in a row, or when at least
``failure_rate`` of its calls failed over an interval of ``interval_s`` with at least
``min_requests`` calls (Envoy's failure-percentage detection: a gray failure that fails one
call in two never fails three in a row), for ``base_s × 2^(n−1)`` seconds on its n-th
ejection (capped at ``max_s``); the ejection count decays after a healthy period. At most
``max_share`` of the known deployments are ejected at once, so a fleet-wide blip does not
eject everything. A backend that failed active health checks and passes again is
reinstated at once (``reinstate``) and returns through slow start.

``services.edge.health.HealthView`` owns the edge's two detectors (per deployment, per
backend), built from one ``OutlierSettings``; nothing else reads or changes their state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OutlierSettings:
    consecutive: int = 3
    base_s: float = 5.0
    max_s: float = 300.0
    max_share: float = 0.5
    failure_rate: float = 0.5
    min_requests: int = 20
    interval_s: float = 10.0


@dataclass(slots=True)
class _State:
    consecutive: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    last_ejected_at: float = 0.0
    calls: int = 0
    failures: int = 0


class OutlierDetector:
    def __init__(self, consecutive: int = 3, base_s: float = 5.0, max_s: float = 300.0,
                 max_share: float = 0.5, clock: Callable[[], float] = time.monotonic,
                 failure_rate: float = 0.5, min_requests: int = 20,
                 interval_s: float = 10.0,
                 on_eject: Callable[[str, float], None] | None = None) -> None:
        self.consecutive = consecutive
        self.failure_rate = failure_rate
        self.min_requests = min_requests
        self.interval_s = interval_s
        self._window_start = clock()
        self.base_s = base_s
        self.max_s = max_s
        self.max_share = max_share
        self.clock = clock
        self._states: dict[str, _State] = {}
        self.ejected: set[str] = set()  # read by its owner (HealthView) only
        self.on_eject = on_eject

    @classmethod
    def from_settings(cls, s: OutlierSettings, clock: Callable[[], float] = time.monotonic,
                      on_eject: Callable[[str, float], None] | None = None
                      ) -> OutlierDetector:
        return cls(s.consecutive, s.base_s, s.max_s, s.max_share, clock, s.failure_rate,
                   s.min_requests, s.interval_s, on_eject)

    def known(self, ids: set[str]) -> None:
        for i in ids:
            self._states.setdefault(i, _State())

    def success(self, key: str) -> None:
        st = self._states.get(key)
        if st is None:
            st = self._states[key] = _State()
        st.consecutive = 0
        st.calls += 1

    def failure(self, key: str) -> bool:
        """Record one failure; True when this failure ejected the deployment."""
        st = self._states.setdefault(key, _State())
        st.consecutive += 1
        st.calls += 1
        st.failures += 1
        if st.consecutive >= self.consecutive and key not in self.ejected:
            return self.eject(key)
        return False

    def eject(self, key: str) -> bool:
        now = self.clock()
        st = self._states.setdefault(key, _State())
        if key in self.ejected:
            return False
        if len(self.ejected) + 1 > max(1, int(self.max_share * len(self._states))):
            return False
        if now - st.last_ejected_at > self.max_s:
            st.ejections = 0  # healthy for a long time: forgive earlier ejections
        st.ejections += 1
        duration = min(self.base_s * 2 ** (st.ejections - 1), self.max_s)
        st.ejected_until, st.last_ejected_at = now + duration, now
        self.ejected.add(key)
        if self.on_eject is not None:
            self.on_eject(key, duration)
        return True

    def tick(self) -> list[str]:
        """Evaluate failure rates once per interval; return ejections whose time is up."""
        now = self.clock()
        if now - self._window_start >= self.interval_s:
            self._window_start = now
            for key, st in self._states.items():
                if (st.calls >= self.min_requests and key not in self.ejected
                        and st.failures >= self.failure_rate * st.calls):
                    self.eject(key)
                st.calls = st.failures = 0
        back = [k for k in self.ejected if self._states[k].ejected_until <= now]
        for k in back:
            self.ejected.discard(k)
            self._states[k].consecutive = 0
        return back

    def reinstate(self, key: str) -> bool:
        """End an ejection early (the backend passed an active check after failing them);
        the ejection count is kept, so a flapping backend is still ejected for longer."""
        if key not in self.ejected:
            return False
        self.ejected.discard(key)
        st = self._states[key]
        st.consecutive, st.ejected_until = 0, self.clock()
        return True

    def ejected_for(self, key: str) -> float:
        st = self._states.get(key)
        return max(0.0, st.ejected_until - self.clock()) if st and key in self.ejected else 0.0
