#!/usr/bin/env bash
# Runs the micro benchmarks of tserve and of prometheus-cpp side by side, prints a table
# with the ratios, then runs the scrape load test (bench/scrape_load.sh), then the serving
# benchmarks: noop under wrk against a minimal Beast server (bench/serving_load.sh), the
# per-request recording cost against that peak (serving_bench, bench/serving_report.py),
# and resnet18 through tserve against a raw LibTorch loop (bench/resnet_load.sh); last, the
# start-up cost with an empty model store (bench/startup.py).
#
# Usage: bash bench/run.sh BUILD_DIR      (`make bench` does this with build-bench)
# Environment: BENCH_MIN_TIME (seconds per repetition, default 0.1), BENCH_REPETITIONS
# (default 5; the table shows the median), BENCH_FILTER (regex of the metrics benchmarks'
# names). Parts can be skipped: SKIP_METRICS_BENCH=1 (the metrics micro benchmarks),
# SKIP_SCRAPE_LOAD=1, SKIP_SERVING_LOAD=1, SKIP_SERVING_BENCH=1, SKIP_RESNET=1; SKIP_SERVING=1
# skips those three; SKIP_STARTUP=1 skips the start-up cost (bench/startup.py;
# STARTUP_BASELINE=BIN measures another tserve beside it). A failed check in a load test does not stop the later parts; the
# exit status is then 1.
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

SKIP_SERVING=${SKIP_SERVING:-0}
SKIP_METRICS_BENCH=${SKIP_METRICS_BENCH:-0}
SKIP_SCRAPE_LOAD=${SKIP_SCRAPE_LOAD:-0}
SKIP_SERVING_LOAD=${SKIP_SERVING_LOAD:-$SKIP_SERVING}
SKIP_SERVING_BENCH=${SKIP_SERVING_BENCH:-$SKIP_SERVING}
SKIP_RESNET=${SKIP_RESNET:-$SKIP_SERVING}
SKIP_STARTUP=${SKIP_STARTUP:-0}
STARTUP_BASELINE=${STARTUP_BASELINE:-}

TSERVE_BENCH="$BUILD_DIR/bench/metrics_bench"
PROM_BENCH="$BUILD_DIR/bench/prometheus_cpp_bench"
for b in "$TSERVE_BENCH" "$PROM_BENCH" "$BUILD_DIR/bench/serving_bench" \
  "$BUILD_DIR/bench/hello_server"; do
  if [[ ! -x "$b" ]]; then
    echo "missing $b: configure with -DTSERVE_BUILD_BENCHMARKS=ON and build first" >&2
    exit 1
  fi
done

rm -rf "$OUT"
mkdir -p "$OUT"
status=0
start_time=$SECONDS

if [[ "$SKIP_METRICS_BENCH" != 1 ]]; then
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
fi

if [[ "$SKIP_SCRAPE_LOAD" != 1 ]]; then
  echo
  if [[ -z "${TSERVE_BINARY:-}" ]]; then
    TSERVE_BINARY=$BUILD_DIR/tserve
    [[ -x "$TSERVE_BINARY" ]] || TSERVE_BINARY=$HERE/../build/tserve
  fi
  bash "$HERE/scrape_load.sh" "$TSERVE_BINARY" || status=1
fi

if [[ "$SKIP_SERVING_LOAD" != 1 ]]; then
  echo
  SERVING_RESULTS="$OUT/serving_load.json" bash "$HERE/serving_load.sh" "$BUILD_DIR" || status=1
fi

if [[ "$SKIP_SERVING_BENCH" != 1 ]]; then
  echo
  echo "== per-request recording cost (serving_bench, min_time ${MIN_TIME}s x ${REPS} repetitions)"
  "$BUILD_DIR/bench/serving_bench" --benchmark_min_time="$MIN_TIME" \
    --benchmark_repetitions="$REPS" --benchmark_report_aggregates_only=true \
    --benchmark_out="$OUT/serving_bench.json" --benchmark_out_format=json \
    >>"$OUT/console.log" 2>&1 || status=1
  if [[ -f "$OUT/serving_load.json" ]]; then
    "$PYTHON" "$HERE/serving_report.py" "$OUT/serving_bench.json" "$OUT/serving_load.json"
  else
    "$PYTHON" "$HERE/serving_report.py" "$OUT/serving_bench.json"
  fi
fi

if [[ "$SKIP_RESNET" != 1 ]]; then
  echo
  RESNET_RESULTS="$OUT/resnet.json" bash "$HERE/resnet_load.sh" "$BUILD_DIR" || status=1
fi

if [[ "$SKIP_STARTUP" != 1 ]]; then
  echo
  echo "== start-up with an empty model store (bench/startup.py${STARTUP_BASELINE:+, against $STARTUP_BASELINE})"
  "$PYTHON" "$HERE/startup.py" --binary "$BUILD_DIR/tserve" \
    ${STARTUP_BASELINE:+--baseline "$STARTUP_BASELINE"} --runs 15 --resnet-seconds 0 \
    --json "$OUT/startup.json" || status=1
fi

echo
echo "== bench/run.sh took $((SECONDS - start_time)) s; results in $OUT"
exit $status
