"""Loose calls off hot rows (``placement.hot_rows``): a call with room to spare keeps off a
backend near capacity while a cooler row it meets with that room passes; a tight call, and
every call off-peak, keeps the cheapest row (``benchmarks.cost_check``'s ``no-hot-rows`` is
the rule before it)."""

from __future__ import annotations

import random

import pytest

from placement import hot_rows
from placement.model import CallContext, Hints
from placement.registry import build_profile
from tests.meet_rows import meet_row

# held-out-near-capacity's shape: the spot L4 is the cheapest per call and 0.95 busy at the
# peak; the T4 is a little dearer per call, slower (p95 181 ms) and mostly idle.
L4_HOT = meet_row("l4/asr", "l4", compute=60.0, slots=4.0, conc=8, cost=1.0e-6, busy=0.95)
T4_COOL = meet_row("t4/asr", "t4", compute=120.0, slots=3.0, conc=6, cost=1.2e-6, busy=0.3)
ROWS = [L4_HOT, T4_COOL]  # ascending cost, as the edge's tables are


def _chosen(slo_ms: float, cost_sorted: bool = False, rows: list | None = None) -> set[str]:
    profile = build_profile("cheapest")
    ctx = CallContext(Hints(slo_ms=slo_ms))
    return {profile.choose(rows or ROWS, ctx, random.Random(seed),
                           cost_sorted=cost_sorted).candidate.deployment_id
            for seed in range(20)}


@pytest.fixture
def on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule by the table's report (``SHARE`` None), whatever its price."""
    monkeypatch.setattr(hot_rows, "ON", True)
    monkeypatch.setattr(hot_rows, "SHARE", None)
    monkeypatch.setattr(hot_rows, "MAX_PRICE", None)


def test_with_the_kept_settings_a_loose_call_leaves_a_row_this_edge_fills(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """ON (off by default since the live drill, see hot_rows.ON) with SHARE 0.75, MAX_PRICE 2."""
    monkeypatch.setattr(hot_rows, "ON", True)
    l4 = meet_row("l4/asr", "l4", compute=60.0, slots=4.0, conc=8, cost=1.0e-6, busy=0.3)
    own = {"l4/asr": 3}  # 3 of this edge's 4 slots on the L4 busy
    assert _chosen_with(900.0, [l4, T4_COOL], own) == {"t4/asr"}
    assert _chosen_with(900.0, [l4, T4_COOL], own, cost_sorted=True) == {"t4/asr"}
    assert _chosen_with(150.0, [l4, T4_COOL], own) == {"l4/asr"}  # a tight call keeps it
    assert _chosen_with(900.0, [l4, T4_COOL], {}) == {"l4/asr"}  # its share free
    h100 = meet_row("h100/asr", "h100", compute=17.0, slots=1.0, conc=2, cost=3.0e-6)
    assert _chosen_with(900.0, [l4, h100], own) == {"l4/asr"}  # 3 × its price


def test_the_rule_before_sends_a_loose_call_to_the_hot_cheap_row(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hot_rows, "ON", False)
    assert _chosen(900.0) == {"l4/asr"}


@pytest.mark.usefixtures("on")
def test_a_loose_call_leaves_the_hot_row_to_the_tight_ones() -> None:
    assert _chosen(900.0) == {"t4/asr"}  # 4 × 181 ms fits 898 ms
    assert _chosen(900.0, cost_sorted=True) == {"t4/asr"}  # the edge's banded walk alike


@pytest.mark.usefixtures("on")
def test_a_tight_call_keeps_the_hot_row() -> None:
    assert _chosen(150.0) == {"l4/asr"}  # the T4 cannot meet it
    assert _chosen(150.0, cost_sorted=True) == {"l4/asr"}


@pytest.mark.usefixtures("on")
def test_a_call_without_room_to_spare_on_the_cool_row_keeps_the_hot_one() -> None:
    assert _chosen(500.0) == {"l4/asr"}  # the T4 meets 500 ms, but not with 4 × room


@pytest.mark.usefixtures("on")
def test_off_peak_the_cheapest_row_is_kept() -> None:
    warm = meet_row("l4/asr", "l4", compute=60.0, slots=4.0, conc=8, cost=1.0e-6, busy=0.85)
    assert _chosen(900.0, rows=[warm, T4_COOL]) == {"l4/asr"}
    assert _chosen(900.0, cost_sorted=True, rows=[warm, T4_COOL]) == {"l4/asr"}


@pytest.mark.usefixtures("on")
def test_keep_cool_returns_every_row_when_none_is_roomy() -> None:
    ctx = CallContext(Hints(slo_ms=900.0))
    hot_t4 = meet_row("t4/asr", "t4", compute=120.0, slots=3.0, conc=6, busy=0.97)
    assert list(hot_rows.keep_cool([L4_HOT, hot_t4], ctx)) == [L4_HOT, hot_t4]
    assert list(hot_rows.keep_cool(ROWS, ctx)) == [T4_COOL]


@pytest.mark.usefixtures("on")
def test_a_cool_row_past_max_price_is_not_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    h100 = meet_row("h100/asr", "h100", compute=17.0, slots=1.0, conc=2, cost=3.0e-6, busy=0.2)
    monkeypatch.setattr(hot_rows, "MAX_PRICE", None)
    assert _chosen(900.0, rows=[L4_HOT, h100]) == {"h100/asr"}
    monkeypatch.setattr(hot_rows, "MAX_PRICE", 1.5)
    assert _chosen(900.0, rows=[L4_HOT, h100]) == {"l4/asr"}  # 3 × the hot L4's price
    assert _chosen(900.0, rows=[L4_HOT, T4_COOL, h100]) == {"t4/asr"}  # 1.2 × it


@pytest.mark.usefixtures("on")
def test_a_warm_row_is_not_cool_enough_under_cool(monkeypatch: pytest.MonkeyPatch) -> None:
    warm_t4 = meet_row("t4/asr", "t4", compute=120.0, slots=3.0, conc=6, cost=1.2e-6, busy=0.6)
    monkeypatch.setattr(hot_rows, "COOL", None)  # the rule before: below HOT is cool
    assert _chosen(900.0, rows=[L4_HOT, warm_t4]) == {"t4/asr"}
    monkeypatch.setattr(hot_rows, "COOL", 0.5)
    assert _chosen(900.0, rows=[L4_HOT, warm_t4]) == {"l4/asr"}  # 0.6 busy: not moved to
    assert _chosen(900.0, cost_sorted=True, rows=[L4_HOT, warm_t4]) == {"l4/asr"}
    assert _chosen(900.0, rows=ROWS) == {"t4/asr"}  # 0.3 busy: cool


def _chosen_with(slo_ms: float, rows: list, inflight: dict[str, int],
                 cost_sorted: bool = False) -> set[str]:
    profile = build_profile("cheapest")
    ctx = CallContext(Hints(slo_ms=slo_ms), inflight=inflight)
    return {profile.choose(rows, ctx, random.Random(seed),
                           cost_sorted=cost_sorted).candidate.deployment_id
            for seed in range(20)}


@pytest.mark.usefixtures("on")
def test_under_share_a_row_is_hot_by_this_edges_own_calls(
        monkeypatch: pytest.MonkeyPatch) -> None:
    l4_cool = meet_row("l4/asr", "l4", compute=60.0, slots=4.0, conc=8, cost=1.0e-6, busy=0.3)
    rows = [l4_cool, T4_COOL]
    own = {"l4/asr": 3}  # 3 of this edge's 4 slots there busy, the table's report 0.3
    monkeypatch.setattr(hot_rows, "SHARE", None)  # the rule before: the table's report
    assert _chosen_with(900.0, rows, own) == {"l4/asr"}
    monkeypatch.setattr(hot_rows, "SHARE", 0.75)
    assert _chosen_with(900.0, rows, own) == {"t4/asr"}
    assert _chosen_with(900.0, rows, own, cost_sorted=True) == {"t4/asr"}
    assert _chosen_with(900.0, rows, {"l4/asr": 2}) == {"l4/asr"}  # half its share
    assert _chosen_with(150.0, rows, own) == {"l4/asr"}  # a tight call keeps it
    # the table's 0.95 does not make the row hot while this edge's own share is free
    assert _chosen_with(900.0, [L4_HOT, T4_COOL], {}) == {"l4/asr"}
    # nor is a row cool where this edge's own share is as busy
    assert _chosen_with(900.0, rows, {"l4/asr": 3, "t4/asr": 3}) == {"l4/asr"}


@pytest.mark.usefixtures("on")
def test_under_slower_a_loose_call_moves_only_to_a_slower_row(
        monkeypatch: pytest.MonkeyPatch) -> None:
    l4_od = meet_row("l4od/asr", "l4od", compute=60.0, slots=4.0, conc=8, cost=1.5e-6, busy=0.2)
    rows = [L4_HOT, T4_COOL, l4_od]
    monkeypatch.setattr(hot_rows, "SLOWER", None)
    assert _chosen(900.0, rows=[L4_HOT, l4_od]) == {"l4od/asr"}  # as fast: the rule before
    monkeypatch.setattr(hot_rows, "SLOWER", 1.2)
    assert _chosen(900.0, rows=[L4_HOT, l4_od]) == {"l4/asr"}
    assert _chosen(900.0, rows=rows) == {"t4/asr"}  # 2 × the hot L4's compute
