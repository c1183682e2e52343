"""``switchyard explain``: why each deployment would or would not serve a call.

A unary call is asked of placement (``Placement.Explain``); an LLM stream (``--stream``) of an
edge (``services/stream_explain.py``), or with Envoy edges of the Python slow path beside each.
The flags are parsed by the edge's own hint parser, so what an edge refuses as a header, explain
refuses as a flag.
"""

from __future__ import annotations

import argparse
import math
import sys

from placement.errors import InvalidHint, InvalidRequest
from services.cli_help import EXPLAIN_FLAGS
from services.cli_placement import load_mesh, placement_stub
from services.config import MeshConfig
from services.edge.hints import ParsedHints


def explain_hints(args: argparse.Namespace, cfg: MeshConfig) -> ParsedHints:
    """The explain flags, parsed by the edge's own hint parser: what an edge would refuse as
    a header, explain refuses as a flag (the error names both)."""
    from placement.registry import PROFILES
    from services.edge import hints

    metadata = [(header, value) for flag, header in EXPLAIN_FLAGS.items()
                for value in getattr(args, flag) or ()]  # repeated flags = repeated headers
    try:
        return hints.parse(metadata, frozenset(r.name for r in cfg.regions), PROFILES)
    except InvalidHint as exc:
        flag = next(f for f, h in EXPLAIN_FLAGS.items() if h == exc.header)
        raise InvalidRequest(f"{exc.message} (flag --{flag.replace('_', '-')})") from exc


def cmd_explain(args: argparse.Namespace) -> int:
    from services.api.switchyard.v1 import placement_pb2
    from services.render import explain_rows, table

    cfg = load_mesh(args)
    regions = sorted(r.name for r in cfg.regions)
    if args.region and args.region not in regions:  # said here, whether placement runs or not
        raise InvalidRequest(f"--region {args.region!r} is not a region of {args.config}; "
                             f"known: {', '.join(regions)}")
    parsed = explain_hints(args, cfg)
    from services.stream_explain import STREAM_FLAGS

    stream_only = [f"--{f.replace('_', '-')}" for f in (*STREAM_FLAGS, "edge", "prompt_tokens")
                   if getattr(args, f) is not None and getattr(args, f) != ""]
    if stream_only and not args.stream:  # they were ignored: a unary call's answer instead
        raise InvalidRequest(f"{', '.join(stream_only)} describe an LLM stream: add --stream "
                             "(or drop them to explain a unary call, which placement answers)")
    if args.prompt_tokens is None:
        args.prompt_tokens = args.prompt_tokens_default
    if args.stream:  # an LLM stream: asked of an edge (services/stream_explain.py)
        from services import stream_explain

        edge = stream_explain.edge_address(cfg, args.edge, args.region)
        args.rpc_target = f"edge at {edge}"  # the stream is asked of an edge, not placement
        args.rpc_elsewhere = "name a running edge with --edge ID or --region"
        if cfg.edge.engine == "envoy":  # Envoy answers no EdgeAdmin: its slow path does
            cfg = envoy_slow_paths(cfg, args)
        return stream_explain.main(args, cfg, parsed)
    region = args.region or (cfg.edges[0].region if cfg.edges else cfg.regions[0].name)
    request = placement_pb2.ExplainRequest(
        model=args.model, edge_region=region, slo_ms=parsed.slo_ms or 0,
        min_quality=parsed.min_quality, allowed_regions=sorted(parsed.allowed_regions),
        profile=parsed.profile)
    if math.isfinite(parsed.max_cost_usd):
        request.max_cost_usd = parsed.max_cost_usd
    if cfg.placement.shards and not args.placement:  # any shard explains every shard's rows
        from services.up import answering_replica

        owner = next((i for i, s in enumerate(cfg.placement.shards) if region in s.regions), 0)
        args.placement = answering_replica(cfg, owner)
    resp = placement_stub(cfg, args).Explain(request, timeout=5)
    print(f"{resp.model} from {resp.edge_region}, SLO {resp.slo_ms:.0f} ms, profile "
          f"{resp.profile}: {resp.summary}\n")
    print(table(["deployment", "region", "quality", "p95 ms", "$/1k calls", "feasible", "why"],
                explain_rows(resp)))
    return 0


def envoy_slow_paths(cfg: MeshConfig, args: argparse.Namespace) -> MeshConfig:
    """``cfg`` with each Envoy edge's port replaced by its slow path's (the Python edge beside
    it, which answers ``EdgeAdmin.Explain``; Envoy answered UNIMPLEMENTED with no message), as
    its running bootstrap says (``<run_dir>/envoy/<id>.ads.json``, node metadata
    ``slow_path_port``: picked free when the edge starts, so in no config key)."""
    import json

    edges, missing = [], []
    for e in cfg.edges:
        bootstrap = cfg.path(cfg.run_dir) / "envoy" / f"{e.id}.ads.json"
        try:
            port = int(json.loads(bootstrap.read_text())["node"]["metadata"]["slow_path_port"])
        except (OSError, ValueError, KeyError, TypeError):
            missing.append(f"{e.id} ({bootstrap})")
            port = e.port  # asked as is: the edge's own answer says what is wrong
        edges.append(e.model_copy(update={"port": port}))
    print("Envoy edges ([edge] engine = \"envoy\"): asking each one's slow path, the Python "
          "edge beside it" + (f"; no running bootstrap for {', '.join(missing)}"
                              if missing else ""), file=sys.stderr)
    args.rpc_elsewhere = (f"start the mesh of {args.config}, or name a running edge with "
                          "--edge ID or --region")
    return cfg.model_copy(update={"edges": edges})

