"""``Upstreams.drain`` past its bound and on the edge's stop: a stream let go of is cancelled
only when nothing is being sent on it (Triton 2.51 dies of mid-stream cancels, server#7368;
tests/integration/test_hostile_round6.py for the real backend)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.edge import upstream
from services.edge.upstream import Upstreams

pytestmark = pytest.mark.asyncio


class Generating:
    """A fake upstream stream: one response every ``every_s``, ``count`` of them, then EOF
    (``count`` None: for ever); records whether it was cancelled."""

    def __init__(self, count: int | None, every_s: float) -> None:
        self.count, self.every_s = count, every_s
        self.sent = 0
        self.ended = self.cancelled = False

    async def done_writing(self) -> None:
        pass

    async def read(self) -> object:
        if self.count is not None and self.sent >= self.count:
            self.ended = True
            return grpc.aio.EOF
        await asyncio.sleep(self.every_s)  # the backend's pace (a fake's own clock)
        self.sent += 1
        return b"token"

    def done(self) -> bool:
        return self.ended or self.cancelled

    def cancel(self) -> bool:
        self.cancelled = True
        return True


async def test_a_drain_still_answering_past_its_bound_runs_to_its_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``max_s`` a stream that still answers is read to its end, not cancelled: the old
    drain cancelled it at ``max_s`` mid-generation (fails on the old code)."""
    monkeypatch.setattr(upstream, "DRAIN_SILENT_S", 0.2)
    call = Generating(count=40, every_s=0.005)  # ~0.2 s of tokens, past a 0.02 s bound
    up = Upstreams(lambda e: e, 1024)
    task = up.drain(call, None, max_s=0.02)  # type: ignore[arg-type]
    assert task is not None
    await asyncio.wait_for(task, 10)
    assert (call.ended, call.cancelled, call.sent) == (True, False, 40)


async def test_a_drain_silent_past_its_bound_is_cancelled(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream that sends nothing (a stopped backend) is cancelled once past ``max_s`` and
    silent for ``DRAIN_SILENT_S``, not held for ever."""
    monkeypatch.setattr(upstream, "DRAIN_SILENT_S", 0.05)
    call = Generating(count=None, every_s=3600)
    up = Upstreams(lambda e: e, 1024)
    task = up.drain(call, None, max_s=0.02)  # type: ignore[arg-type]
    assert task is not None
    await asyncio.wait_for(task, 10)
    assert call.cancelled and not up.draining


async def test_the_edge_stopping_lets_its_drains_end_within_its_grace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``close(drain_s)``: a drain that ends within ``drain_s`` is not cancelled; one that
    does not is cancelled then, and close returns. The old close cancelled both at once."""
    short, endless = Generating(count=10, every_s=0.005), Generating(count=None, every_s=0.005)
    up = Upstreams(lambda e: e, 1024)
    for call in (short, endless):
        up.drain(call, None)  # type: ignore[arg-type]
    await asyncio.wait_for(up.close(0.5), 10)
    assert (short.ended, short.cancelled) == (True, False)
    assert endless.cancelled and endless.sent > 10
