"""The simulator's edges on the rows as placement's hub publishes them
(``benchmarks/costsim/publish.py``): material change only, learned changes at most every
``bands.ESTIMATE_EVERY_S``, a doubling and an exact field at once."""

from __future__ import annotations

import dataclasses

from benchmarks.costsim.publish import Publisher
from placement.model import Availability, Candidate
from services.placement.bands import ESTIMATE_EVERY_S
from tests.meet_rows import meet_row

KEY = ("m", "r")


def _row(compute: float = 20.0, dep: str = "b1/v") -> Candidate:
    return meet_row(dep, dep.split("/", maxsplit=1)[0], compute, slots=2.0)


def _build(pub: Publisher, rows: list[Candidate], now: float) -> list[Candidate]:
    out = pub.table(KEY, rows, now)
    pub.built(now)
    return out


def test_a_row_within_its_band_is_not_published_again() -> None:
    pub = Publisher()
    first = _row(20.0)
    assert _build(pub, [first], 0.0) == [first]
    # 1 % slower: inside compute's 3 % band, so the edge keeps the row it has
    assert _build(pub, [_row(20.2)], 1.0) == [first]
    assert pub.published == 1


def test_a_learned_change_waits_for_the_estimate_cadence() -> None:
    pub = Publisher()
    _build(pub, [_row(20.0)], 0.0)
    moved = _row(24.0)  # +20 %: out of its band, not a doubling
    assert _build(pub, [moved], 1.0) == [moved]  # the first learned change goes at once
    later = _row(28.0)
    assert _build(pub, [later], 2.0) == [moved]  # within 5 s of it: waits
    assert pub.deferred == 1
    assert _build(pub, [later], 1.0 + ESTIMATE_EVERY_S) == [later]  # the wait is over


def test_a_doubling_and_an_exact_field_go_out_at_once() -> None:
    pub = Publisher()
    _build(pub, [_row(20.0)], 0.0)
    _build(pub, [_row(24.0)], 1.0)  # starts the wait
    doubled = _row(60.0)
    assert _build(pub, [doubled], 2.0) == [doubled]
    drained = dataclasses.replace(doubled, availability=Availability.DRAINED)
    assert _build(pub, [drained], 3.0) == [drained]


def test_rows_gone_are_gone_and_the_table_is_in_rank_order() -> None:
    pub = Publisher()
    cheap, dear = _row(20.0, "b1/v"), dataclasses.replace(_row(20.0, "b2/v"), cost_usd=1e-3)
    assert _build(pub, [dear, cheap], 0.0) == [cheap, dear]
    assert _build(pub, [dear], 1.0) == [dear]
