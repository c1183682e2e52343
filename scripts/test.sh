#!/usr/bin/env bash
# Command 2 of the README: set up, check generated code and lint, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check placement services tests benchmarks scripts
.venv/bin/mypy  # packages and overrides: pyproject.toml [tool.mypy]
.venv/bin/python -m pytest -q --durations=25 --cov --cov-branch --cov-report=term:skip-covered "$@"
