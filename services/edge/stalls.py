"""Streams stuck on a backend that no longer answers.

A stream waits on its backend for as long as the caller's deadline allows, and an LLM stream
often has none: a backend that stops answering without closing its connection (a process
stopped with SIGSTOP, a hung GPU, a wedged host) held its streams until the caller gave up,
although the edge's own health checks had found it unreachable within a second (measured:
a stream whose backend was stopped at its 30th token ended DEADLINE_EXCEEDED after the
caller's 30 s, 31 tokens delivered).

Each stream attempt is watched here while it waits on its backend (``watch``). When an
active health check of that backend fails *unreachable* (no answer, not "not ready": a
server shutting down still finishes what it has) while the edge counts it failing
(``HealthView``: ``unhealthy_after`` checks in a row), every stream attempt there that has
heard nothing for ``silent_s`` is aborted (``sweep``): its read raises UNAVAILABLE naming
both facts, and the stream path treats it as any backend failure — a resumable LLM stream
continues elsewhere, another ends UNAVAILABLE. A stream still receiving responses is never
aborted, whatever the checks say (a loaded host can time out a check; a backend that is
sending tokens is alive).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SILENT_S = 2.0  # a stream attempt silent this long on a backend failing checks is aborted


@dataclass(eq=False, slots=True)
class Watch:
    """One stream attempt waiting on ``backend_id``; ``aborted`` gets the reason."""

    backend_id: str
    heard_at: float
    aborted: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())

    def heard(self, now: float) -> None:
        self.heard_at = now


class StallWatch:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 silent_s: float = SILENT_S, what: str = "stream") -> None:
        """``what``: the attempts watched (``stream``; ``call``, the unary ones), as the
        abort's reason names them."""
        self.clock = clock
        self.silent_s = silent_s
        self.what = what
        self._by_backend: dict[str, set[Watch]] = {}
        self.aborted = 0  # stream attempts aborted so far

    def watch(self, backend_id: str) -> Watch:
        w = Watch(backend_id, self.clock())
        self._by_backend.setdefault(backend_id, set()).add(w)
        return w

    def done(self, w: Watch) -> None:
        watches = self._by_backend.get(w.backend_id)
        if watches is not None:
            watches.discard(w)
            if not watches:
                del self._by_backend[w.backend_id]
        if not w.aborted.done():
            w.aborted.cancel()

    def watching(self, backend_id: str) -> int:
        return len(self._by_backend.get(backend_id, ()))

    def sweep(self, backend_id: str, why: str) -> int:
        """``backend_id`` failed a check unreachable while counted failing: abort its
        attempts silent for ``silent_s``. Returns how many."""
        now, n = self.clock(), 0
        for w in list(self._by_backend.get(backend_id, ())):
            silent = now - w.heard_at
            if silent >= self.silent_s and not w.aborted.done():
                w.aborted.set_result(
                    f"{backend_id} sent nothing for {silent:.1f} s and fails its health "
                    f"checks ({why}): the {self.what}'s attempt there is given up")
                n += 1
        self.aborted += n
        return n
