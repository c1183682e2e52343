"""``placement.reserve``: room on a fast row held back from loose calls for the tighter SLO
classes that have no other row. Each test that routes a loose call fails with the rule off
(``reserve=None``, the pipeline before it): the loose call then takes the cheap fast row."""

from __future__ import annotations

import random

import pytest

from placement import hot_rows, reserve
from placement.model import CallContext, Hints
from placement.registry import build_profile
from tests.meet_rows import meet_row

FAST = meet_row("fast/v", "fast", compute=10.0, slots=4.0, conc=4, cost=1e-6)  # p95 16 ms
SLOW = meet_row("slow/v", "slow", compute=100.0, slots=4.0, conc=4, cost=2e-6)  # p95 151 ms
TIGHT, LOOSE = 40.0, 1000.0  # only FAST meets TIGHT; both meet LOOSE, FAST the cheaper


@pytest.fixture(autouse=True)
def reserve_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """This edge filling FAST would also move a loose call by ``placement.hot_rows`` (on by
    default): these tests are of the reserve's rule alone."""
    monkeypatch.setattr(hot_rows, "ON", False)


def ctx(slo: float, inflight: dict[str, int] | None = None) -> CallContext:
    return CallContext(Hints(slo_ms=slo), inflight=inflight or {})


def tight_calls(r: reserve.Reserve, n: int, until: float = 1.0) -> None:
    """``n`` tight calls observed over [0, ``until``] s, each of which only FAST can meet."""
    profile = build_profile("cheapest", 0.1)
    for i in range(n):
        r.observe([FAST, SLOW], ctx(TIGHT), profile.hard_filters, until * i / n)


def choose(slo: float, inflight: dict[str, int], r: reserve.Reserve | None,
           cost_sorted: bool = False) -> str:
    profile = build_profile("cheapest", 0.1)
    d = profile.choose([FAST, SLOW], ctx(slo, inflight), random.Random(0),
                       cost_sorted=cost_sorted, reserve=r, now=1.0)
    assert d.slo_met
    return d.candidate.deployment_id


@pytest.mark.parametrize("cost_sorted", [False, True])
def test_a_loose_call_leaves_the_last_of_a_needed_row_to_the_tight_class(
        cost_sorted: bool) -> None:
    r = reserve.Reserve()
    tight_calls(r, 100)
    held = r.held(LOOSE, 1.0)
    assert 0.0 < held["fast"] < 1.0 and "slow" not in held
    last = {"fast/v": 3}  # this call would take the last slot of the edge's share of FAST
    assert choose(LOOSE, last, None, cost_sorted) == "fast/v"  # the rule off
    assert choose(LOOSE, last, r, cost_sorted) == "slow/v"
    # with room left past what is held, the loose call takes the cheap row as before
    assert choose(LOOSE, {"fast/v": 2}, r, cost_sorted) == "fast/v"


def test_a_loose_call_keeps_the_row_when_no_other_passes() -> None:
    r = reserve.Reserve()
    tight_calls(r, 100)
    # SLOW is past the edge's share (20 in flight on 4 slots): its worst-case wait fails 1,000 ms
    inflight = {"fast/v": 3, "slow/v": 20}
    assert choose(LOOSE, inflight, r) == "fast/v"


def test_a_class_holds_nothing_against_itself_or_tighter_ones() -> None:
    r = reserve.Reserve()
    tight_calls(r, 100)
    assert r.held(TIGHT, 1.0) == {}
    assert r.held(TIGHT / 2, 1.0) == {}
    assert choose(TIGHT, {"fast/v": 3}, r) == "fast/v"


def test_a_call_many_backends_meet_needs_none() -> None:
    r = reserve.Reserve()
    profile = build_profile("cheapest", 0.1)
    rows = [meet_row(f"b{i}/v", f"b{i}", compute=10.0, slots=4.0, conc=4)
            for i in range(reserve.NEED_BACKENDS + 1)]
    for i in range(100):
        r.observe(rows, ctx(TIGHT), profile.hard_filters, i / 100)
    assert r.held(LOOSE, 1.0) == {}


def test_needs_fade_with_the_half_life() -> None:
    r = reserve.Reserve(half_life_s=10.0)
    tight_calls(r, 100)
    first = r.held(LOOSE, 1.0)["fast"]
    assert r.held(LOOSE, 11.0)["fast"] == pytest.approx(first / 2)
    assert r.held(LOOSE, 200.0) == {}
    assert choose(LOOSE, {"fast/v": 3}, r) == "fast/v"  # now=1.0 after 200: nothing held


def test_what_is_held_is_capped_by_the_slot_share() -> None:
    r = reserve.Reserve()
    tight_calls(r, 20_000, until=10.0)  # ~1,400 calls/s × 10 ms: 14 slots, over the 4
    assert r.held(LOOSE, 10.0)["fast"] > FAST.slots
    # capped at CAP × 4 = 2 slots: with 1 in flight the room left (2) is enough
    assert choose(LOOSE, {"fast/v": 1}, r) == "fast/v"
    assert choose(LOOSE, {"fast/v": 2}, r) == "slow/v"


def test_fallback_only_counts_the_tight_calls_that_fell_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reserve, "FALLBACK_ONLY", True)
    profile = build_profile("cheapest", 0.1)
    r = reserve.Reserve()
    for i in range(100):  # FAST within the edge's share: every tight call passes
        assert profile.choose([FAST, SLOW], ctx(TIGHT), random.Random(i), reserve=r,
                              now=i / 100).slo_met
    assert r.held(LOOSE, 1.0) == {}
    past = {"fast/v": 10}  # FAST's worst-case wait past the share: the tight calls fall back
    for i in range(100):
        assert not profile.choose([FAST, SLOW], ctx(TIGHT, past), random.Random(i),
                                  reserve=r, now=i / 100).slo_met
    assert r.held(LOOSE, 1.0)["fast"] > 0.0
    assert choose(LOOSE, {"fast/v": 3}, r) == "slow/v"
