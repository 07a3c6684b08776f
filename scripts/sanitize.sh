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

# ASan: every error stops the process (the default). detect_leaks=0: LibTorch's archive reader leaks its zip state
# (about 15 KB, allocated inside libtorch_cpu) each time it rejects a malformed file, and tests hand it such files
# on purpose (damaged checkpoints must give a clear error); LeakSanitizer would fail those tests for LibTorch's leak.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
# UBSan: the first report aborts the process, so the test that triggered it fails; stack traces for the report.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1}
# Left out: the SentencePiece tests. libcerebra_spm.so must be loaded with RTLD_DEEPBIND (its protobuf clashes
# with LibTorch's, src/data/sentencepiece_shim.cpp), and the sanitizer runtime refuses RTLD_DEEPBIND outright
# (it stops the process: google/sanitizers issue 611).
cd "$BUILD_DIR"
start=$(date +%s)
ctest --output-on-failure --timeout 1800 -E '^TextTokenizer\.' "$@"
echo "sanitize.sh: ctest finished in $(( $(date +%s) - start )) s"
