"""The token diagnosis (benchmarks/tokens_diag.py): its rows add up from the run, and its
prose is computed from the rows."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.costsim.tokens_bound import lower_bound
from benchmarks.costsim.tokensim import TokenSim
from benchmarks.tokens_diag import Verdicts, class_rows, gap_lines, miss_lines
from tests.unit.test_tokens_sim import Fixed, scenario, streams

L4 = 0


def test_class_rows_count_misses_and_best_efforts_from_the_run() -> None:
    s = scenario(ttft_ms=250.0, tpot_ms=100.0)  # the L4's 100-token prefill takes 110 ms
    st = streams([(0.0, 100, 11, -1, 0), (1.0, 100, 11, -1, 0), (2.0, 100, 11, -1, 0)])
    out = TokenSim(s, st).run(Fixed(L4))  # one prefill at a time: TTFT 111, 220, 329 ms
    bound = lower_bound(s, st, TokenSim(s, st).rtt)
    verdicts = Verdicts(np.array([0, 0, 1]))
    (row,) = class_rows(s, st, out, verdicts, bound, "p")
    assert row[:4] == ["p", "c", "3", "66.67%"]
    assert row[8:] == ["1", "0", "1", "0", "1"]  # TTFT, TPOT, best effort, feasible, efforts
    assert float(str(row[4])) == pytest.approx(float(out.cost_usd.sum()) / 33 * 1e6, rel=1e-3)
    (baseline,) = class_rows(s, st, out, Verdicts(np.full(3, -1)), bound, "b")
    assert baseline[10:] == ["–", "–", "–"]


def test_the_gap_to_the_bound_splits_into_batch_fill_and_pool_choice() -> None:
    rows = [["p", "voice", "10", "99.00%", "3.000", "1.000", "60%", "0.500", "1", "0", "0",
             "1", "2"],
            ["q", "voice", "10", "99.00%", "9.000", "1.000", "60%", "0.500", "0", "0", "–",
             "–", "–"]]
    (line,) = gap_lines("s", rows, "p")
    assert "close 80% of the gap to the bound, the choice of pool the other 20%" in line
    (misses,) = miss_lines("s", rows, "p")
    assert misses == ("s, p: 1 streams missed an objective, 1 of them their TTFT; 1 of the 1 "
                      "(100%) were chosen as predicted to meet both, 0 as a best effort "
                      "(nothing predicted to).")
    assert miss_lines("s", rows, "q") == []
