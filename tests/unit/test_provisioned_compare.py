"""benchmarks.provisioned_compare: diag logs into one side-by-side subsection."""

from __future__ import annotations

from benchmarks.provisioned_compare import parse, section

BEFORE = """[ 900.0s] diag: tight: switchyard planner: 98.00%, $207 (800 s)
| tight | switchyard planner | 98.00% | 207 | 69 | 275 | 1.67% | 0.03% | 0.04% | 0.00% | 0.26% |
"""
AFTER = """[ 700.0s] diag: tight: switchyard planner: 99.50%, $180 (400 s)
[ 700.0s] diag: tight: switchyard planner: 96 solves, 300 s solving, 30 adopted, 2 refused
  refused 10.00 h: infeasible (max_gpus): ...
| tight | switchyard planner | 99.50% | 180 | 50 | 281 | 0.20% | 0.00% | 0.07% | 0.00% | 0.06% |
"""


def test_rows_and_deltas_come_from_the_logs() -> None:
    runs = parse("before", BEFORE) + parse("after", AFTER)
    assert [(r.label, r.attainment, r.usd, r.day_s) for r in runs] == [
        ("before", 98.0, 207.0, 800.0), ("after", 99.5, 180.0, 400.0)]
    assert runs[0].solves == "–" and runs[1].solves == "96" and runs[1].refused == "2"
    assert runs[1].causes == ["0.20%", "0.00%", "0.07%", "0.00%", "0.06%"]
    text = section("T", "cmd", runs)
    assert "| tight | after | 99.50% | 180 | 0.20% |" in text
    assert "- tight: after − before: +1.50 pt, ×0.87 the bill, ×0.50 the simulated day's" in text
