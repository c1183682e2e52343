"""``EdgeAdmin.Explain``: what this edge would do with one LLM stream, by its own state.

A stream's choice depends on what only the edge holds (the token speeds it learned, the
fleet's from its route table, its streams in flight, the session's prefix holder), so the
edge answers, not placement. The request's hints become the headers a real stream would
carry and go through the same steps as one (``Router.read``: hint validation, candidates,
health; ``Generation.plan``: the choice by tokens); nothing is sent to a backend and nothing
the edge learned changes. The prompt is ``prompt_tokens`` placeholder tokens: without a
``session_id`` its prefix hash stands for a session no real prompt shares.
"""

from __future__ import annotations

import math

from placement.errors import InvalidRequest, SwitchyardError
from placement.explain import allowed_regions
from placement.explain_stream import explain_stream
from services.api.switchyard.v1 import placement_pb2
from services.edge.generation import Generation
from services.edge.hints import parse_stream
from services.edge.router import CallRecord, Router
from services.edge.token_stats import StreamMeter
from services.edge.tokens import llm_request, parse_request
from services.grpc_errors import AnyContext, abort

MAX_PROMPT_TOKENS = 1_000_000


def stream_metadata(request: placement_pb2.ExplainRequest) -> list[tuple[str, str]]:
    """The request as the headers a stream with these hints would carry."""
    a = request.stream
    md = [(k, v) for k, v in (
        ("x-slo-ms", f"{request.slo_ms:g}" if request.slo_ms else ""),
        ("x-min-quality", f"{request.min_quality:g}" if request.min_quality else ""),
        ("x-allowed-regions", ",".join(request.allowed_regions)),
        ("x-routing-profile", request.profile),
        ("x-ttft-ms", f"{a.ttft_ms:g}" if a.ttft_ms else ""),
        ("x-tpot-ms", f"{a.tpot_ms:g}" if a.tpot_ms else ""),
        ("x-max-tokens", str(a.max_tokens) if a.max_tokens else ""),
        ("x-session-id", a.session_id)) if v]
    if request.HasField("max_cost_usd") and request.max_cost_usd != math.inf:  # inf: no cap
        md.append(("x-max-cost-usd", f"{request.max_cost_usd:g}"))  # NaN, -inf: refused
    return md


def explain(router: Router, request: placement_pb2.ExplainRequest
            ) -> placement_pb2.ExplainResponse:
    """The edge's stream choice for ``request`` explained per deployment (raises the same
    typed errors a stream with these hints would get)."""
    if not request.HasField("stream"):
        raise InvalidRequest("EdgeAdmin.Explain explains LLM streams (set `stream`); "
                             "placement's Explain explains a call")
    a = request.stream
    if not 0 < a.prompt_tokens <= MAX_PROMPT_TOKENS:
        raise InvalidRequest(f"stream.prompt_tokens must be 1..{MAX_PROMPT_TOKENS}; got "
                             f"{a.prompt_tokens}")
    if request.edge_region and request.edge_region != router.store.region:
        raise InvalidRequest(f"edge_region {request.edge_region[:64]!r} is not this edge's "
                             f"({router.store.region!r}): ask an edge of that region")
    allowed_regions(request.allowed_regions, router.regions)  # as placement's Explain reads it
    metadata = stream_metadata(request)
    goals = parse_stream(metadata)  # before the request is built from them (max_tokens)
    raw = llm_request(request.model, [0] * a.prompt_tokens, a.max_tokens or None)
    record = CallRecord(request_id="explain", model=request.model)
    model, cands, ctx, profile = router.read(raw, metadata, None, record)
    gen = Generation(router, parse_request(raw), goals, StreamMeter(router.clock(), 0))
    choice = gen.plan(profile, cands, ctx)
    assert gen.ask is not None
    sources = {d: src for d, (_, src) in router.streams.sourced(
        [o.candidate for o in choice.options]).items()}
    ex = explain_stream(choice, gen.ask, sources, profile=profile.name)
    resp = placement_pb2.ExplainResponse(
        model=model, edge_region=router.store.region, slo_ms=ctx.hints.slo_ms,
        chosen_deployment_id=ex.chosen, slo_met=ex.slo_met, summary=ex.summary,
        profile=profile.name, spread_band=[ex.chosen])
    for v in ex.verdicts:
        o = v.option
        resp.stream_options.append(placement_pb2.StreamOption(
            deployment_id=o.candidate.deployment_id, ttft_ms=round(o.ttft_ms, 2),
            tpot_ms=round(o.tpot_ms, 3), cost_usd=o.cost_usd,
            usd_per_1m_tokens=v.usd_per_1m_tokens, feasible=o.feasible, measured=o.measured,
            learned_from=v.learned_from, prefix_holder=v.prefix_holder,
            cache_hit_tokens=o.cache_hit_tokens, load=o.load, load_bound=o.bound,
            reason=v.reason))
    return resp


async def handle(router: Router, request: placement_pb2.ExplainRequest,
                 context: AnyContext) -> placement_pb2.ExplainResponse:
    """The RPC: ``explain``, its typed errors as statuses."""
    try:
        return explain(router, request)
    except SwitchyardError as exc:
        await abort(context, exc)
        raise
