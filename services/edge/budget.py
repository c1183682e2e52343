"""Retry budget (as Envoy's and Linkerd's): extra attempts are capped at ``ratio`` of calls
over a sliding window, plus a floor of ``min_per_s`` so a quiet edge can still retry."""

from __future__ import annotations

import time
from collections.abc import Callable


class RetryBudget:
    def __init__(self, ratio: float = 0.2, min_per_s: float = 10.0, window_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ratio = ratio
        self.min_per_s = min_per_s
        self.window_s = window_s
        self.clock = clock
        self._calls = 0.0
        self._retries = 0.0
        self._at = clock()

    def _decay(self) -> None:
        now = self.clock()
        dt = now - self._at
        if dt > 0:
            keep = max(0.0, 1.0 - dt / self.window_s)
            self._calls *= keep
            self._retries *= keep
            self._at = now

    def call(self) -> None:
        self._calls += 1

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it."""
        self._decay()
        if self._retries < self.ratio * self._calls + self.min_per_s * self.window_s:
            self._retries += 1
            return True
        return False
