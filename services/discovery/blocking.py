"""The rules of a Consul blocking-query loop, as Consul's "Blocking Queries" page states them.

- :class:`IndexTracker`: reset the index to 0 when a response's ``X-Consul-Index`` goes
  backwards (restart the loop with a non-blocking read); otherwise keep it at least 1, so
  a buggy zero index never turns the loop into a busy loop.
- :class:`TokenBucket`: rate limit without delaying the happy case: a burst of quick
  deliveries, then one per refill interval while the index churns.
- :class:`Backoff`: jittered exponential waits after errors.
- :func:`jittered_wait`: the ``wait`` parameter, spread so replicas do not wake together.

Clock, sleep and randomness are injected; tests never sleep for real.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class IndexTracker:
    """The ``index`` to send on the next blocking request."""

    def __init__(self) -> None:
        self.index = 0
        self.resets = 0

    def update(self, header: str | int | None) -> int:
        """Account for a response's ``X-Consul-Index``; returns the next index to send."""
        try:
            new = int(header) if header is not None else 0
        except ValueError:
            new = 0
        if new < self.index:
            self.index = 0
            self.resets += 1
        else:
            self.index = max(new, 1)
        return self.index

    def reset(self) -> None:
        self.index = 0


class TokenBucket:
    """``burst`` tokens, one more every ``refill_s``; :meth:`take` waits only when empty."""

    def __init__(self, burst: int, refill_s: float, *, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        self._burst = float(burst)
        self._refill_s = refill_s
        self._tokens = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        if self._refill_s <= 0:
            self._tokens = self._burst
        else:
            self._tokens = min(self._burst, self._tokens + (now - self._last) / self._refill_s)
        self._last = now

    async def take(self) -> float:
        """Take one token, sleeping until one is available; returns the seconds waited."""
        self._refill()
        waited = 0.0
        if self._tokens < 1:
            waited = (1 - self._tokens) * self._refill_s
            await self._sleep(waited)
            self._refill()
        self._tokens = max(0.0, self._tokens - 1)
        return waited


class Backoff:
    """Exponential backoff with full jitter between ``min_s`` and ``max_s``."""

    def __init__(self, min_s: float, max_s: float, *,
                 rand: Callable[[], float] = random.random) -> None:
        self._min = min_s
        self._max = max_s
        self._rand = rand
        self.failures = 0

    def next_delay(self) -> float:
        ceiling = min(self._max, self._min * 2.0 ** self.failures)
        self.failures += 1
        return self._min + (ceiling - self._min) * self._rand()

    def reset(self) -> None:
        self.failures = 0


def jittered_wait(wait_s: float, jitter: float, rand: Callable[[], float] = random.random) -> str:
    """The ``wait`` parameter: ``wait_s`` shortened by up to ``jitter`` of itself, in ms."""
    ms = max(1, int(wait_s * (1 - jitter * rand()) * 1000))
    return f"{ms}ms"
