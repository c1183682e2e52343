"""`switchyard status` shows what placement learned of LLM streams (services/stream_explain.py:
token_section over a route table's Candidate.tokens)."""

from __future__ import annotations

from services.api.switchyard.v1 import placement_pb2
from services.stream_explain import token_section


def test_learned_token_speeds_and_prices_are_shown_per_deployment() -> None:
    t = placement_pb2.RouteTable(model="m", edge_region="r")
    t.candidates.add(deployment_id="a/m")  # never streamed: no row
    b = t.candidates.add(deployment_id="b/m")
    b.tokens.CopyFrom(placement_pb2.TokenSpeed(
        prefill_ms_per_token=0.25, tpot_base_ms=10.0, tpot_per_stream_ms=0.5,
        usd_per_1m_input=0.0123, usd_per_1m_output=0.4567))
    out = token_section(t)
    assert "EMULATED" in out
    row = next(line for line in out.splitlines() if "b/m" in line)
    assert "0.250" in row and "10.00 + 0.500 × n" in row
    assert "0.0123" in row and "0.4567" in row
    assert "a/m" not in out


def test_no_section_before_any_edge_reported_a_stream() -> None:
    t = placement_pb2.RouteTable(model="m", edge_region="r")
    t.candidates.add(deployment_id="a/m")
    assert token_section(t) == ""


def test_an_unbilled_price_reads_as_unknown() -> None:
    t = placement_pb2.RouteTable(model="m", edge_region="r")
    c = t.candidates.add(deployment_id="b/m")
    c.tokens.CopyFrom(placement_pb2.TokenSpeed(prefill_ms_per_token=0.1, tpot_base_ms=5.0))
    row = next(line for line in token_section(t).splitlines() if "b/m" in line)
    assert row.rstrip(" |").endswith("-")
