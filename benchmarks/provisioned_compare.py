"""Side-by-side runs of ``benchmarks.provisioned_diag`` as one RESULTS subsection.

``python -m benchmarks.provisioned_compare --title T --command C LABEL=LOG [LABEL=LOG ...]``
reads each run's log (the diag's progress lines and its table, as printed), and prints a
markdown subsection: one row per (scenario, run) with attainment, the bill, missed calls by
cause, the simulated day's seconds and, where the log has them, the planner's solves, solve
seconds and refused re-plans; then, per scenario, each run against the first (the
"before"): attainment in points, the bill and the day's seconds as ratios. The prose is
computed from the rows. Runs are compared only when they ran at the same time on the same
host (the planner's solves are cut by HiGHS's wall-clock limit).
"""

from __future__ import annotations

import argparse
import pathlib
import re
from dataclasses import dataclass, field

from benchmarks.common import md_table

_DAY = re.compile(r"diag: (?P<sc>[^:]+): (?P<fleet>[^:]+): (?P<att>[\d.]+)%, \$(?P<usd>[\d,]+) "
                  r"\((?P<s>\d+) s\)")
_SOLVES = re.compile(r"diag: (?P<sc>[^:]+): (?P<fleet>[^:]+): (?P<n>\d+) solves, "
                     r"(?P<s>\d+) s solving, (?P<adopted>\d+) adopted, (?P<refused>\d+) refused")
_ROW = re.compile(r"^\| (?P<sc>[^|]+) \| (?P<fleet>[^|]+) \| (?P<att>[\d.]+)% \| [^|]+ \|"
                  r" [^|]+ \| [^|]+ \| (?P<causes>.*) \|$")
_WALL = re.compile(r"^(?P<s>[\d.]+) s wall$")


@dataclass
class Run:
    label: str
    scenario: str
    fleet: str
    attainment: float
    usd: float
    day_s: float
    causes: list[str] = field(default_factory=list)
    solves: str = "–"
    solve_s: str = "–"
    refused: str = "–"


def parse(label: str, text: str) -> list[Run]:
    runs: dict[tuple[str, str], Run] = {}
    for line in text.splitlines():
        if m := _DAY.search(line):
            runs[m["sc"], m["fleet"]] = Run(label, m["sc"], m["fleet"], float(m["att"]),
                                           float(m["usd"].replace(",", "")), float(m["s"]))
        elif (m := _SOLVES.search(line)) and (m["sc"], m["fleet"]) in runs:
            r = runs[m["sc"], m["fleet"]]
            r.solves, r.solve_s, r.refused = m["n"], m["s"], m["refused"]
        elif (m := _ROW.match(line.strip())) and (m["sc"], m["fleet"]) in runs:
            runs[m["sc"], m["fleet"]].causes = [c.strip() for c in m["causes"].split("|")]
    return list(runs.values())


def section(title: str, command: str, runs: list[Run]) -> str:
    causes = ["outage", "reclaim", "cold start", "under forecast", "steady"]
    rows = [[r.scenario, r.label, f"{r.attainment:.2f}%", f"{r.usd:,.0f}",
             *(r.causes or ["–"] * len(causes)), f"{r.day_s:.0f}", r.solves, r.solve_s,
             r.refused] for r in runs]
    table = md_table(["scenario", "run", "attainment", "USD/day",
                      *(f"missed: {c}" for c in causes), "day s", "solves", "solve s",
                      "refused"], rows, "ll" + "r" * (len(causes) + 6))
    notes = []
    for sc in dict.fromkeys(r.scenario for r in runs):
        mine = [r for r in runs if r.scenario == sc]
        first = mine[0]
        for r in mine[1:]:
            notes.append(f"- {sc}: {r.label} − {first.label}: "
                         f"{r.attainment - first.attainment:+.2f} pt, ×{r.usd / first.usd:.2f} "
                         f"the bill, ×{r.day_s / first.day_s:.2f} the simulated day's seconds.")
    return "\n".join([f"### {title}", "", "```", command, "```", "", table, "", *notes, ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--title", required=True)
    ap.add_argument("--command", required=True, help="the command each run was")
    ap.add_argument("logs", nargs="+", help="LABEL=PATH, the first is the 'before'")
    args = ap.parse_args()
    runs: list[Run] = []
    for item in args.logs:
        label, path = item.split("=", 1)
        runs += parse(label, pathlib.Path(path).read_text())
    runs.sort(key=lambda r: r.scenario)  # stable: per scenario, the logs' order
    print(section(args.title, args.command, runs))


if __name__ == "__main__":
    main()
