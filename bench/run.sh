#!/usr/bin/env bash
# Runs the micro benchmarks of tserve and of prometheus-cpp side by side, prints a table
# with the ratios, then runs the scrape load test (bench/scrape_load.sh).
#
# Usage: bash bench/run.sh BUILD_DIR      (`make bench` does this with build-bench)
# Environment: BENCH_MIN_TIME (seconds per repetition, default 0.1), BENCH_REPETITIONS
# (default 5; the table shows the median), BENCH_FILTER (regex of benchmark names),
# SKIP_SCRAPE_LOAD=1 to stop after the micro benchmarks.
#
# Each benchmark runs in its own process: glibc's malloc adapts its mmap threshold to the
# sizes freed before, so a render benchmark's cost depended on which benchmark ran
# before it (2 ms or 23 ms for the same 9,300-series scrape). A fresh process per
# benchmark is a fresh server scraped repeatedly at that size. The two libraries' runs of
# the same benchmark follow each other, so background load hits both alike.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
BUILD_DIR=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=/usr/bin/python3
MIN_TIME=${BENCH_MIN_TIME:-0.1}
REPS=${BENCH_REPETITIONS:-5}
FILTER=${BENCH_FILTER:-.}
OUT="$BUILD_DIR/bench-results"

TSERVE_BENCH="$BUILD_DIR/bench/metrics_bench"
PROM_BENCH="$BUILD_DIR/bench/prometheus_cpp_bench"
for b in "$TSERVE_BENCH" "$PROM_BENCH"; do
  if [[ ! -x "$b" ]]; then
    echo "missing $b: configure with -DTSERVE_BUILD_BENCHMARKS=ON and build first" >&2
    exit 1
  fi
done

rm -rf "$OUT"
mkdir -p "$OUT/tserve" "$OUT/prometheus-cpp"

echo "== micro benchmarks ($(nproc) CPUs, load average: $(cut -d' ' -f1-3 /proc/loadavg))"
echo "   min_time ${MIN_TIME}s x ${REPS} repetitions, one process per benchmark"
echo "   raw results: $OUT/{tserve,prometheus-cpp}/*.json, log: $OUT/console.log"

# Benchmark names of both binaries, tserve's order first, without duplicates.
mapfile -t NAMES < <({
  "$TSERVE_BENCH" --benchmark_list_tests=true --benchmark_filter="$FILTER" 2>/dev/null || true
  "$PROM_BENCH" --benchmark_list_tests=true --benchmark_filter="$FILTER" 2>/dev/null || true
} | awk '!seen[$0]++')

run_one() {  # binary, label, benchmark name, index
  local bin=$1 label=$2 name=$3 idx=$4
  # Only the registered name can match: anchor it (names hold only [A-Za-z0-9_/:]).
  local listed
  listed=$("$bin" --benchmark_list_tests=true --benchmark_filter="^${name}\$" 2>/dev/null || true)
  [[ -n "$listed" ]] || return 0
  "$bin" --benchmark_filter="^${name}\$" \
    --benchmark_min_time="$MIN_TIME" \
    --benchmark_repetitions="$REPS" \
    --benchmark_report_aggregates_only=true \
    --benchmark_out="$OUT/$label/$(printf '%02d' "$idx").json" \
    --benchmark_out_format=json >>"$OUT/console.log" 2>&1
}

i=0
for name in "${NAMES[@]}"; do
  i=$((i + 1))
  printf '   %-34s' "$name"
  run_one "$TSERVE_BENCH" tserve "$name" "$i"
  run_one "$PROM_BENCH" prometheus-cpp "$name" "$i"
  echo " done"
done

echo
"$PYTHON" "$HERE/report.py" "$OUT"

if [[ "${SKIP_SCRAPE_LOAD:-0}" != 1 ]]; then
  echo
  if [[ -z "${TSERVE_BINARY:-}" ]]; then
    TSERVE_BINARY=$BUILD_DIR/tserve
    [[ -x "$TSERVE_BINARY" ]] || TSERVE_BINARY=$HERE/../build/tserve
  fi
  bash "$HERE/scrape_load.sh" "$TSERVE_BINARY"
fi
