#!/usr/bin/env bash
# Command 1 of the README: set up, start the embedded mesh, run the demo, keep serving.
# Pass --exit-after-demo to stop the mesh once the demo tables are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/switchyard up --demo "$@"
