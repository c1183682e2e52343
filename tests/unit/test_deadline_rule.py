"""The one "too little deadline left" rule (``placement.attempts.CallAttempts.check_time_left``)
on the edge's stream path, with a fake upstream and an injected clock: a stream with under
``MIN_REMAINING_S`` of its deadline left forwards nothing and ends with ``DeadlineTooShort``,
as a unary call does (``test_edge_resilience``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from placement.attempts import MIN_REMAINING_S
from placement.errors import DeadlineTooShort
from services.edge.router import CallRecord
from services.edge.stream import route_stream
from tests.unit.test_edge_resilience import RAW, Clock, FakeUpstream, cand, make_router


class Streams(FakeUpstream):
    """Counts the upstream streams the edge opens; none is expected to be."""

    def stream(self, timeout: float | None = None) -> object:
        self.calls.append((self._endpoint, b"stream"))
        raise AssertionError(f"a stream was forwarded with {timeout} s left")


class Context:
    async def send_initial_metadata(self, _md: object) -> None:
        raise AssertionError("nothing is sent to a stream stopped at the edge")


async def requests(clock: Clock, late_s: float) -> AsyncIterator[bytes]:
    clock.t += late_s  # the caller's first message arrives late_s after the stream opened
    yield RAW


@pytest.mark.parametrize(("deadline_s", "late_s"), [(0.001, 0.0), (0.5, 0.499)])
async def test_a_stream_with_too_little_deadline_left_forwards_nothing(
        deadline_s: float, late_s: float) -> None:
    clock = Clock()
    router, _, done = make_router([cand(0, 1e-6, 5)], {}, clock)
    up = Streams({})
    router.upstreams = up  # type: ignore[assignment]
    rec = CallRecord("", "")
    with pytest.raises(DeadlineTooShort) as err:
        async for _ in route_stream(router, requests(clock, late_s), [("x-slo-ms", "100")],
                                    deadline_s, rec, Context()):  # type: ignore[arg-type]
            pass
    assert up.calls == []
    assert "MIN_REMAINING_S" in err.value.message and "1.0 ms" in err.value.message
    assert [r.status for r in done] == ["DEADLINE_EXCEEDED"] and rec.chosen is None


async def test_a_stream_with_enough_deadline_left_is_forwarded() -> None:
    clock = Clock()
    router, _, _ = make_router([cand(0, 1e-6, 5)], {}, clock)
    up = Streams({})
    router.upstreams = up  # type: ignore[assignment]
    with pytest.raises(AssertionError, match="forwarded with"):
        async for _ in route_stream(router, requests(clock, 0.0), [("x-slo-ms", "100")],
                                    3 * MIN_REMAINING_S, CallRecord("", ""),
                                    Context()):  # type: ignore[arg-type]
            pass
    assert up.calls == [("ep0", b"stream")]
