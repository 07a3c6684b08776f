#!/usr/bin/env bash
# Configures and builds Cerebra in ./build (Release). Re-running rebuilds only what changed (ccache is used).
# With arguments, builds only those targets (e.g. `bash scripts/build.sh cerebra`: the command line alone, without
# the test and benchmark binaries); without, everything.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
if [ $# -eq 0 ]; then
  cmake --build "$BUILD_DIR" -j"$JOBS"
else
  for target in "$@"; do cmake --build "$BUILD_DIR" -j"$JOBS" --target "$target"; done
fi
