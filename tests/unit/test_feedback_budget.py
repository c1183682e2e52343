"""placement.feedback's miss budget: the fraction the margins track follows the edge's own
miss rate, with confidence bounds so a handful of calls cannot loosen it."""

from __future__ import annotations

import pytest

from placement.feedback import BUDGET_RANGE, SloFeedback, budgeted_tail, miss_bounds

TAU = 0.005


def test_bounds_bracket_the_rate_and_narrow_with_calls() -> None:
    lo, hi = miss_bounds(5, 1000)
    assert lo < 0.005 < hi
    lo2, hi2 = miss_bounds(50, 10000)
    assert lo < lo2 < 0.005 < hi2 < hi
    assert miss_bounds(0, 0) == (0.0, 1.0)


def test_a_handful_of_clean_calls_does_not_loosen_the_target() -> None:
    assert budgeted_tail(TAU, 0, 100) == TAU  # upper bound 4 % is not below 0.5 %
    assert budgeted_tail(TAU, 0, 700) == TAU


def test_many_clean_calls_loosen_it_within_range_and_many_misses_tighten_it() -> None:
    loose = budgeted_tail(TAU, 2, 4000)
    assert TAU < loose <= TAU * BUDGET_RANGE[1]
    assert budgeted_tail(TAU, 0, 1e6) == pytest.approx(TAU * BUDGET_RANGE[1])
    tight = budgeted_tail(TAU, 60, 4000)  # 1.5 % missed, well above the target
    assert TAU * BUDGET_RANGE[0] <= tight < TAU
    assert budgeted_tail(TAU, 20, 4000) == TAU  # 0.5 %: within the bounds either way


def test_with_budget_met_calls_undo_a_miss_faster_when_the_edge_misses_little() -> None:
    def after(budget: bool) -> float:
        fb = SloFeedback(tail=TAU, step=0.1, budget=budget)
        for _ in range(4000):  # another deployment, every call met
            fb.record("b2/v", 1000.0, met=True, now=0.0)
        fb.record("b1/v", 100.0, met=False, now=0.0)
        for _ in range(50):
            fb.record("b1/v", 100.0, met=True, now=0.0)
        return fb.margins(100.0, 0.0).get("b1/v", 0.0)

    plain, budgeted = after(False), after(True)
    assert plain == pytest.approx(10.0 - 50 * 10.0 * TAU / (1 - TAU))
    assert budgeted < plain
    assert SloFeedback(budget=True).tracked() == TAU  # nothing seen: the target


def test_with_budget_an_edge_that_misses_often_keeps_its_margins_longer() -> None:
    fb = SloFeedback(tail=TAU, step=0.1, budget=True)
    for i in range(4000):
        fb.record("b2/v", 100.0, met=i % 40 != 0, now=0.0)  # 2.5 % missed
    assert fb.tracked() < TAU
