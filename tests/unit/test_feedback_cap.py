"""placement.feedback.MAX_MARGIN: a margin learned from misses grows to at most that × SLO."""

from __future__ import annotations

import pytest

from placement import feedback
from placement.feedback import SloFeedback


def _misses(fb: SloFeedback, n: int, now: float = 0.0) -> None:
    for _ in range(n):
        fb.record("b1/v", 100.0, met=False, now=now)


def test_a_row_that_keeps_missing_has_its_margin_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Twenty misses in a row at 0.3 × SLO each: without a bound the margin is 6 × SLO (it
    fails on the old code, whose tracker had none), with the bound 1 × SLO."""
    monkeypatch.setattr(feedback, "MAX_MARGIN", 1.0)
    fb = SloFeedback(step=0.3)
    _misses(fb, 20)
    assert fb.margins(100.0, 0.0)["b1/v"] == pytest.approx(100.0)


def test_the_bounded_margin_comes_back_within_the_budget_sooner(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Once calls stop going there, a bounded margin decays under a 70 % budget after one
    half-life; the unbounded one (6 × SLO) is still over it after two."""
    monkeypatch.setattr(feedback, "MAX_MARGIN", 1.0)
    fb = SloFeedback(step=0.3, half_life_s=40.0)
    _misses(fb, 20)
    assert fb.margins(100.0, 40.0)["b1/v"] == pytest.approx(50.0, rel=0.05)
    monkeypatch.setattr(feedback, "MAX_MARGIN", None)
    old = SloFeedback(step=0.3, half_life_s=40.0)
    _misses(old, 20)
    assert old.margins(100.0, 80.0)["b1/v"] > 70.0


def test_met_calls_still_bring_a_bounded_margin_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feedback, "MAX_MARGIN", 1.0)
    fb = SloFeedback(tail=0.005, step=0.3)
    _misses(fb, 10)
    for _ in range(199):
        fb.record("b1/v", 100.0, met=True, now=0.0)
    assert fb.margins(100.0, 0.0)["b1/v"] == pytest.approx(70.0)
