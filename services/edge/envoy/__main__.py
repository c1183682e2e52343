"""``python -m services.edge.envoy --config mesh.toml --id EDGE``: run one edge as Envoy.

Its per-call filter is the C dynamic module (native/build.sh) where it loads, else the Lua:
[edge] envoy_filters = "auto" (default) | "module" (refuse to start without it) | "lua"."""

from __future__ import annotations

import argparse
import os
import sys

from placement.errors import SwitchyardError
from services.config import load_config
from services.edge.envoy.launcher import run_edge


def main(argv: list[str] | None = None) -> int:
    """Run the edge until stopped; an operator's mistake (a config that does not load, an
    ``--id`` the config has no edge for, Envoy that cannot start) is one line, exit 2."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example:\n  python -m services.edge.envoy --config "
                                        "examples/mesh.toml --id edge-us-east")
    ap.add_argument("--config", required=True,
                    help="the mesh file (TOML) naming this edge under [[edges]]")
    ap.add_argument("--id", required=True, help="edge id from the config's [[edges]]")
    ap.add_argument("--placement", default="",
                    help="placement replicas host:port,… for Envoy's ADS cluster and the slow "
                         "path (default: from the config; a DNS name resolves in Envoy)")
    ap.add_argument("--concurrency", type=int, default=None,
                    help="Envoy worker threads (default: Envoy's, one per core of the machine)")
    args = ap.parse_args(argv)
    try:
        run_edge(load_config(args.config, dict(os.environ)), args.id,
                 args.placement.split(",") if args.placement else None, args.concurrency,
                 reload=lambda: load_config(args.config, dict(os.environ)))
    except SwitchyardError as exc:
        print(f"switchyard edge (envoy): {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
