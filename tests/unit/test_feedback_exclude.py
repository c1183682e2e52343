"""The fallback's exclusion of rows by their own recent miss rate (``feedback.EXCLUDE_RATE``,
measured and off; ``placement.meet`` reads ``CallContext.slo_excluded``)."""

from __future__ import annotations

import random

import pytest

from placement import feedback, meet
from placement.feedback import SloFeedback
from placement.model import CallContext, Hints
from tests.meet_rows import meet_row


def _served(fb: SloFeedback, dep: str, calls: int, missed: int, now: float) -> None:
    for i in range(calls):
        fb.record(dep, 70.0, i >= missed, now)


def test_off_excludes_nothing() -> None:
    assert feedback.EXCLUDE_RATE is None
    fb = SloFeedback()
    _served(fb, "t4/v", 100, 100, 0.0)
    assert not fb.excluded(70.0, 0.0)


def test_a_row_missing_above_the_rate_with_confidence_is_excluded_then_tried_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feedback, "EXCLUDE_RATE", 0.05)
    fb = SloFeedback()
    _served(fb, "t4/v", 200, 30, 0.0)  # 15 %: lower bound (30 - 2√31) / 200 = 9.4 %
    _served(fb, "l4/v", 200, 4, 0.0)  # 2 %
    _served(fb, "a10/v", 10, 2, 0.0)  # 20 %, but 10 calls: not with confidence
    out = fb.excluded(70.0, 0.0)
    assert "t4/v" in out
    assert "l4/v" not in out and "a10/v" not in out and "h100/v" not in out
    assert not fb.excluded(300.0, 0.0)  # another SLO class has its own counts
    # the evidence fades: two half-lives later 7.5 of 50 calls is no longer enough
    assert "t4/v" not in fb.excluded(70.0, 2 * feedback.RATE_HALF_LIFE_S)


def test_the_fallback_skips_excluded_rows_while_any_other_is_left() -> None:
    t4 = meet_row("t4/v", "t4", compute=15.0, slots=4.0, conc=4, cost=1e-7)
    l4 = meet_row("l4/v", "l4", compute=50.0, slots=4.0, conc=4, cost=2e-7)
    plain = CallContext(Hints(slo_ms=70.0))
    assert meet.chance(t4, plain) > meet.chance(l4, plain) + meet.EPS
    assert meet.choose([t4, l4], plain, None) is t4  # without the rule
    ctx = CallContext(Hints(slo_ms=70.0), slo_excluded=frozenset({"t4/v"}))
    for seed in range(10):
        assert meet.choose([t4, l4], ctx, random.Random(seed)) is l4
    every = CallContext(Hints(slo_ms=70.0), slo_excluded=frozenset({"t4/v", "l4/v"}))
    assert meet.choose([t4, l4], every, None) is t4  # none left: as without the rule
