"""An edge's per-call wait priced at the service time of the backend's mix of calls
(``Candidate.mix_compute_ms`` / ``ahead_ms``, filled by ``routes.RouteBuilder`` with
``routes.MIX_WAIT``, off, where the mix is longer than the row's own compute), not the row's
own variant's: ``CallContext.latency_ms``'s worst case
past the edge's share and ``placement.meet.chance``'s M/M/c wait.

On the code before (the wait at the row's own compute) ``test_the_worst_case_*`` and
``test_the_fallback_s_chance_*`` fail: a 5 ms variant on a backend busy with 100 ms calls
was planned to wait 5 ms per call ahead."""

from __future__ import annotations

import dataclasses

import pytest

from placement import meet, model, routes
from placement.fleet import TelemetrySnapshot
from placement.model import CallContext, Hints
from tests.meet_rows import meet_row
from tests.unit.test_prior import counters, row, setup


def test_a_row_without_its_mix_waits_at_its_own_compute() -> None:
    c = meet_row("b/small", "b", compute=5.0, slots=1.0, conc=4)
    assert c.mix_compute_ms == 0.0 and c.ahead_ms == 5.0
    assert dataclasses.replace(c, mix_compute_ms=100.0).ahead_ms == 100.0


def test_the_worst_case_past_the_share_waits_for_the_mix() -> None:
    c = dataclasses.replace(meet_row("b/small", "b", compute=5.0, slots=1.0, conc=4),
                            mix_compute_ms=100.0)
    ctx = CallContext(Hints(slo_ms=200.0), inflight={"b/large": 1, "b/small": 1})
    # two calls in flight on the backend (every variant) against a share of 1 slot: every
    # slot busy ahead of the excess of 2, each for the mix's 100 ms
    assert ctx.latency_ms(c) == pytest.approx(c.latency_p95_ms + 2 * 4 * 100.0 / 1.0)
    within = CallContext(Hints(slo_ms=200.0), inflight={})
    assert within.latency_ms(c) == c.latency_p95_ms  # a slot of its own: no wait added


def test_the_worst_case_at_the_row_s_own_compute_when_switched_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    c = dataclasses.replace(meet_row("b/small", "b", compute=5.0, slots=1.0, conc=4),
                            mix_compute_ms=100.0)
    monkeypatch.setattr(model, "WORST_CASE_AT_MIX", False)  # the fallback's wait only
    ctx = CallContext(Hints(slo_ms=200.0), inflight={"b/large": 1, "b/small": 1})
    assert ctx.latency_ms(c) == pytest.approx(c.latency_p95_ms + 2 * 4 * 5.0 / 1.0)


def test_the_fallback_s_chance_waits_for_the_mix() -> None:
    own = meet_row("b/small", "b", compute=5.0, slots=2.0, conc=4, busy=0.7)
    mixed = dataclasses.replace(own, mix_compute_ms=100.0)
    ctx = CallContext(Hints(slo_ms=60.0))
    # 4 servers at 0.7: about half the calls wait; for 5 ms calls ahead a 60 ms budget is
    # ample, for 100 ms ones a call that waits misses about as often as not
    assert meet.chance(own, ctx) > 0.99
    assert meet.chance(mixed, ctx) < 0.8
    # the same with a free slot: the mix does not matter
    assert meet.chance(mixed, ctx, idle=True) == meet.chance(own, ctx, idle=True)


def test_the_route_builder_puts_the_backend_s_mix_on_the_rows_it_slows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fleet, builder = setup()
    both = {"m-small": counters(100, 2.0), "m-large": counters(100, 200.0)}
    fleet.ingest("a1", TelemetrySnapshot(True, True, variants=both, sent_ms=1000), 0.0)
    more = {"m-small": counters(200, 2.0), "m-large": counters(101, 200.0)}
    fleet.ingest("a1", TelemetrySnapshot(True, True, variants=more, sent_ms=2000), 1.0)
    mix = routes.mix_ms(fleet.backends["a1"])  # 400 ms busy over 101 calls: 3.96 ms
    monkeypatch.setattr(routes, "MIX_WAIT", True)
    small, large = row(builder, "a1/m-small"), row(builder, "a1/m-large")
    assert small.mix_compute_ms == pytest.approx(mix, rel=0.02)  # two digits: 4.0
    assert large.mix_compute_ms == 0.0 and large.ahead_ms == large.compute_ms  # mix shorter
    # the table's own estimates are the variant's, as before
    assert small.compute_ms == pytest.approx(2.0) and large.compute_ms == pytest.approx(200.0)
    assert row(builder, "a2/m-small").mix_compute_ms == 0.0  # nothing served: not known
    monkeypatch.setattr(routes, "MIX_AT_LEAST_OWN", False)  # cost_check's mix-wait-mean
    assert row(builder, "a1/m-large").mix_compute_ms == pytest.approx(mix, rel=0.02)
    monkeypatch.setattr(routes, "MIX_WAIT", False)  # the brain before
    assert row(builder, "a1/m-small").mix_compute_ms == 0.0


def test_a_one_variant_backend_s_rows_do_not_follow_its_mix(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "MIX_WAIT", True)
    fleet, builder = setup()
    for t, n in ((0.0, 100), (1.0, 150), (2.0, 260)):
        fleet.ingest("a1", TelemetrySnapshot(True, True, sent_ms=int(1000 * (t + 1)),
                                             variants={"m-small": counters(n, 10.0)}), t)
    assert routes.mix_ms(fleet.backends["a1"]) == pytest.approx(10.0, rel=0.05)
    assert row(builder, "a1/m-small").mix_compute_ms == 0.0  # its own: nothing to push
