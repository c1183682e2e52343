"""The failover benchmark says only what its rows show: runs nothing noticed are counted
apart (never a 0 ms reroute in the median), and each sentence follows the numbers."""

from __future__ import annotations

import math

from benchmarks.failover import findings, reroute_times_ms, row, summary_row
from services.drills.report import DrillReport, PhaseStats, Reroute


def _report(seconds: float | None, noticed: int, *, failed: int = 0, deadline_s: float = 2.0,
            p50_during: float | None = 35.0) -> DrillReport:
    phases = [PhaseStats("before", 4.0, 240, 0, {}, 0, 0, 34.0, 40.0, None, {}),
              PhaseStats("during", 4.0, 240, failed, {}, 0, 0, p50_during, 70.0, None, {}),
              PhaseStats("after", 4.0, 240, 0, {}, 0, 0, 34.0, 40.0, None, {})]
    return DrillReport("kill-backend", "backend usw2-l4", ["usw2-l4"], 60.0, deadline_s, None,
                       4.0, 8.0, phases, Reroute(seconds, noticed, 0, 300.0),
                       checks={"tritonserver of usw2-l4 died": True})


def test_unnoticed_run_is_not_a_zero_ms_reroute() -> None:
    reports = [_report(0.110, 2), _report(None, 0), _report(0.091, 1)]
    assert reroute_times_ms(reports) == [110.0, 91.0]
    assert row("#2", reports[1])[7] == "not noticed"
    summary = summary_row(reports)
    assert summary[7] == 100.5  # median of 110 and 91; the unnoticed run is left out


def test_run_that_never_settled_says_so() -> None:
    assert row("#1", _report(None, 5))[7] == "never settled"


def test_findings_count_unnoticed_runs_apart() -> None:
    text = " ".join(findings([_report(0.110, 2), _report(None, 0), _report(0.091, 1)], None))
    assert "2 of 3 rerouted, 1 not noticed" in text
    assert "median 100 ms over the 2 runs that rerouted" in text
    assert "(met)" in text


def test_findings_follow_the_numbers_when_the_target_is_missed() -> None:
    text = " ".join(findings([_report(1.5, 3, failed=2), _report(1.2, 2)], None))
    assert "2 of 1440 failed (MISSED)" in text
    assert "median 1350 ms" in text and "(MISSED)" in text
    assert "well under" not in text


def test_no_rerouted_run_reports_nothing_measured() -> None:
    text = " ".join(findings([_report(None, 0), _report(None, 0)], None))
    assert "NOT MEASURED" in text
    assert "0 of 2 rerouted, 2 not noticed" in text


def test_tight_deadline_sentence_follows_its_row() -> None:
    base = [_report(0.1, 1)]
    unnoticed = findings(base, _report(None, 0, deadline_s=0.2))[-1]
    assert "no call noticed the kill" in unnoticed
    assert "retried within the deadline" not in unnoticed
    lost = findings(base, _report(0.15, 3, failed=2, deadline_s=0.2))[-1]
    assert "did not fit the deadline for 2 of the 3 calls" in lost
    fine = findings(base, _report(0.05, 2, deadline_s=0.2))[-1]
    assert "the 2 calls that met the kill were retried within the deadline" in fine


def test_phase_without_answers_does_not_enter_the_median_as_zero() -> None:
    summary = summary_row([_report(0.1, 1, p50_during=None), _report(0.1, 1, p50_during=40.0)])
    assert summary[9] == 40.0
    assert math.isnan(summary_row([_report(0.1, 1, p50_during=None)])[9])
