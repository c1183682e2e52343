"""The edge's router feeds its calls' SLO outcomes to placement.feedback and its calls read
the margins back: a deployment that made calls of one SLO class late stops taking them."""

from __future__ import annotations

from services.edge.router import CallRecord
from tests.unit.test_edge_resilience import RAW, Clock, FakeUpstream, cand, make_router


class LateUpstream(FakeUpstream):
    """Every call to ``ep0`` takes ``late_s`` on the injected clock."""

    def __init__(self, clock: Clock, late_s: float) -> None:
        super().__init__({"ep0": b"", "ep1": b""})
        self.clock, self.late_s = clock, late_s

    async def infer(self, raw: bytes, timeout: float | None = None) -> bytes:
        if self._endpoint == "ep0":
            self.clock.t += self.late_s
        return await super().infer(raw, timeout)


async def test_a_late_call_raises_the_margin_and_moves_that_class_to_the_next_deployment(
        ) -> None:
    clock = Clock()
    # ep0 is the cheapest and its p95 (80 ms) fits a 100 ms SLO; it answers in 150 ms: one
    # miss adds 30 ms (STEP × SLO) for that class, and 80 + 30 no longer fits.
    router, _, _ = make_router([cand(0, 1e-6, 80), cand(1, 2e-6, 60)], {}, clock)
    late = LateUpstream(clock, 0.150)
    router.upstreams = late
    rec = CallRecord("", "")
    await router.infer(RAW, [("x-slo-ms", "100")], 2.0, rec)
    assert rec.chosen is not None and rec.chosen.deployment_id == "b0/m-v"
    assert not rec.slo_met
    assert router.feedback.margins(100.0, clock())["b0/m-v"] > 0
    rec = CallRecord("", "")
    await router.infer(RAW, [("x-slo-ms", "100")], 2.0, rec)
    assert rec.chosen is not None and rec.chosen.deployment_id == "b1/m-v"
    # A looser class learned nothing: it still takes the cheapest.
    rec = CallRecord("", "")
    await router.infer(RAW, [("x-slo-ms", "1000")], 2.0, rec)
    assert rec.chosen is not None and rec.chosen.deployment_id == "b0/m-v"
