"""benchmarks.envoy_timing: the phases of a call read from Envoy's own time points (issue 12)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.envoy_timing import FORMAT, PHASES, phases


def test_each_phase_is_the_median_of_the_calls_that_reached_it(tmp_path: Path) -> None:
    log = tmp_path / "x.timing"
    # plain Envoy sends the headers upstream before the body is in: DS_RX_END -> US_TX_BEG
    # is no phase here, but a time point Envoy never reached (a local reply) is '-'
    log.write_text("100 90 5 700 60 960\n"
                   "120 95 7 720 70 1000\n"
                   "- 80 - - - 300\n"
                   "garbage line\n"
                   "140 99 9 740 80 1040\n")
    n, meds = phases(log)
    assert n == 4  # the garbage line is not a call
    assert meds == [120, 92.5, 7, 720, 70, 980]


def test_the_log_format_asks_envoy_for_every_phase_in_microseconds() -> None:
    assert FORMAT.count("%COMMON_DURATION(") == len(PHASES)
    assert all(f"%COMMON_DURATION({a}:{b}:us)%" in FORMAT for a, b in PHASES)
    assert FORMAT.endswith("\n")


def test_a_phase_no_call_reached_is_none(tmp_path: Path) -> None:
    log = tmp_path / "y.timing"
    log.write_text("- 1 2 3 4 5\n")
    assert phases(log) == (1, [None, 1, 2, 3, 4, 5])
