"""services/render.py: the demo's comparison in words says which way it went."""

from __future__ import annotations

import pytest

from services.render import cheaper_by, table


@pytest.mark.parametrize(("ours", "theirs", "digits", "words"), [
    (0.27, 1.0, 1, "73.0% lower"),
    (0.003497, 0.002321, 1, "50.7% higher"),  # a loaded host's demo run: never "-50.7% lower"
    (1.0, 1.0, 0, "0% lower"),
    (0.06, 0.03, 0, "100% higher"),
])
def test_a_comparison_names_its_direction_with_a_positive_figure(
        ours: float, theirs: float, digits: int, words: str) -> None:
    assert cheaper_by(ours, theirs, digits) == words


def test_a_table_aligns_its_columns_under_a_rule() -> None:
    lines = table(["a", "bbb"], [["xx", 1], ["y", 22]]).splitlines()
    assert lines == ["a   bbb", "--  ---", "xx  1", "y   22"]
