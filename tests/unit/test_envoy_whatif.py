"""benchmarks.envoy_whatif's table: points and cost ratios computed from the runs' lines."""

from __future__ import annotations

from benchmarks.envoy_whatif import table

LINES = [
    "s 7 switchyard: att 99.00% cost 10.00 failed 1 missed 10 first2s 0 first10s 1 wall 1s {}",
    "s 7 base: att 97.50% cost 11.00 failed 2 missed 25 first2s 9 first10s 12 wall 1s {}",
    "s 7 spread: att 98.50% cost 10.40 failed 2 missed 15 first2s 1 first10s 3 wall 1s {}",
    "not a run line",
]


def test_rows_against_switchyard_and_base() -> None:
    out = table(LINES).splitlines()
    assert out[-1] == "Runs meeting the target: 1 of 2."
    out = out[:-2]
    assert len(out) == 4  # header, separator, base, spread: switchyard is the reference
    assert out[2] == "| s | 7 | base | 97.50% | -1.50 | 11.00 | 1.100 | no |  | 25 | 9 | 12 |"
    assert out[3] == "| s | 7 | spread | 98.50% | -0.50 | 10.40 | 1.040 | yes | +1.00 | 15 | 1 | 3 |"


def test_a_run_over_the_cost_target_misses_it() -> None:
    lines = [LINES[0], "s 7 x: att 99.50% cost 10.60 failed 0 missed 5 first2s 0 first10s 0"]
    (row, _, summary) = table(lines).splitlines()[2:]
    assert summary == "Runs meeting the target: 0 of 1."
    assert "| +0.50 | 10.60 | 1.060 | no |" in row
