"""``python -m services.edge.envoy --config mesh.toml --id EDGE``: run one edge as Envoy.

Its per-call filter is the C dynamic module (native/build.sh) where it loads, else the Lua:
[edge] envoy_filters = "auto" (default) | "module" (refuse to start without it) | "lua"."""

from __future__ import annotations

import argparse
import os

from services.config import load_config
from services.edge.envoy.launcher import run_edge


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", required=True)
    ap.add_argument("--id", required=True, help="edge id from the config's [[edges]]")
    ap.add_argument("--placement", default="",
                    help="placement replicas host:port,… for Envoy's ADS cluster and the slow "
                         "path (default: from the config; a DNS name resolves in Envoy)")
    ap.add_argument("--concurrency", type=int, default=None,
                    help="Envoy worker threads (default: Envoy's, one per core of the machine)")
    args = ap.parse_args()
    run_edge(load_config(args.config, dict(os.environ)), args.id,
             args.placement.split(",") if args.placement else None, args.concurrency,
             reload=lambda: load_config(args.config, dict(os.environ)))


if __name__ == "__main__":
    main()
