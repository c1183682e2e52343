"""placement.meet's spread against the fallback's herd (``meet.SPREAD``): every edge falls
back at once on the same table, so a draw that every edge makes the same way piles them
onto the same rows. Off by default; these tests fail on the code before it (no
``meet.SPREAD``, ``meet.room``)."""

from __future__ import annotations

import random

import pytest

from placement import meet
from placement.model import CallContext, Candidate, Hints
from tests.meet_rows import meet_row


def test_spread_is_off() -> None:
    assert meet.SPREAD == ""


def test_room_is_this_edges_slice_of_the_free_servers_less_its_excess() -> None:
    c = meet_row("l4/v", "l4", compute=25.0, slots=2.0, conc=4, busy=0.5)
    assert meet.room(c, CallContext(Hints(slo_ms=70.0))) == pytest.approx(1.0)
    # 3 in flight, this call the 4th: 2 past a share of 2
    full = CallContext(Hints(slo_ms=70.0), inflight={"l4/v": 3})
    assert meet.room(c, full) == pytest.approx(1.0 - 2.0)


def _edges(rows: list[Candidate], ctx: CallContext, n: int = 400) -> dict[str, int]:
    """How often each row is taken by ``n`` edges falling back at once on ``ctx``."""
    taken: dict[str, int] = {}
    for seed in range(n):
        c = meet.choose(rows, ctx, random.Random(seed))
        taken[c.deployment_id] = taken.get(c.deployment_id, 0) + 1
    return taken


def test_room_spreads_the_edges_over_the_rows_the_herd_leaves_idle(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Both idle at the table; the fast row's chance is past EPS above the slow one's, so
    # every edge's draw within EPS takes it (the herd); with room they share both.
    fast = meet_row("h100/v", "h100", compute=20.0, slots=1.0, conc=4, busy=0.6)
    slow = meet_row("l4/v", "l4", compute=50.0, slots=1.0, conc=4, busy=0.6)
    ctx = CallContext(Hints(slo_ms=90.0))
    p_fast, p_slow = meet.chance(fast, ctx), meet.chance(slow, ctx)
    assert p_fast > p_slow + meet.EPS and p_slow >= meet.SPREAD_BAND * p_fast
    assert _edges([fast, slow], ctx) == {"h100/v": 400}
    monkeypatch.setattr(meet, "SPREAD", "room")
    taken = _edges([fast, slow], ctx)
    # drawn by chance x room, the rooms equal: the slow row's share p_slow / (p_fast + p_slow)
    share = p_slow / (p_fast + p_slow)
    assert taken["l4/v"] / 400 == pytest.approx(share, abs=0.07)


def test_room_taken_by_this_edge_sends_it_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = meet_row("h100/v", "h100", compute=20.0, slots=2.0, conc=8, busy=0.5)
    slow = meet_row("l4/v", "l4", compute=30.0, slots=2.0, conc=8, busy=0.5)
    ctx = CallContext(Hints(slo_ms=90.0), inflight={"h100/v": 2})  # its slice of 1 taken
    assert meet.room(fast, ctx) <= 0.0 < meet.room(slow, ctx)
    assert meet.chance(fast, ctx) > 0.0 and meet.chance(slow, ctx) > 0.0
    monkeypatch.setattr(meet, "SPREAD", "room")
    assert _edges([fast, slow], ctx, 50) == {"l4/v": 50}


def test_with_no_chance_anywhere_room_spreads_the_able_rows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Learned margins eat both budgets: the fastest by the strict estimate decides for
    # every edge (one row); with room, the able rows are drawn by their room.
    a = meet_row("a/v", "a", compute=20.0, slots=2.0, conc=4)
    b = meet_row("b/v", "b", compute=25.0, slots=2.0, conc=4)
    ctx = CallContext(Hints(slo_ms=70.0), slo_margins={"a/v": 80.0, "b/v": 80.0})
    assert meet.chance(a, ctx) == meet.chance(b, ctx) == 0.0
    assert _edges([a, b], ctx, 100) == {"a/v": 100}
    monkeypatch.setattr(meet, "SPREAD", "room")
    taken = _edges([a, b], ctx, 400)
    assert taken["b/v"] / 400 == pytest.approx(0.5, abs=0.08)


def test_p2c_takes_the_likelier_of_two_drawn_by_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [meet_row(f"{b}/v", b, compute=20.0 + 5 * i, slots=1.0, conc=4, busy=0.5)
            for i, b in enumerate("abc")]
    ctx = CallContext(Hints(slo_ms=90.0))
    chances = [meet.chance(c, ctx) for c in rows]
    assert chances == sorted(chances, reverse=True) and chances[2] >= 0.5 * chances[0]
    monkeypatch.setattr(meet, "SPREAD", "p2c")
    taken = _edges(rows, ctx, 600)
    # pairs drawn uniformly: a in 2 of 3 pairs, b in 1 (with c), c never
    assert "c/v" not in taken
    assert taken["b/v"] / 600 == pytest.approx(1 / 3, abs=0.07)


def test_hrw_keeps_each_edge_on_one_row_and_splits_the_edges_by_chance(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Two rows within EPS: the draw per call sends every edge to both (past its share on
    # each); the rendezvous keeps each edge on one, the edges split in proportion to chance.
    a = meet_row("a/v", "a", compute=20.0, slots=1.0, conc=4, busy=0.6)
    b = meet_row("b/v", "b", compute=24.0, slots=1.0, conc=4, busy=0.6)
    ctx = CallContext(Hints(slo_ms=70.0), edge="edge-0")
    p_a, p_b = meet.chance(a, ctx), meet.chance(b, ctx)
    assert 0.0 < p_a - p_b < meet.EPS
    assert len(_edges([a, b], ctx, 200)) == 2  # off: one edge's draws take both
    monkeypatch.setattr(meet, "SPREAD", "hrw")
    assert len(_edges([a, b], ctx, 200)) == 1
    on_b = sum(meet.choose([a, b], CallContext(Hints(slo_ms=70.0), edge=f"edge-{i}"),
                           random.Random(i)) is b for i in range(1000))
    assert on_b / 1000 == pytest.approx(p_b / (p_a + p_b), abs=0.05)
    # an edge that does not name itself draws as before
    assert len(_edges([a, b], CallContext(Hints(slo_ms=70.0)), 200)) == 2
