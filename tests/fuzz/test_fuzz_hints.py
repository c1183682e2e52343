"""Property-based fuzzing of the hint parser: arbitrary metadata → ParsedHints or InvalidHint
naming the header; values in range; no other exception."""

from __future__ import annotations

import math
import os

from hypothesis import given, settings

from placement.errors import InvalidHint
from services.edge.hints import parse, resolve
from tests.fuzz.strategies import HINT_HEADERS, REGIONS, metadata

EXAMPLES = int(os.environ.get("SWITCHYARD_FUZZ_EXAMPLES", "300"))
PROFILES = ("cheapest", "fastest")


@settings(max_examples=EXAMPLES * 3, deadline=1000)
@given(metadata())
def test_arbitrary_metadata_gives_hints_or_an_error_naming_the_header(
        md: list[tuple[str, str | bytes]]) -> None:
    try:
        p = parse(md, frozenset(REGIONS), PROFILES)
    except InvalidHint as exc:
        error = exc
    else:
        error = None
    if error is not None:
        assert error.header in HINT_HEADERS
        assert any(k == error.header for k, _ in md)
        assert error.message.startswith(f"metadata {error.header}=")
        return
    assert p.slo_ms is None or (math.isfinite(p.slo_ms) and p.slo_ms > 0)
    assert 0.0 <= p.min_quality <= 1.0 and (p.max_cost_usd == math.inf or 0 <= p.max_cost_usd <= 1e6)
    assert p.allowed_regions <= frozenset(REGIONS)
    assert len(p.request_id) <= 128 and p.profile in ("", *PROFILES)
    h = resolve(p, None, 300.0, 5.0, False)
    assert h.slo_ms > 0


def test_a_region_list_of_only_commas_says_it_names_no_region() -> None:
    import pytest
    with pytest.raises(InvalidHint, match="names no region") as err:
        parse([("x-allowed-regions", " , ,")], frozenset(REGIONS), PROFILES)
    assert err.value.header == "x-allowed-regions"
