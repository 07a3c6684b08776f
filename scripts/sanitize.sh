#!/usr/bin/env bash
# Builds the whole test suite with AddressSanitizer + UndefinedBehaviorSanitizer in ./build-asan
# (-DCEREBRA_SANITIZE=ON) and runs it under CTest. Any sanitizer report fails the test that produced it.
#   bash scripts/sanitize.sh                 # configure, build, run every test
#   bash scripts/sanitize.sh -R Csv          # extra arguments go to ctest
# Environment: BUILD_DIR (default build-asan), JOBS (default nproc), CXX (default the system c++),
# BUILD_WRAPPER (a command prefix for the build step, e.g. "flock /tmp/build.lock").
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-asan}
JOBS=${JOBS:-$(nproc)}
# -O1: ASan's recommended level, and quicker to build than Release's -O3.
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" -DCEREBRA_SANITIZE=ON >/dev/null
${BUILD_WRAPPER:-} cmake --build "$BUILD_DIR" -j"$JOBS" --target cerebra_tests cerebra

# ASan: every error stops the process (the default). detect_leaks=0: LibTorch and OpenBLAS keep process-lifetime
# allocations (thread pools, registries, allocator caches) that LeakSanitizer reports at exit as leaks, and the
# tests run the CLI as child processes that exit through std::exit with such state alive; leak reports would be
# about them, not about this code.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=0}
# UBSan: the first report aborts the process, so the test that triggered it fails; stack traces for the report.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1}
cd "$BUILD_DIR"
start=$(date +%s)
ctest --output-on-failure --timeout 1800 "$@"
echo "sanitize.sh: ctest finished in $(( $(date +%s) - start )) s"
