"""Latest-value broadcast: many watchers, each sees the newest state, bursts coalesce."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

from services.discovery.base import DiscoveryState


class StateBroadcast:
    """Holds the current :class:`DiscoveryState` and wakes watchers when it changes.

    A slow watcher skips intermediate states and gets the newest one: discovery state is a
    whole snapshot, so nothing is lost by coalescing.
    """

    def __init__(self, initial: DiscoveryState) -> None:
        self._state = initial
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def state(self) -> DiscoveryState:
        return self._state

    def publish(self, state: DiscoveryState) -> bool:
        """Replace the state when its content or staleness differs; returns True if it did."""
        if state.same_content(self._state) and state.stale == self._state.stale:
            return False
        self._state = dataclasses.replace(state, version=self._state.version + 1)
        self._wake()
        return True

    def close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def watch(self) -> AsyncIterator[DiscoveryState]:
        seen = -1
        while not self._closed:
            state = self._state
            if state.version != seen:
                seen = state.version
                yield state
                continue
            await self._changed.wait()
