"""``Explain`` reports what the edge would pick: the configured profile and spread band."""

from __future__ import annotations

import asyncio
import math
import pathlib
import random
from typing import Any

import pytest

from placement.errors import InvalidRequest
from placement.explain import explain_call
from placement.model import CallContext, Hints
from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2
from services.placement.main import build_service
from services.placement.server import PlacementService
from tests.mesh_harness import mesh_config


def service(tmp: pathlib.Path, **routing: Any) -> PlacementService:
    cfg = mesh_config(tmp)
    cfg = cfg.model_copy(update={"routing": cfg.routing.model_copy(update=routing)})
    return build_service(cfg, preregister=True)


def explain(svc: PlacementService, **req: Any) -> placement_pb2.ExplainResponse:
    request = placement_pb2.ExplainRequest(model="summarize", edge_region="r-east",
                                           slo_ms=1000, **req)
    return asyncio.run(svc.Explain(request, None))  # type: ignore[arg-type]


def fastest_id(resp: placement_pb2.ExplainResponse) -> str:
    return min(resp.candidates, key=lambda c: (c.candidate.latency_p95_ms,
                                               c.candidate.cost_usd)).candidate.deployment_id


def test_configured_fastest_profile_reports_the_fastest_pick(tmp_path: pathlib.Path) -> None:
    resp = explain(service(tmp_path, profile="fastest"))
    assert resp.profile == "fastest"
    assert resp.chosen_deployment_id == fastest_id(resp)
    assert resp.chosen_deployment_id.startswith("east-fast/")  # not the cheapest
    chosen = next(c for c in resp.candidates
                  if c.candidate.deployment_id == resp.chosen_deployment_id)
    assert chosen.reason.startswith("chosen (profile fastest")
    assert list(resp.spread_band) == [resp.chosen_deployment_id]


def test_request_profile_overrides_and_is_validated(tmp_path: pathlib.Path) -> None:
    svc = service(tmp_path)  # routing.profile = cheapest
    cheap = explain(svc)
    assert cheap.profile == "cheapest" and cheap.chosen_deployment_id.startswith("central-")
    assert explain(svc, profile="fastest").chosen_deployment_id == fastest_id(cheap)
    with pytest.raises(InvalidRequest, match="profile 'slowest' is not a routing profile"):
        explain(svc, profile="slowest")


def test_cheapest_reports_its_spread_band(tmp_path: pathlib.Path) -> None:
    resp = explain(service(tmp_path, spread_band=0.05))
    assert sorted(resp.spread_band) == ["central-cheap/summarize-large",
                                        "central-cheap/summarize-small"]
    assert resp.chosen_deployment_id in resp.spread_band
    narrow = explain(service(tmp_path, spread_band=0.0))
    assert len(narrow.spread_band) == 2  # equal costs stay in a zero-width band
    wide = explain(service(tmp_path, spread_band=0.99))
    assert len(wide.spread_band) == 5


def test_explain_pick_is_the_edges_choice() -> None:
    """Over any table, the pick is what ``Profile.choose`` returns with the same draw."""
    from tests.unit.test_pipeline import cand

    rng = random.Random(7)
    for _ in range(200):
        cands = [cand(i, rng.uniform(1e-6, 1e-4), rng.uniform(5, 200),
                      spare=rng.uniform(0, 50)) for i in range(6)]
        ctx = CallContext(Hints(slo_ms=rng.uniform(5, 200), max_cost_usd=math.inf))
        for name in ("cheapest", "fastest"):
            profile = build_profile(name, 0.05)
            ex = explain_call(profile, cands, ctx, seed=3)
            edge = build_profile(name, 0.05).choose(sorted(cands, key=lambda c: c.cost_usd),
                                                   ctx, random.Random(3), cost_sorted=True)
            assert ex.chosen == edge.candidate and ex.slo_met == edge.slo_met
