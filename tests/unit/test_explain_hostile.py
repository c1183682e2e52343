"""Explain given hints no call could carry (hostile9): placement's ``Explain`` and an edge's
``EdgeAdmin.Explain`` refuse them naming the field, as an edge refuses the header, instead of
explaining a different call."""

from __future__ import annotations

import asyncio
import math
import pathlib
import types

import pytest

from placement.errors import InvalidHint, InvalidRequest
from placement.registry import PROFILES
from services.api.switchyard.v1 import placement_pb2
from services.edge import explain as edge_explain
from services.edge import hints
from services.placement.main import build_service
from tests.mesh_harness import mesh_config

# What explain reads of the edge's router before it asks it anything
ROUTER = types.SimpleNamespace(regions=frozenset({"r-east", "r-west", "r-central"}),
                               store=types.SimpleNamespace(region="r-east"))
BAD_REGIONS = [["nope"], [""], [" r-west"], ["r-west,r-east"], ["r-west", "r-west "]]


@pytest.mark.parametrize("regions", BAD_REGIONS)
def test_placement_refuses_allowed_regions_naming_no_region(
        tmp_path: pathlib.Path, regions: list[str]) -> None:
    """Before: OK, '0 of 5 deployments feasible ... regions ['nope']' (and [' r-west'], which
    an edge reads as r-west and serves there)."""
    svc = build_service(mesh_config(tmp_path), preregister=True)
    request = placement_pb2.ExplainRequest(model="summarize", edge_region="r-east",
                                           allowed_regions=regions)
    with pytest.raises(InvalidRequest, match=r"^allowed_regions names unknown region"):
        asyncio.run(svc.Explain(request, None))  # type: ignore[arg-type]
    request = placement_pb2.ExplainRequest(model="summarize", edge_region="r-east",
                                           allowed_regions=["r-west"])
    resp = asyncio.run(svc.Explain(request, None))  # type: ignore[arg-type]
    assert resp.chosen_deployment_id.startswith("west-"), resp.summary


@pytest.mark.parametrize("regions", BAD_REGIONS)
def test_an_edge_refuses_allowed_regions_naming_no_region(regions: list[str]) -> None:
    """Before: [""] was no x-allowed-regions at all (every region explained)."""
    request = placement_pb2.ExplainRequest(model="generate", allowed_regions=regions,
                                           stream=placement_pb2.StreamAsk(prompt_tokens=10))
    with pytest.raises(InvalidRequest, match=r"^allowed_regions names unknown region"):
        edge_explain.explain(ROUTER, request)  # type: ignore[arg-type]


@pytest.mark.parametrize("cap", [math.nan, -math.inf])
def test_an_edges_explain_refuses_a_cost_cap_that_is_no_number(cap: float) -> None:
    """Before: NaN and -inf were dropped, explained as no cap (placement refuses them)."""
    request = placement_pb2.ExplainRequest(model="generate", max_cost_usd=cap,
                                           stream=placement_pb2.StreamAsk(prompt_tokens=10))
    md = edge_explain.stream_metadata(request)
    with pytest.raises(InvalidHint, match=r"^metadata x-max-cost-usd="):
        hints.parse(md, frozenset({"r-east"}), PROFILES)


def test_an_edges_explain_reads_an_infinite_cap_as_none_and_zero_as_a_cap() -> None:
    inf = placement_pb2.ExplainRequest(model="generate", max_cost_usd=math.inf)
    zero = placement_pb2.ExplainRequest(model="generate", max_cost_usd=0.0)
    assert hints.parse(edge_explain.stream_metadata(inf), frozenset(), PROFILES
                       ).max_cost_usd == math.inf
    assert hints.parse(edge_explain.stream_metadata(zero), frozenset(), PROFILES
                       ).max_cost_usd == 0.0


@pytest.mark.parametrize("max_tokens", [1_000_001, 2**31, 2**32 - 1])
def test_an_edges_explain_refuses_max_tokens_a_stream_could_not_ask(max_tokens: int) -> None:
    """Before: 2**31 and up were UNKNOWN "Unexpected <class 'struct.error'>: 'i' format
    requires ..." (the placeholder request was built first); a stream's x-max-tokens is
    1..1e6."""
    request = placement_pb2.ExplainRequest(model="generate", stream=placement_pb2.StreamAsk(
        prompt_tokens=10, max_tokens=max_tokens))
    with pytest.raises(InvalidHint, match=r"^metadata x-max-tokens="):
        edge_explain.explain(ROUTER, request)  # type: ignore[arg-type]


def test_an_edges_explain_refuses_another_regions_edge_region() -> None:
    """Before: answered for the edge's own region without a word."""
    request = placement_pb2.ExplainRequest(model="generate", edge_region="r-west",
                                           stream=placement_pb2.StreamAsk(prompt_tokens=10))
    with pytest.raises(InvalidRequest, match=r"^edge_region 'r-west' is not this edge's"):
        edge_explain.explain(ROUTER, request)  # type: ignore[arg-type]
