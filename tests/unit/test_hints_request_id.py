"""A repeated ``x-request-id`` is its values joined with ',' (services/edge/hints.py), as an
Envoy edge joins it before any filter: the Python edge refused it (INVALID_ARGUMENT) where
Envoy served the same call as 'a,b'. Fails on the old code (InvalidHint)."""

from __future__ import annotations

from services.edge.hints import parse, request_id

REGIONS = frozenset({"r-east"})


def test_a_repeated_request_id_is_joined_as_envoy_joins_it() -> None:
    md = [("x-request-id", "a"), ("x-slo-ms", "50"), ("x-request-id", "b")]
    assert parse(md, REGIONS, ("cheapest",)).request_id == "a,b"
    assert request_id(md) == "a,b"
    same = [("x-request-id", "a"), ("x-request-id", "a")]
    assert parse(same, REGIONS, ("cheapest",)).request_id == request_id(same) == "a,a"


def test_a_joined_request_id_is_cut_to_128_characters() -> None:
    md = [("x-request-id", "x" * 100), ("x-request-id", "y" * 100)]
    assert parse(md, REGIONS, ()).request_id == request_id(md) == "x" * 100 + "," + "y" * 27


def test_one_request_id_is_itself_and_none_is_made_up() -> None:
    assert request_id([("x-request-id", "r-1")]) == "r-1"
    assert len(request_id([])) == 16 and len(parse([], REGIONS, ()).request_id) == 16
