"""The node agent's backends in the service catalog (Consul), registered until they are in.

:meth:`CatalogRegistration.register_pending` tries every backend not yet in the catalog once
(``NodeAgent.start`` calls it, so a catalog that answers has them before ``start`` returns);
:meth:`CatalogRegistration.retry` tries the ones that failed again, with backoff from
``[consul] retry_min_s`` to ``retry_max_s`` (half fixed, half random), until every one is in.
A catalog that answers errors (Consul without a leader, restarting, unreachable) is not a
configuration error: the agent keeps running and streaming telemetry to placement meanwhile,
and each failure is logged with what failed and when it is tried again.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from services.api.switchyard.v1 import fleet_pb2
from services.discovery.base import HealthCheck


class CatalogRegistration:
    """Registers ``entries`` (a backend and its check) in ``discovery`` until all are in."""

    def __init__(self, discovery: Any, entries: Sequence[tuple[fleet_pb2.Backend, HealthCheck]],
                 *, retry_s: tuple[float, float], sleep: Callable[[float], Awaitable[None]],
                 rng: random.Random, log: Any) -> None:
        self.discovery = discovery
        self.pending = list(entries)  # not in the catalog yet
        self.retry_s = retry_s
        self._sleep = sleep
        self._rng = rng
        self._log = log
        self.attempts = 0  # passes over the pending backends

    async def register_pending(self) -> None:
        """Try every pending backend once; those that fail stay pending (logged)."""
        self.attempts += 1
        failed = []
        for backend, check in self.pending:
            try:
                await self.discovery.register(backend, check)
            except Exception as exc:  # any catalog failure: retried, never fatal
                failed.append((backend, check))
                self._log.warning("agent.catalog_register_failed", backend=backend.id,
                                  attempt=self.attempts, error=getattr(exc, "message", repr(exc)),
                                  action="telemetry to placement goes on; retrying with backoff")
            else:
                self._log.info("agent.registered_in_catalog", backend=backend.id,
                               attempt=self.attempts)
        self.pending = failed

    async def retry(self) -> None:
        """Retry the pending backends with backoff until every one is in the catalog."""
        attempt = 0
        while self.pending:
            ceiling = min(self.retry_s[1], self.retry_s[0] * 2.0**attempt)
            delay = ceiling / 2 + self._rng.uniform(0, ceiling / 2)
            self._log.info("agent.catalog_retry_in", seconds=round(delay, 3),
                           backends=[b.id for b, _ in self.pending])
            await self._sleep(delay)
            attempt += 1
            await self.register_pending()
