#!/usr/bin/env bash
# Builds the libFuzzer targets in a clang build directory and runs each, one at a time, over a
# scratch copy of its seed corpus (tests/fuzz/corpus/<target>, so the repository stays clean)
# for a set time.
#   tests/fuzz/run.sh [-b BUILD_DIR] [-t SECONDS] [target...]
# BUILD_DIR defaults to build-fuzz, SECONDS to $FUZZ_SECONDS or 600. Scratch corpora and
# logs are kept in BUILD_DIR/fuzz-work/<target>/ (a longer run continues from them); a crash,
# leak or timeout leaves its input there as crash-*/leak-*/timeout-* and makes the script
# exit 1 after the other targets ran. FUZZ_JOBS (default 2) is the build's parallelism.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=build-fuzz
seconds=${FUZZ_SECONDS:-600}
while getopts "b:t:" opt; do
  case $opt in
    b) build=$OPTARG ;;
    t) seconds=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
case $build in /*) ;; *) build=$root/$build ;; esac

if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DTSERVE_WITH_TORCH=OFF -DTSERVE_BUILD_TESTS=OFF -DTSERVE_BUILD_FUZZERS=ON >/dev/null || exit 1
fi
cmake --build "$build" -j "${FUZZ_JOBS:-2}" --target fuzzers || exit 1

declare -A max_len
targets=()
while read -r name len; do
  case $name in '' | '#'*) continue ;; esac
  max_len[$name]=$len
  targets+=("$name")
done <"$here/targets.txt"
[ $# -gt 0 ] && targets=("$@")

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
for t in "${targets[@]}"; do
  work=$build/fuzz-work/$t
  mkdir -p "$work/corpus" "$work/tmp"
  cp -r "$here/corpus/$t/." "$work/corpus/"
  start=$(date +%s)
  TMPDIR=$work/tmp "$build/fuzz/$t" -max_total_time="$seconds" -max_len="${max_len[$t]:-4096}" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/" \
    "$work/corpus" >"$work/log" 2>&1
  rc=$?
  rm -rf "$work/tmp"
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log" | grep -o '[0-9]*$')
  cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -1)
  printf '%-20s rc=%d %4ss runs=%s %s corpus=%s\n' "$t" "$rc" "$(($(date +%s) - start))" \
    "${runs:-?}" "${cov:-}" "$(ls "$work/corpus" | wc -l)"
  if [ $rc -ne 0 ]; then
    failed+=("$t")
    grep -E 'ERROR|SUMMARY|fuzz invariant|#[0-9]+ 0x' "$work/log" | head -30
    echo "  full log: $work/log; input: $(ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* 2>/dev/null | head -1)"
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz targets that failed: ${failed[*]}"
  exit 1
fi
