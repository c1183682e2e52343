"""``switchyard explain MODEL --stream``: an LLM stream's choice, asked of an edge.

The stream flags are validated by the edge's own stream-hint parser (what an edge would
refuse as a header, explain refuses as a flag) and sent with the call flags to the edge's
``EdgeAdmin.Explain`` (``services.edge.explain``): the stream's choice depends on what the
edge learned, its streams in flight and its prefix holders, which placement does not hold.
"""

from __future__ import annotations

import argparse
from typing import Any

import grpc

from placement.errors import InvalidHint, InvalidRequest
from services.api.switchyard.v1 import edge_pb2_grpc, placement_pb2
from services.config import MeshConfig
from services.edge.hints import ParsedHints, parse_stream
from services.render import table

# stream flags and the header each stands for
STREAM_FLAGS = {"ttft_ms": "x-ttft-ms", "tpot_ms": "x-tpot-ms", "max_tokens": "x-max-tokens",
                "session_id": "x-session-id"}
HEADERS = ["deployment", "TTFT ms", "TPOT ms", "$/1M tokens", "learned", "prefix", "load",
           "feasible", "why"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stream", action="store_true",
                   help="explain an LLM stream (asked of an edge: its learned token speeds, "
                        "streams in flight and prefix holders)")
    for flag, header in STREAM_FLAGS.items():
        p.add_argument("--" + flag.replace("_", "-"), default=None,
                       help=f"with --stream: as the {header} header (default: not sent, "
                            "as a stream without it)")
    p.add_argument("--prompt-tokens", type=int, default=256,
                   help="with --stream: prompt length in tokens (default 256)")
    p.add_argument("--edge", default="",
                   help="with --stream: edge id to ask (default: the first edge of --region)")


def edge_address(cfg: MeshConfig, edge_id: str, region: str) -> str:
    edges = [e for e in cfg.edges if (e.id == edge_id if edge_id else
                                      not region or e.region == region)]
    if not edges:
        known = [f"{e.id} ({e.region})" for e in cfg.edges]
        which = f"id {edge_id!r}" if edge_id else f"in region {region!r}"
        raise InvalidRequest(f"no edge {which} in the config (edges: {known})")
    return f"{edges[0].host}:{edges[0].port}"


def request(args: argparse.Namespace, parsed: ParsedHints) -> placement_pb2.ExplainRequest:
    """The ExplainRequest for the flags (stream flags checked as their headers)."""
    metadata = [(h, getattr(args, f)) for f, h in STREAM_FLAGS.items()
                if getattr(args, f) is not None]
    try:
        hints = parse_stream(metadata)
    except InvalidHint as exc:
        flag = next(f for f, h in STREAM_FLAGS.items() if h == exc.header)
        raise InvalidRequest(f"{exc.message} (flag --{flag.replace('_', '-')})") from exc
    req = placement_pb2.ExplainRequest(
        model=args.model, slo_ms=parsed.slo_ms or 0, min_quality=parsed.min_quality,
        allowed_regions=sorted(parsed.allowed_regions), profile=parsed.profile,
        stream=placement_pb2.StreamAsk(
            ttft_ms=hints.ttft_ms or 0, tpot_ms=hints.tpot_ms or 0,
            prompt_tokens=args.prompt_tokens, max_tokens=hints.max_tokens or 0,
            session_id=hints.session_id))
    if parsed.max_cost_usd != float("inf"):
        req.max_cost_usd = parsed.max_cost_usd
    return req


def rows(resp: placement_pb2.ExplainResponse) -> list[list[str]]:
    return [[("→ " if o.deployment_id == resp.chosen_deployment_id else "  ") + o.deployment_id,
             f"{o.ttft_ms:.1f}", f"{o.tpot_ms:.2f}" if o.measured else "-",
             f"{o.usd_per_1m_tokens:.4f}" if o.measured else "-",
             o.learned_from or "unmeasured",
             (f"holder ({o.cache_hit_tokens} cached)" if o.prefix_holder else "-"),
             f"{o.load}/{o.load_bound}", "yes" if o.feasible else "no", o.reason]
            for o in resp.stream_options]


TOKEN_HEADERS = ["deployment", "prefill ms/token", "TPOT ms (base + per stream × n)",
                 "$/1M input", "$/1M output"]


def token_section(t: Any) -> str:
    """``switchyard status``: what placement learned of a route table's deployments' LLM
    streams from every edge's reports (``Candidate.tokens``), or "" when no edge reported
    one. $/1M is what the edges observed ($ of the GPU time billed / tokens); "-" before any
    was billed."""
    rows = [[c.deployment_id, f"{c.tokens.prefill_ms_per_token:.3f}",
             f"{c.tokens.tpot_base_ms:.2f} + {c.tokens.tpot_per_stream_ms:.3f} × n",
             _usd(c.tokens.usd_per_1m_input), _usd(c.tokens.usd_per_1m_output)]
            for c in t.candidates if c.HasField("tokens")]
    if not rows:
        return ""
    return ("LLM streams: token speeds and prices placement learned from the edges' reports "
            "(the demo LLM's speeds are EMULATED)\n" + table(TOKEN_HEADERS, rows))


def _usd(v: float) -> str:
    return f"{v:.4f}" if v > 0 else "-"


def main(args: argparse.Namespace, cfg: MeshConfig, parsed: ParsedHints) -> int:
    address = edge_address(cfg, args.edge, args.region)
    with grpc.insecure_channel(address) as ch:
        resp = edge_pb2_grpc.EdgeAdminStub(ch).Explain(request(args, parsed), timeout=3)
    print(f"{resp.model} stream at edge {address} ({resp.edge_region}), "
          f"{args.prompt_tokens} prompt tokens, profile {resp.profile}: {resp.summary}\n")
    print(table(HEADERS, rows(resp)))
    print("\nTTFT/TPOT/$ are predictions from learned token speeds ('edge': this edge's own, "
          "'fleet': placement's, from every edge's reports); with the demo LLM the token "
          "speeds are EMULATED.")
    return 0
