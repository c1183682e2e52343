"""The Envoy targets of issue 12 in the data-plane benchmark (``benchmarks/dataplane.py``):
Switchyard-on-Envoy (``envoy-sy``) against plain Envoy, nginx and the Python edge.

Every ratio is taken **within one round** (the targets of a round run back to back at each
concurrency, so the host's state in that minute weighs on both sides alike), and a table cell
or a verdict is the median of that ratio over the rounds, with its min–max. The main table's
rows are each target's median-rps round on its own: a ratio of two such rows may pair points
from different rounds. On a 2-core host shared with other work that was the larger error: in
one run (2026-11-27, three rounds) the median-round rows gave `envoy-sy` 1.73× plain Envoy's
CPU at c=1 and +0.97 ms p50, while its three rounds, each paired, gave 1.73, 1.23 and 1.16×
and +0.97, −0.11 and +0.13 ms.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from benchmarks._load import Point
from benchmarks.common import md_table

TARGET_ENVOY_CPU_RATIO = 1.25  # envoy-sy / plain envoy, CPU per call
TARGET_ENVOY_ADDED_P50_MS = 0.1  # envoy-sy's added p50 at c=1 over plain envoy's
TARGET_NGINX_RPS = 0.9  # envoy-sy / nginx rps at every concurrency >= 8
TARGET_EDGE_RPS = 2.0  # envoy-sy / the Python edge's rps

Round = dict[tuple[str, int], Point]
Metric = Callable[[Round, int], float | None]


def rounds_of(runs: dict[tuple[str, int], list[Point]]) -> list[Round]:
    """Per round, every (target, concurrency) point of it (``runs``' lists in round order)."""
    n = max((len(ps) for ps in runs.values()), default=0)
    return [{k: ps[r] for k, ps in runs.items() if r < len(ps)} for r in range(n)]


def _ratio(a: str, b: str, field: str) -> Metric:
    def get(r: Round, c: int) -> float | None:
        x, y = r.get((a, c)), r.get((b, c))
        if x is None or y is None or not getattr(y, field):
            return None
        return float(getattr(x, field)) / float(getattr(y, field))
    return get


def _p50_over_envoy(r: Round, c: int) -> float | None:
    s, e = r.get(("envoy-sy", c)), r.get(("envoy", c))
    return None if s is None or e is None else s.p50_ms - e.p50_ms


CPU = _ratio("envoy-sy", "envoy", "proxy_cpu_us")
NGINX_RPS = _ratio("envoy-sy", "nginx", "rps")
EDGE_RPS = _ratio("envoy-sy", "edge", "rps")
EDGE_CPU = _ratio("envoy-sy", "edge", "proxy_cpu_us")
LUA_CPU = _ratio("envoy-sy", "envoy-sy-lua", "proxy_cpu_us")


def paired(rounds: Sequence[Round], metric: Metric, conc: int) -> list[float]:
    """``metric`` of each round that has both of its targets at ``conc``."""
    return [v for r in rounds if (v := metric(r, conc)) is not None]


def _cell(values: list[float], fmt: str) -> str:
    if not values:
        return "–"
    med = fmt.format(statistics.median(values))
    if len(values) == 1:
        return med
    return f"{med} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def _concs(rounds: Sequence[Round]) -> list[int]:
    return sorted({c for r in rounds for (t, c) in r if t == "envoy-sy"})


def envoy_table(rounds: Sequence[Round]) -> str:
    """Switchyard-on-Envoy against plain Envoy, nginx and the Python edge, each ratio paired
    within its round: median (min–max) over the rounds."""
    rows = [[c, _cell(paired(rounds, CPU, c), "{:.2f}"),
             _cell(paired(rounds, _p50_over_envoy, c), "{:+.2f}"),
             _cell(paired(rounds, NGINX_RPS, c), "{:.2f}"),
             _cell(paired(rounds, EDGE_RPS, c), "{:.2f}"),
             _cell(paired(rounds, EDGE_CPU, c), "{:.2f}"),
             _cell(paired(rounds, LUA_CPU, c), "{:.2f}")] for c in _concs(rounds)]
    return md_table(["conc", "envoy-sy/envoy CPU", "envoy-sy p50 over envoy ms",
                     "envoy-sy/nginx rps", "envoy-sy/edge rps", "envoy-sy/edge CPU",
                     "envoy-sy/envoy-sy-lua CPU"], rows, "rrrrrrr")


def _listed(rounds: Sequence[Round], metric: Metric, concs: Sequence[int], fmt: str
            ) -> tuple[str, dict[int, float]]:
    meds = {c: statistics.median(v) for c in concs if (v := paired(rounds, metric, c))}
    text = ", ".join(f"c={c}: " + _cell(paired(rounds, metric, c), fmt) for c in meds)
    return text, meds


def envoy_verdicts(rounds: Sequence[Round]) -> list[str]:
    """The Envoy targets of issue 12, each from its ratios paired within a round (median)."""
    concs = _concs(rounds)
    cpu_text, cpu = _listed(rounds, CPU, concs, "{:.2f}×")
    if not cpu:
        return []
    n = len(rounds)
    per = f" (median of {n} rounds, each ratio within its round)" if n > 1 else ""
    out = [f"**Target Switchyard-on-Envoy CPU ≤ {TARGET_ENVOY_CPU_RATIO}× plain Envoy's**{per}: "
           + cpu_text + " → "
           + ("met" if max(cpu.values()) <= TARGET_ENVOY_CPU_RATIO else "MISSED")]
    p50 = paired(rounds, _p50_over_envoy, 1)
    if p50:
        over = statistics.median(p50)
        out.append(f"**Target added p50 at c=1 within {TARGET_ENVOY_ADDED_P50_MS} ms of plain "
                   f"Envoy's**: envoy-sy's p50 over plain Envoy's {_cell(p50, '{:+.2f}')} ms → "
                   + ("met" if over <= TARGET_ENVOY_ADDED_P50_MS else "MISSED"))
    rps_text, rps = _listed(rounds, NGINX_RPS, [c for c in concs if c >= 8], "{:.2f}×")
    if rps:
        out.append(f"**Target Switchyard-on-Envoy throughput ≥ {TARGET_NGINX_RPS}× nginx at "
                   f"c ≥ 8**: {rps_text} → "
                   + ("met" if min(rps.values()) >= TARGET_NGINX_RPS else "MISSED"))
    edge_text, edge = _listed(rounds, EDGE_RPS, concs, "{:.2f}×")
    if edge:
        out.append(f"**Target Switchyard-on-Envoy throughput ≥ {TARGET_EDGE_RPS:g}× the "
                   f"Python edge's**: {edge_text} → "
                   + ("met" if min(edge.values()) >= TARGET_EDGE_RPS else "MISSED"))
    lua_text, lua = _listed(rounds, LUA_CPU, concs, "{:.2f}×")
    if lua:
        out.append("`envoy-sy` (as pushed) against `envoy-sy-lua` (pushed with the Lua), CPU "
                   f"per call, paired within each round: {lua_text}")
    return out
