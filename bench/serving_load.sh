#!/usr/bin/env bash
# Serving load test: tserve's inference path against its ceiling, side by side in one run.
# Starts bench/hello_server (a minimal Beast server with tserve's threading model, as many
# I/O threads as CPUs) and tserve (noop model, once per worker count in $SERVING_WORKERS) on
# free 127.0.0.1 ports and drives each with `wrk -t2 -c64 -d10s -s bench/post.lua` (a POST
# with a 37-byte JSON body) on /predictions/noop. Order: ceiling, tserve per worker count,
# ceiling again (the ceiling is the mean of its two runs, so load that changes during the
# run shows up as a gap between them). Prints req/s, p50/p99, the server's CPU use, and
# tserve/ceiling.
#
# Checks, per tserve run: ts_inference_requests_total{model_name="noop"} grew by the
# requests wrk completed plus those in flight when wrk stopped (0..connections: tserve
# counts a request on arrival, wrk only once its response is read); every counted request
# finished (ts_request_duration_seconds_count equals it); 2,000 POSTs on one keep-alive
# connection grow the counter by exactly 2,000; tserve exits 0 on SIGTERM. A difference is
# reported, never hidden; any failed check makes the exit status 1.
#
# Usage: bash bench/serving_load.sh [BUILD_DIR]   (default build-bench; needs BUILD_DIR/tserve,
#        BUILD_DIR/tserve-archiver and BUILD_DIR/bench/hello_server)
# Environment: WRK_DURATION (10s), WRK_THREADS (2), SERVING_CONNECTIONS (64),
# SERVING_WORKERS ("1 2"), SERVING_RESULTS (write a JSON summary there, for bench/run.sh),
# TSERVE_BINARY (another tserve).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PYTHON=/usr/bin/python3
BUILD_DIR=$(cd "${1:-$ROOT/build-bench}" && pwd)
TSERVE=${TSERVE_BINARY:-$BUILD_DIR/tserve}
HELLO=$BUILD_DIR/bench/hello_server
ARCHIVER=$BUILD_DIR/tserve-archiver
WRK_DURATION=${WRK_DURATION:-10s}
WRK_THREADS=${WRK_THREADS:-2}
CONNS=${SERVING_CONNECTIONS:-64}
read -r -a WORKER_COUNTS <<<"${SERVING_WORKERS:-1 2}"
RESULTS=${SERVING_RESULTS:-}

for tool in wrk curl; do
  command -v "$tool" >/dev/null || { echo "serving_load: $tool is not installed (make deps)" >&2; exit 1; }
done
for f in "$TSERVE" "$HELLO" "$ARCHIVER"; do
  [[ -x "$f" ]] || { echo "serving_load: missing $f (make bench builds it)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/tserve-serving-load.XXXXXX)
# shellcheck source=bench/serving_common.sh
source "$HERE/serving_common.sh"
HELLO_PID=""
cleanup() {
  stop_all_servers
  if [[ -n "$HELLO_PID" ]]; then
    kill -TERM "$HELLO_PID" 2>/dev/null || true
    wait "$HELLO_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== serving load: tserve (noop) against the ceiling (hello_server), $(nproc) CPUs," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "   tserve: $TSERVE"

# The noop archive, built here so that no model store is needed.
mkdir -p "$WORK/store"
printf 'batchSize: 1\n' >"$WORK/model-config.yaml"
"$ARCHIVER" --model-name noop --version 1.0 --handler noop --config-file "$WORK/model-config.yaml" \
  --export-path "$WORK/store" --force >/dev/null

failed=0

run_ceiling() {  # result file
  read -r port < <(free_ports 1)
  "$HELLO" "$port" >"$WORK/hello.out" 2>&1 &
  HELLO_PID=$!
  for _ in $(seq 100); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -d x "http://127.0.0.1:$port/") == 200 ]] && break
    sleep 0.05
  done
  echo
  MEASURE_PID=$HELLO_PID run_wrk "ceiling: hello_server ($(nproc) threads)" "$1" "$CONNS" \
    "http://127.0.0.1:$port/predictions/noop"
  kill -TERM "$HELLO_PID"
  wait "$HELLO_PID" || true
  HELLO_PID=""
}

run_tserve() {  # workers
  local workers=$1 name="tserve-w$1"
  local inf mgmt met
  read -r inf mgmt met < <(free_ports 3)
  cat >"$WORK/$name.properties" <<EOF
inference_address=http://127.0.0.1:$inf
management_address=http://127.0.0.1:$mgmt
metrics_address=http://127.0.0.1:$met
model_store=$WORK/store
load_models=noop.mar
default_workers_per_model=$workers
log_location=$WORK/logs-$name
EOF
  echo
  start_tserve "$TSERVE" "$name" "$inf" 60 || { failed=1; return 0; }
  local metrics_url="http://127.0.0.1:$met/metrics"
  curl -s --max-time 5 "$metrics_url" >"$WORK/before.txt"
  local before
  before=$(metric_sum "$WORK/before.txt" ts_inference_requests_total 'model_name="noop"')
  MEASURE_PID=$TS_PID run_wrk "tserve, noop, $workers worker(s), $(nproc) I/O threads" \
    "$WORK/$name.json" "$CONNS" "http://127.0.0.1:$inf/predictions/noop"
  sleep 1  # let the requests wrk left in flight finish
  curl -s --max-time 5 "$metrics_url" >"$WORK/after.txt"
  local total finished failures wrk_requests
  total=$(metric_sum "$WORK/after.txt" ts_inference_requests_total 'model_name="noop"')
  finished=$(metric_sum "$WORK/after.txt" ts_request_duration_seconds_count 'model_name="noop"')
  failures=$(metric_sum "$WORK/after.txt" ts_inference_failures_total 'model_name="noop"')
  wrk_requests=$("$PYTHON" -c "import json; print(json.load(open('$WORK/$name.json'))['requests'])")
  local diff=$((total - before - wrk_requests))
  echo "   check: ts_inference_requests_total{model_name=\"noop\"} = $total (was $before);" \
    "wrk completed $wrk_requests"
  if ((diff == 0)); then
    echo "   check: counted = wrk completed, exactly"
  elif ((diff > 0 && diff <= CONNS)); then
    echo "   check: counted - wrk completed = $diff: requests in flight when wrk stopped" \
      "(tserve counts on arrival; wrk left at most $CONNS unanswered)"
  else
    echo "   MISMATCH: counted - wrk completed = $diff, outside the in-flight bound 0..$CONNS"
    failed=1
  fi
  if [[ "$finished" == "$total" && "$failures" == 0 ]]; then
    echo "   check: ts_request_duration_seconds_count = $finished: every counted request finished, 0 failures"
  else
    echo "   MISMATCH: ts_request_duration_seconds_count = $finished against $total counted;" \
      "ts_inference_failures_total = $failures"
    failed=1
  fi
  "$PYTHON" - "$inf" "$met" <<'EOF' || failed=1
import http.client, re, sys
inf, met = int(sys.argv[1]), int(sys.argv[2])
pattern = re.compile(r'^ts_inference_requests_total\{[^}]*model_name="noop"[^}]*\} (\S+)$', re.M)

def counted():
    c = http.client.HTTPConnection("127.0.0.1", met, timeout=5)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    return sum(float(v) for v in pattern.findall(text))

n = 2000
before = counted()
c = http.client.HTTPConnection("127.0.0.1", inf, timeout=10)
for i in range(n):
    c.request("POST", "/predictions/noop", body=b'{"i": %d}' % i,
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
c.close()
got = counted() - before
ok = got == n
print(f"   check: {n} POSTs on one keep-alive connection; the counter grew by {got:.0f}: "
      f"{'exact' if ok else 'MISMATCH'}")
sys.exit(0 if ok else 1)
EOF
  local rc=0
  stop_server "$TS_PID" || rc=$?
  SERVER_PIDS=()
  echo "   check: tserve exited with status $rc on SIGTERM"
  ((rc == 0)) || failed=1
}

run_ceiling "$WORK/ceiling-1.json"
for w in "${WORKER_COUNTS[@]}"; do run_tserve "$w"; done
run_ceiling "$WORK/ceiling-2.json"

echo
"$PYTHON" - "$WORK" "$CONNS" "${RESULTS:-}" "${WORKER_COUNTS[@]}" <<'EOF'
import json, os, sys
work, conns, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
workers = sys.argv[4:]
load = lambda p: json.load(open(os.path.join(work, p))) if os.path.exists(os.path.join(work, p)) else None
c1, c2 = load("ceiling-1.json"), load("ceiling-2.json")
ceiling = (c1["req_per_s"] + c2["req_per_s"]) / 2
runs = {w: load(f"tserve-w{w}.json") for w in workers}
runs = {w: r for w, r in runs.items() if r is not None}
best = max(runs, key=lambda w: runs[w]["req_per_s"]) if runs else None

def row(label, r, ratio):
    return (f"| {label} | {r['req_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['server_cores']:.2f} | {r['server_cpu_s'] / r['requests'] * 1e6:.1f} | {ratio} |")

print(f"Serving load, wrk -c{conns}: tserve/ceiling against the mean of the two ceiling runs")
print("| server | req/s | p50 ms | p99 ms | server CPU (cores) | server CPU µs/req | tserve/ceiling |")
print("|---|---:|---:|---:|---:|---:|---:|")
print(row("ceiling (hello_server), before", c1, ""))
for w, r in runs.items():
    ratio = r["req_per_s"] / ceiling
    verdict = "met" if ratio >= 0.5 else "**missed**"
    print(row(f"tserve noop, {w} worker{'s' if w != '1' else ''}", r, f"{ratio:.2f} (goal ≥ 0.5: {verdict})"))
print(row("ceiling (hello_server), after", c2, ""))
print(f"ceiling: mean {ceiling:,.0f} req/s (runs differ by {abs(c1['req_per_s'] - c2['req_per_s']) / ceiling:.0%})")
if best is not None:
    print(f"best tserve: {best} worker(s), {runs[best]['req_per_s']:,.0f} req/s = "
          f"{runs[best]['req_per_s'] / ceiling:.2f} x the ceiling")
if out:
    json.dump({"ceiling_runs": [c1, c2], "ceiling_req_per_s": ceiling, "tserve": runs,
               "best_workers": best, "connections": conns, "cpus": os.cpu_count()},
              open(out, "w"), indent=1)
EOF
exit $failed
