#!/usr/bin/env bash
# Set up Switchyard on a fresh Debian machine: system packages, a virtualenv made from
# Debian's /usr/bin/python3.11 (Triton's Python backend stub links the system libpython3.11),
# the project and its dev dependencies. Idempotent; safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/bin/python3.11 ] || need_apt+=(python3.11)
/usr/bin/python3.11 -c "import venv, ensurepip" 2>/dev/null || need_apt+=(python3.11-venv)
[ -e /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0 ] || [ -e /usr/lib/aarch64-linux-gnu/libpython3.11.so.1.0 ] || need_apt+=(libpython3.11)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[bootstrap] installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; assert sys.base_prefix == "/usr"' 2>/dev/null; then
  echo "[bootstrap] creating .venv from /usr/bin/python3.11"
  rm -rf .venv
  /usr/bin/python3.11 -m venv .venv
fi
echo "[bootstrap] installing switchyard and its dependencies into .venv"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
native/build.sh  # the Envoy edge's C dynamic module (skipped, with a message, without gcc)
echo "[bootstrap] checking generated code is current"
.venv/bin/python -m scripts.gen_protos --check
echo "[bootstrap] done: .venv/bin/switchyard is ready"
