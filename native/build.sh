#!/usr/bin/env bash
# Build native/build/libswitchyard_edge.so, the Envoy dynamic module (native/switchyard_edge.c):
# the listener and upstream Lua filters' work in C, an experiment measured by
# benchmarks.envoy_filters (placement still pushes the Lua filters). Needs gcc; without it,
# says so and exits 0 (the module's tests then fail, naming the missing library).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v gcc >/dev/null 2>&1; then
  echo "[native] gcc not found: the Envoy dynamic module is not built; Envoy edges use the Lua filters"
  exit 0
fi
mkdir -p build
gcc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -fPIC -shared \
    -fvisibility=hidden -o build/libswitchyard_edge.so.tmp switchyard_edge.c response.c rules.c -lm
mv build/libswitchyard_edge.so.tmp build/libswitchyard_edge.so
echo "[native] built native/build/libswitchyard_edge.so"
