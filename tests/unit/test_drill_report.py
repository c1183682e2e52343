"""Drill reports judge honestly: a fault nobody noticed has no reroute time, calls in flight
at the fault count in its window, and a drill with nothing checked or an unobserved fault
fails, saying why."""

from __future__ import annotations

import pytest

from services.drills.load import Call
from services.drills.report import (
    ROUTE_SLACK_S,
    DrillReport,
    PhaseStats,
    Reroute,
    client_notes,
    learned_check,
    load_checks,
    split_phases,
    time_to_reroute,
)

FAULT, END = 10.0, 20.0


def _calls(start: float, stop: float, every: float = 0.05, latency: float = 0.03,
           backend: str = "b2") -> list[Call]:
    out, t = [], start
    while t < stop:
        out.append(Call(len(out), t, t + latency, served_by=f"{backend}/v", attempts=1))
        t += every
    return out


def _report(reroute: Reroute, checks: dict[str, bool], *, expect_noticed: bool = True,
            failed: int = 0) -> DrillReport:
    phases = [PhaseStats(p, 2.0, 60, failed if p == "during" else 0, {}, 0, 0, 30.0, 40.0,
                         None, {}) for p in ("before", "during", "after")]
    return DrillReport("kill-backend", "backend b1", ["b1"], 30.0, 2.0, None, FAULT, END,
                       phases, reroute, checks=checks, expect_noticed=expect_noticed)


def test_nothing_noticed_has_no_reroute_time_not_zero() -> None:
    calls = _calls(FAULT, END)  # every call clean, served by a healthy backend
    r = time_to_reroute(calls, FAULT, END, {"b1"}, slow_ms=500)
    assert r.noticed == 0
    assert r.seconds is None
    assert r.outcome == "not noticed"


def test_call_in_flight_at_the_fault_is_in_the_fault_window() -> None:
    # Sent before the kill, cut off by it, retried elsewhere: the first call to notice.
    cut = Call(0, FAULT - 0.02, FAULT + 0.08, served_by="b2/v", attempts=2)
    calls = [cut, *_calls(FAULT + 0.01, END)]
    r = time_to_reroute(calls, FAULT, END, {"b1"}, slow_ms=500)
    assert r.noticed == 1
    assert r.seconds == 0.08
    assert r.outcome == "rerouted"


def test_call_in_flight_at_the_fault_belongs_to_the_during_phase() -> None:
    done_before = Call(0, 9.0, 9.05)
    in_flight = Call(1, 9.98, 10.2, status="UNAVAILABLE")
    sent_during = Call(2, 10.5, 10.55)
    sent_after = Call(3, 20.5, 20.55)
    phases = split_phases([done_before, in_flight, sent_during, sent_after],
                          (8.0, FAULT, END, 22.0))
    assert phases["before"] == [done_before]
    assert phases["during"] == [in_flight, sent_during]
    assert phases["after"] == [sent_after]


def test_call_scheduled_before_the_restore_that_left_after_it_belongs_to_after() -> None:
    """A CI run's drain drill counted such a call (the restored backend served it) as the
    drained backend serving during the drain."""
    left_before = Call(0, END - 0.05, END + 0.02, served_by="b1/v", started=END - 0.04)
    left_after = Call(1, END - 0.01, END + 0.08, served_by="b1/v", started=END + 0.01)
    phases = split_phases([left_before, left_after], (8.0, FAULT, END, 22.0))
    assert phases["during"] == [left_before]
    assert phases["after"] == [left_after]
    r = time_to_reroute([left_before, left_after], FAULT, END, {"b1"}, slow_ms=500)
    assert r.noticed + r.relapses == 1


def test_drill_with_nothing_checked_fails_saying_so() -> None:
    rep = _report(Reroute(0.1, 3, 0, 500.0), checks={})
    assert not rep.passed
    assert rep.problems == ["nothing was checked"]
    assert "FAILED: nothing was checked" in rep.table()


def test_unobserved_fault_fails_the_drill() -> None:
    rep = _report(Reroute(None, 0, 0, 500.0), checks={"tritonserver of b1 died": True})
    assert not rep.passed
    assert rep.problems == ["the fault was never observed: no call noticed it"]
    assert "time to reroute: none (no call noticed the fault)" in rep.table()


def test_fault_no_call_should_notice_passes_on_its_checks() -> None:
    rep = _report(Reroute(None, 0, 0, 500.0), checks={"placement reports b1 drained": True},
                  expect_noticed=False)
    assert rep.passed, rep.problems
    assert "verdict: PASSED" in rep.table()
    assert rep.to_dict()["passed"] is True


def test_failed_check_failed_call_and_unsettled_load_each_fail() -> None:
    rep = _report(Reroute(None, 4, 0, 500.0), checks={"e1 kept its tables": False}, failed=2)
    assert rep.problems == ["2 of 180 calls failed", "check failed: e1 kept its tables",
                            "the load never settled away from the fault"]


def test_load_checks_fail_a_phase_the_load_did_not_measure_or_a_call_unaccounted() -> None:
    phases = [PhaseStats.of("before", 2.0, _calls(0, 2.0, every=1 / 30), rate=30.0),
              PhaseStats.of("during", 2.0, _calls(2.0, 2.2, every=1 / 30), rate=30.0)]
    checks = load_checks(phases, issued=66, answered=66)
    assert list(checks.values()) == [True, True, False]  # during: 6 calls, < 10
    assert list(load_checks(phases[:1], issued=66, answered=65).values()) == [False, True]


def test_the_clients_shortfall_is_reported_as_the_clients_not_counted_against_the_mesh(
        ) -> None:
    """A host too busy to run the load client: it sent 20 of the 60 calls planned for the
    phase, each started 0.3 s after its schedule, and the mesh answered each in 30 ms. The
    load measured the phase, nothing failed or was slow, and a note names the client's
    shortfall. Before, the phase failed 'load ran (at least 80 % of the planned calls
    sent)', and the calls' latency ran from their schedule (330 ms: slow, 'noticed')."""
    calls = [Call(i, FAULT + 0.1 * i, FAULT + 0.1 * i + 0.33, served_by="b2/v", attempts=1,
                  started=FAULT + 0.1 * i + 0.3) for i in range(20)]
    during = PhaseStats.of("during", 2.0, calls, rate=30.0)
    assert (during.sent, during.planned, during.failed, during.late) == (20, 60, 0, 20)
    assert during.p99_ms == pytest.approx(30.0)
    assert all(load_checks([during], issued=20, answered=20).values())
    (note,) = client_notes([during])
    assert "sent 20 of 60 planned" in note and "not calls the mesh lost" in note
    assert time_to_reroute(calls, FAULT, END, {"b1"}, slow_ms=200).noticed == 0
    slow = Call(99, FAULT + 2.5, FAULT + 2.9, served_by="b2/v", attempts=1,
                started=FAULT + 2.6)  # the mesh took 300 ms: that is the mesh's
    assert time_to_reroute([*calls, slow], FAULT, END, {"b1"}, slow_ms=200).noticed == 1


def test_a_drain_allows_calls_routed_before_the_edges_learned_of_it_and_none_after() -> None:
    """A drain that took a busy mesh 1.2 s to reach every edge: the calls sent before that
    (served by the drained b1, long after the first, which the burst rule would count as a
    relapse) pass; one sent after it (plus the routing slack) fails the check."""
    learned = FAULT + 1.2
    before = [Call(0, FAULT + 0.1, FAULT + 0.15, served_by="b1/v", attempts=1),
              Call(1, FAULT + 1.15, FAULT + 1.2, served_by="b1/v", attempts=1)]
    rest = _calls(FAULT + 1.3, END, backend="b2")
    (name, ok), = learned_check([*before, *rest], learned, END, {"b1"}).items()
    assert ok and "b1" in name
    late = Call(99, learned + ROUTE_SLACK_S + 0.01, learned + ROUTE_SLACK_S + 0.05,
                served_by="b1/v", attempts=1)
    assert learned_check([*before, *rest, late], learned, END, {"b1"}) == {name: False}
    after_restore = Call(98, END + 0.1, END + 0.15, served_by="b1/v", attempts=1)
    assert learned_check([*before, *rest, after_restore], learned, END, {"b1"}) == {name: True}
