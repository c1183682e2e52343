"""Hostile round 10, item 4: a retry whose remaining deadline is shorter than the round trip
to the next deployment, after a stopped backend. The caller's deadline ends the retry; it
must not count against that deployment (outlier ejection, its failure count), while the
stopped backend's refusal still does. Probed on the Python edge's router with an injected
clock (no sleeps): found right, pinned here."""

from __future__ import annotations

import dataclasses

import grpc
import pytest

from placement.errors import BackendFailed
from services.edge.outlier import OutlierSettings
from services.edge.router import CallRecord
from tests.unit.test_edge_resilience import RAW, Clock, FakeUpstream, cand, make_router, rpc_error


class StoppedThenShort(FakeUpstream):
    """ep0 is stopped: refused (UNAVAILABLE) after ``refused_s``; any other endpoint's
    answer takes longer than the attempt's timeout, which then ends it (DEADLINE_EXCEEDED)
    when the clock reaches it."""

    def __init__(self, clock: Clock, refused_s: float) -> None:
        super().__init__({})
        self.clock, self.refused_s = clock, refused_s
        self.timeouts: list[float | None] = []

    async def infer(self, raw: bytes, timeout: float | None = None) -> bytes:
        self.calls.append((self._endpoint, raw))
        self.timeouts.append(timeout)
        if self._endpoint == "ep0":
            self.clock.t += self.refused_s
            raise rpc_error(grpc.StatusCode.UNAVAILABLE)
        self.clock.t += timeout or 0.0
        raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED)


@pytest.mark.parametrize("left_ms", [3.0, 4.0, 6.0])
async def test_a_retry_cut_by_the_callers_deadline_is_not_held_against_its_deployment(
        left_ms: float) -> None:
    """A 20 ms deadline; the stopped backend refuses after 20 - left_ms; the next deployment
    is 10 ms away (its round trip alone is over what is left)."""
    clock = Clock()
    far = dataclasses.replace(cand(1, 2e-6, 5), rtt_ms=10.0)
    router, _, done = make_router([cand(0, 1e-6, 5), far], {}, clock,
                                  OutlierSettings(consecutive=1))
    up = StoppedThenShort(clock, (20.0 - left_ms) / 1000)
    router.upstreams = up  # type: ignore[assignment]
    with pytest.raises(BackendFailed):
        await router.infer(RAW, [("x-slo-ms", "100")], 0.020, CallRecord("", ""))
    assert [ep for ep, _ in up.calls] == ["ep0", "ep1"]
    assert up.timeouts[1] is not None and up.timeouts[1] <= left_ms / 1000 + 1e-9
    assert [r.status for r in done] == ["DEADLINE_EXCEEDED"]
    unusable = router.health.view().unusable
    assert "b0/m-v" in unusable and "b1/m-v" not in unusable, unusable
    assert "b1/m-v" not in router.stats.by_deployment, router.stats.by_deployment
    assert router.stats.by_deployment["b0/m-v"].failures == 1
