"""benchmarks.provisioned names the cost targets the offline optimum's own day misses (issue
13: a target no planner of these limits can meet on a scenario is said so, from the rows)."""

from __future__ import annotations

from benchmarks.costsim.provisioned import DayResult
from benchmarks.provisioned import ScenarioRun, out_of_reach


def _run(name: str, static: float, hpa: float, opt: float) -> ScenarioRun:
    def day(fleet: str, usd: float) -> DayResult:
        return DayResult(fleet, 100.0, 100.0, 0.0, 0.0, usd, 1.0, 0)

    return ScenarioRun(name, 3, [day("static peak", static),
                                 day("reactive autoscaler (HPA)", hpa),
                                 day("offline optimum", opt)], [], 0.0, 0, [], 0, opt)


def test_out_of_reach_is_computed_from_the_optimums_bill() -> None:
    runs = [_run("cheap", 100, 80, 50), _run("flat", 100, 90, 95), _run("edge", 100, 70, 60)]
    (line,) = out_of_reach(runs)
    # flat's optimum is 0.95x the static peak, edge's 0.60x is within the 0.60 target
    assert "static peak on 1 of 3 scenarios (its bill over the static peak's: flat ×0.95)" in line
    # flat's optimum (95) is above its HPA (90); cheap's and edge's are below theirs
    assert "cheaper than the HPA on 1 of 3 (flat $95 vs $90)." in line
