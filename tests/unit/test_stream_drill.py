"""The kill drill's counts and verdict (services/drills/streams.py) without a mesh."""

from __future__ import annotations

from services.drills.streams import StreamDrillReport, token_errors


def test_each_kind_of_token_damage_is_counted() -> None:
    assert token_errors([1, 2, 3, 4], [1, 2, 3, 4]) == (0, 0, False)
    assert token_errors([1, 2, 3, 4], [1, 2, 4]) == (1, 0, False)
    assert token_errors([1, 2, 3, 4], [1, 2, 2, 3, 4]) == (0, 1, False)
    assert token_errors([1, 2, 3, 4], [1, 3, 2, 4]) == (0, 0, True)
    assert token_errors([5, 5, 6], [5, 6]) == (1, 0, False)  # repeated tokens: multisets


def _report(**kw: object) -> StreamDrillReport:
    base: dict[str, object] = {
        "streams": 8, "max_tokens": 120, "kill_after_tokens": 20, "killed": "b1",
        "on_killed": 4, "lost": 0, "missing_tokens": 0, "duplicated_tokens": 0,
        "reordered": 0, "resumed": 4, "seconds": 2.0,
        "checks": {"the kill hit at least one stream": True}}
    base.update(kw)
    return StreamDrillReport(**base)  # type: ignore[arg-type]


def test_verdict_needs_checks_and_zero_damage() -> None:
    assert _report().passed
    assert "PASSED" in _report().table()
    assert not _report(lost=1).passed
    assert not _report(missing_tokens=3).passed
    assert not _report(duplicated_tokens=1).passed
    assert not _report(reordered=1).passed
    assert not _report(checks={}).passed
    failed = _report(checks={"the kill hit at least one stream": False})
    assert not failed.passed and "FAILED" in failed.table()
    assert failed.to_dict()["scenario"] == "kill-streams"
