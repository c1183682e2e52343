"""Where a token run's $ goes by kind of stream (benchmarks/tokens_spend.py): the rows add
up from the run, windows split at the slowdowns, and the prose is computed from the rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from benchmarks.costsim.tokens_workload import Slowdown
from benchmarks.costsim.tokensim import TokenSim
from benchmarks.tokens_spend import class_lines, spend_rows, window_lines, windows
from tests.unit.test_tokens_sim import Fixed, scenario, streams

L4 = 0


def test_rows_split_the_run_by_kind_and_by_window_at_the_slowdown() -> None:
    s = dataclasses.replace(scenario(ttft_ms=250.0, tpot_ms=100.0),
                            slowdowns=(Slowdown(1.5, "aws-us-east-1.l4", 2.0),))
    st = streams([(0.0, 100, 11, -1, 0), (1000.0, 100, 11, -1, 0), (2000.0, 100, 11, -1, 0)])
    out = TokenSim(s, st).run(Fixed(L4))
    rows = spend_rows(s, st, out, np.array([0, 1, 0]), "p")
    by = {str(r[1]): r for r in rows}
    assert by["best effort"][2] == "1"
    assert by["predicted feasible, not moved"][2] == "2"
    assert by["moved mid-decode"][2] == "0"
    assert by["chosen onto aws-us-east-1.l4 after it slowed (1.5 s)"][2] == "1"
    early, late = by["arrived 0-1.5 s"], by["arrived from 1.5 s"]
    assert (early[2], late[2]) == ("2", "1")
    share = float(out.cost_usd[2]) / float(out.cost_usd.sum())
    assert float(str(late[3]).rstrip("%")) == pytest.approx(share * 100, abs=0.06)
    # a baseline (no verdicts): windows only
    assert [r[1] for r in spend_rows(s, st, out, np.full(3, -1), "b")] == [
        "arrived 0-1.5 s", "arrived from 1.5 s"]


def test_windows_start_after_the_warm_up_and_ignore_slowdowns_outside_it() -> None:
    s = dataclasses.replace(scenario(), warmup_s=30.0,
                            slowdowns=(Slowdown(10.0, "x", 2.0), Slowdown(90.0, "y", 2.0),
                                       Slowdown(150.0, "z", 3.0)))
    assert windows(s, 600.0) == [(30.0, 90.0), (90.0, 150.0), (150.0, 600.0)]


def test_prose_is_computed_from_the_rows() -> None:
    rows = [["p", "arrived 30-90 s", "10", "50.0%", "50.0%", "2.000", "0"],
            ["q", "arrived 30-90 s", "10", "50.0%", "50.0%", "4.000", "0"]]
    assert window_lines("s", rows, "p", "q") == [
        "s, p against q by arrival window ($/1M output tokens): 30-90 s $2.000 vs $4.000 "
        "(50% cheaper)."]
    classes = [["p", "voice", "", "", "3.300"], ["q", "voice", "", "", "3.000"]]
    assert class_lines("s", classes, "p", "q") == [
        "s, p against q by SLO class ($/1M output tokens): voice $3.300 vs $3.000 "
        "(10% dearer)."]
