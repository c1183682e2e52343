"""``python -m services.backends --config mesh.toml --backend ID``: run one backend's Triton.

Writes the backend's model repository under ``<run_dir>/backends/<ID>/`` and then *execs*
tritonserver, so the pid the caller holds is the real server (drills SIGKILL it).
"""

from __future__ import annotations

import argparse
import os
import sys

from placement.errors import ConfigError, SwitchyardError
from services import logs
from services.backends.triton import exec_backend
from services.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.backends", description=__doc__)
    parser.add_argument("--config", required=True, help="mesh TOML file")
    parser.add_argument("--backend", required=True, help="backend id from the config")
    parser.add_argument("--instances", type=int, default=1, help="Triton instances per variant")
    args = parser.parse_args(argv)
    logs.configure()
    try:
        cfg = load_config(args.config, env=dict(os.environ))
        backend = next((b for b in cfg.backends if b.id == args.backend), None)
        if backend is None:
            raise ConfigError(
                f"--backend {args.backend!r} is not in backends {[b.id for b in cfg.backends]}"
            )
        exec_backend(cfg, backend, instances=args.instances)  # returns only on failure
    except SwitchyardError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
