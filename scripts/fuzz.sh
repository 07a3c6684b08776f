#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang, ASan + UBSan, -DCEREBRA_FUZZ=ON) in ./build-fuzz and runs each for a
# given time or number of executions, then prints executions and coverage (libFuzzer's cov: edges, ft: features).
#   bash scripts/fuzz.sh -t 600                      # every target for 600 s
#   bash scripts/fuzz.sh -n 1000000 fuzz_csv         # one target, 1,000,000 executions
#   bash scripts/fuzz.sh -n 1000 -j 2                # two targets at a time
# Seeds: fuzz/corpus/<target>/ (in git). Inputs found to add coverage go to build-fuzz/corpus/<target>/, crashes,
# hangs and sanitizer reports to build-fuzz/artifacts/<target>/ (reproduce: build-fuzz/fuzz/<target> FILE), logs
# to build-fuzz/logs/<target>.log. The exit status is non-zero when a target found something.
# Environment: CXX (default clang++), BUILD_WRAPPER (a command prefix for the build step), FUZZ_FLAGS (more
# libFuzzer flags), SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ALL_TARGETS=(fuzz_csv fuzz_config fuzz_cli fuzz_checkpoint fuzz_run_dir)
limit=(-max_total_time=60)
parallel=1
while getopts "t:n:j:h" opt; do
  case $opt in
    t) limit=(-max_total_time="$OPTARG") ;;
    n) limit=(-runs="$OPTARG") ;;
    j) parallel=$OPTARG ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")

BUILD_DIR=${BUILD_DIR:-build-fuzz}
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  # -O1 with assertions on (no NDEBUG): what libFuzzer recommends, and quicker to build.
  CC=${CC:-clang} CXX=${CXX:-clang++} cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DCEREBRA_FUZZ=ON \
    -DCMAKE_CXX_FLAGS_RELEASE=-O1 >/dev/null
  ${BUILD_WRAPPER:-} cmake --build "$BUILD_DIR" -j"${JOBS:-$(nproc)}" --target "${targets[@]}"
fi

# ASan and UBSan reports abort the input (libFuzzer saves it as a crash). Leak checking stays on: libFuzzer
# reports an input whose allocations outlive it.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1}

run_target() {
  local t=$1
  local work="$BUILD_DIR/corpus/$t" art="$BUILD_DIR/artifacts/$t/" log="$BUILD_DIR/logs/$t.log"
  mkdir -p "$work" "$art" "$(dirname "$log")"
  local extra=()
  # LibTorch's archive reader leaks its zip state (miniz, ~15 KB) each time it rejects a malformed file: the reader's
  # constructor throws before anything owns that state. The leak is inside libtorch_cpu, not in this code; the
  # archive check (src/core/archive_check.cpp) now refuses damaged files before LibTorch opens them, but an archive
  # that passes it may still be one LibTorch refuses, so leak checking stays off for the two targets that hand files
  # to LibTorch. A crash in them is a finding like any other (no fork mode).
  local asan=$ASAN_OPTIONS
  case $t in fuzz_checkpoint|fuzz_run_dir) extra=(-detect_leaks=0); asan=$asan:detect_leaks=0 ;; esac
  # -timeout: an input running longer than 10 s is a hang; -rss_limit_mb: LibTorch's targets need more than the
  # 2 GiB default headroom under ASan.
  ASAN_OPTIONS=$asan "$BUILD_DIR/fuzz/$t" "$work" "fuzz/corpus/$t" "${limit[@]}" -timeout=10 -rss_limit_mb=6144 -print_final_stats=1 \
    -artifact_prefix="$art" "${extra[@]}" ${FUZZ_FLAGS:-} >"$log" 2>&1
}

status=0
pids=()
for t in "${targets[@]}"; do
  run_target "$t" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$parallel" ]; then
    wait "${pids[0]}" || true
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || true; done

printf '%-16s %12s %8s %8s %10s  %s\n' target executions cov ft seconds result
for t in "${targets[@]}"; do
  log="$BUILD_DIR/logs/$t.log"
  runs=$( (grep -o 'stat::number_of_executed_units: [0-9]*' "$log" || true) | awk '{print $2}' | tail -1)
  secs=$( (grep -o 'Done [0-9]* runs in [0-9]* second' "$log" || true) | awk '{print $5}' | tail -1)
  last=$( (grep -E '^#[0-9]+' "$log" || true) | tail -1)
  cov=$( (echo "$last" | grep -o 'cov: [0-9]*' || true) | awk '{print $2}')
  ft=$( (echo "$last" | grep -o 'ft: [0-9]*' || true) | awk '{print $2}')
  if [ -z "$runs" ]; then  # fork mode (FUZZ_FLAGS=-fork=N): "#RUNS: cov: C ft: F ... oom/timeout/crash: O/T/C time: S"
    runs=$( (echo "$last" | grep -o '^#[0-9]*' || true) | tr -d '#')
    secs=$( (echo "$last" | grep -o ' time: [0-9]*' || true) | awk '{print $2}')
    crashes=$( (echo "$last" | grep -o 'oom/timeout/crash: [0-9/]*' || true) | awk '{print $2}')
    [ -z "$crashes" ] || [ "$crashes" = 0/0/0 ] || { echo "$t: oom/timeout/crash $crashes (fork mode; see $log)"; status=1; }
  fi
  if grep -qE 'ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error:|SUMMARY: |deadly signal|Test unit written' "$log"; then
    result="FOUND: $(grep -m1 -E 'ERROR:|runtime error:|deadly signal' "$log" | cut -c1-100) (see $log)"
    status=1
  else
    result=ok
  fi
  printf '%-16s %12s %8s %8s %10s  %s\n' "$t" "${runs:-?}" "${cov:-?}" "${ft:-?}" "${secs:-?}" "$result"
done
exit $status
