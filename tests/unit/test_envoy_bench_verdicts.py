"""The prose under the Envoy tables is computed from their rows (benchmarks/dataplane.py,
benchmarks/envoy_filters.py): met and missed both come out of the numbers."""

from __future__ import annotations

import pytest

from benchmarks._load import Point
from benchmarks.dataplane_envoy import Round, envoy_table, envoy_verdicts
from benchmarks.envoy_filters import ratio_rows, verdicts


def _p(target: str, conc: int, cpu: float, p50: float = 1.0, rps: float = 1000.0) -> Point:
    return Point(target, conc, 1000, 0, 1.0, rps, p50, 2 * p50, cpu, 50.0)


def _dataplane(sy_cpu: float, sy_p50: float) -> list[Point]:
    return [_p("direct", 1, float("nan"), 0.5), _p("nginx", 1, 50, 0.6),
            _p("edge", 1, 400, 1.5, 400), _p("envoy", 1, 100, 0.8),
            _p("envoy-sy", 1, sy_cpu, sy_p50, 900),
            _p("direct", 8, float("nan")), _p("nginx", 8, 50, rps=1000),
            _p("edge", 8, 400, rps=400), _p("envoy", 8, 100), _p("envoy-sy", 8, sy_cpu, rps=950)]


def _one(points: list[Point]) -> list[Round]:
    return [{(p.target, p.concurrency): p for p in points}]


def test_the_envoy_targets_are_met_when_the_rows_meet_them() -> None:
    lines = envoy_verdicts(_one(_dataplane(sy_cpu=120, sy_p50=0.85)))
    assert lines[0].endswith("c=1: 1.20×, c=8: 1.20× → met")
    assert "p50 over plain Envoy's +0.05 ms → met" in lines[1]
    assert lines[2].endswith("c=8: 0.95× → met")
    assert lines[3].endswith("c=1: 2.25×, c=8: 2.38× → met")


def test_the_envoy_targets_are_missed_when_the_rows_miss_them() -> None:
    lines = envoy_verdicts(_one(_dataplane(sy_cpu=200, sy_p50=1.5)))
    assert lines[0].endswith("c=1: 2.00×, c=8: 2.00× → MISSED")
    assert "+0.70 ms → MISSED" in lines[1]


def test_no_envoy_rows_no_envoy_prose() -> None:
    assert envoy_verdicts(_one([_p("direct", 1, float("nan")), _p("edge", 1, 400)])) == []


def test_the_envoy_ratios_are_paired_within_each_round() -> None:
    """A slow round slows plain Envoy and envoy-sy alike: its ratio is that round's, and the
    verdict is the median of the rounds' ratios, not the ratio of two targets' median-rps
    rounds (which may be different rounds)."""
    def rnd(envoy_cpu: float, sy_cpu: float, envoy_p50: float, sy_p50: float) -> Round:
        return {(p.target, p.concurrency): p for p in (
            _p("envoy", 1, envoy_cpu, envoy_p50), _p("envoy-sy", 1, sy_cpu, sy_p50))}

    rounds = [rnd(460, 794, 1.75, 2.72), rnd(430, 530, 1.53, 1.42), rnd(868, 1008, 3.30, 3.43)]
    lines = envoy_verdicts(rounds)
    assert lines[0] == ("**Target Switchyard-on-Envoy CPU ≤ 1.25× plain Envoy's** (median of 3 "
                        "rounds, each ratio within its round): c=1: 1.23× (1.16×–1.73×) → met")
    assert lines[1].endswith("+0.13 (-0.11–+0.97) ms → MISSED")
    table = envoy_table(rounds)
    assert "| 1 | 1.23 (1.16–1.73) | +0.13 (-0.11–+0.97) | – | – | – | – |" in table
    # one slow round more: the median moves past the target
    lines = envoy_verdicts([*rounds, rnd(400, 560, 1.0, 1.0), rnd(400, 600, 1.0, 1.0)])
    assert lines[0].endswith("c=1: 1.40× (1.16×–1.73×) → MISSED")


def _round(sy: float, pieces: dict[str, float]) -> dict[tuple[str, int], Point]:
    r = {("plain", 8): _p("plain", 8, 100), ("sy", 8): _p("sy", 8, sy)}
    r.update({(n, 8): _p(n, 8, cpu) for n, cpu in pieces.items()})
    return r


def test_piece_ratios_are_taken_against_plain_in_the_same_round() -> None:
    rounds = [_round(200, {"lua-peek": 130}), _round(400, {"lua-peek": 300})]
    for r in rounds[1:]:
        r[("plain", 8)] = _p("plain", 8, 200)  # a slower round: plain doubled too
    rows = {row[0]: row for row in ratio_rows(rounds, ["plain", "lua-peek", "sy"], (8,))}
    assert rows["lua-peek"][2] == "1.40 (1.30–1.50)"
    assert rows["sy"][2] == "2.00 (2.00–2.00)"


def test_the_piece_prose_ranks_pieces_and_compares_their_sum_with_the_whole() -> None:
    lines = verdicts([_round(210, {"lua-peek": 140, "up-lua": 120, "als": 105})], (8,))
    assert lines[0] == ("`sy` costs 2.10× (c=8) plain Envoy's CPU per call: the ≤ 1.25× "
                        "target is MISSED.")
    assert lines[1] == ("c=8: pieces over plain, largest first: lua-peek +0.40, up-lua +0.20, "
                        "als +0.05; their sum +0.65 against `sy`'s +1.10.")


def test_alternatives_are_paired_with_what_they_replace_in_the_same_round() -> None:
    from benchmarks.envoy_filters import pair_rows

    a = _round(200, {"sy-first": 180})
    b = _round(400, {"sy-first": 440})
    rows = {r[0]: r for r in pair_rows([a, b], (8,))}
    assert rows["sy-first / sy"] == ["sy-first / sy", "1.00 (0.90–1.10)", "1/2"]
    assert "sy-gfe / sy" not in rows  # not measured, no row


def test_the_before_table_compares_the_edge_with_its_older_self() -> None:
    from benchmarks._load import Point
    from benchmarks.dataplane import before_table

    def point(target: str, conc: int, cpu: float, rps: float) -> Point:
        return Point(target=target, concurrency=conc, calls=1000, errors=0, seconds=1.0, rps=rps,
                     p50_ms=1.0, p99_ms=2.0, proxy_cpu_us=cpu, backend_cpu_us=300.0)

    table, lines = before_table([point("edge", 1, 600.0, 900.0),
                                 point("edge-before", 1, 400.0, 1000.0),
                                 point("edge", 8, 500.0, 2000.0)])  # no before at c=8
    assert "| 1 | 400 | 600 | 1.50 |" in table
    assert lines == ["c=1: the edge uses 1.50× the CPU per call of the edge before (600 "
                     "against 400 µs), 0.90× its rps"]


def test_take_option_removes_what_it_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.common import take_option

    monkeypatch.setattr("sys.argv", ["x", "--quick", "--before", "old-export", "--rounds", "3"])
    assert take_option("--before") == "old-export"
    assert take_option("--only", "all") == "all"
    assert take_option("--rounds") == "3"
    import sys
    assert sys.argv == ["x", "--quick"]


def test_rounds_of_gives_each_round_its_own_points() -> None:
    from benchmarks.dataplane_envoy import rounds_of

    a0, a1 = _p("envoy", 1, 100), _p("envoy", 1, 200)
    b0, b1 = _p("envoy-sy", 1, 150), _p("envoy-sy", 1, 260)
    got = rounds_of({("envoy", 1): [a0, a1], ("envoy-sy", 1): [b0, b1]})
    assert got == [{("envoy", 1): a0, ("envoy-sy", 1): b0},
                   {("envoy", 1): a1, ("envoy-sy", 1): b1}]
