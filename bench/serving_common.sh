# shellcheck shell=bash
# Helpers shared by bench/serving_load.sh and bench/resnet_load.sh (sourced, not run).
# They expect: set -euo pipefail, $PYTHON, $HERE (bench/), $WORK (a scratch folder whose
# removal the caller arranges), and they keep the servers they start in SERVER_PIDS so that
# stop_all_servers (called from the caller's EXIT trap) ends them.

SERVER_PIDS=()

# free_ports N: N distinct free loopback ports (bound to port 0 together, then released).
free_ports() {
  "$PYTHON" - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
EOF
}

# stop_server PID: SIGTERM, up to 15 s, then SIGKILL. Prints tserve's exit status.
stop_server() {
  local pid=$1 rc=0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "   (pid $pid still running 15 s after SIGTERM: killed)"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || rc=$?
  return $rc
}

stop_all_servers() {
  local pid
  for pid in "${SERVER_PIDS[@]}"; do stop_server "$pid" || true; done
  SERVER_PIDS=()
}

# start_tserve BIN NAME: starts tserve with $WORK/NAME.properties (written by the caller),
# output in $WORK/NAME.out; sets TS_PID. Waits up to $2 s (default 120) for GET /ping to be
# Healthy on the inference port given as $3. Returns 1 (and shows the output) if not.
start_tserve() {
  local bin=$1 name=$2 port=$3 timeout=${4:-120}
  TSERVE_PID_FILE="$WORK/$name.pid" LOG_LOCATION="$WORK/logs-$name" "$bin" --start --foreground \
    --ts-config "$WORK/$name.properties" >"$WORK/$name.out" 2>&1 &
  TS_PID=$!
  SERVER_PIDS+=("$TS_PID")
  local deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$TS_PID" 2>/dev/null; then break; fi
    if curl -s --max-time 2 "http://127.0.0.1:$port/ping" 2>/dev/null | grep -q Healthy; then
      return 0
    fi
    sleep 0.2
  done
  echo "tserve ($name) was not healthy within ${timeout} s; its output:" >&2
  tail -n 30 "$WORK/$name.out" >&2
  return 1
}

# machine_busy_seconds: CPU time all CPUs spent busy since boot (not idle, not iowait), in
# seconds, from /proc/stat.
machine_busy_seconds() {
  "$PYTHON" - <<'EOF'
import os
v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
print((sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK"))
EOF
}

# cpu_seconds PID: user + system CPU time the process has used so far, in seconds.
cpu_seconds() {
  "$PYTHON" - "$1" <<'EOF'
import os, sys
fields = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
print((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
EOF
}

# run_wrk LABEL RESULT_JSON CONNECTIONS URL [wrk args...]: runs wrk with bench/post.lua
# (POST; $WRK_BODY_FILE / $WRK_CONTENT_TYPE choose the body), measures the CPU time of
# $MEASURE_PID (when set) over the run, prints a summary and writes RESULT_JSON with
# requests, seconds, req_per_s, p50/p90/p99/max in ms, errors, server_cores (the measured
# process's CPU time / wall time) and machine_cores (all CPUs' busy time / wall time: the
# server, wrk, and anything else running).
run_wrk() {
  local label=$1 out=$2 conns=$3 url=$4
  shift 4
  local cpu0=0 cpu1=0 busy0 busy1
  echo "-- $label: wrk -t$WRK_THREADS -c$conns -d$WRK_DURATION $* $url"
  if [[ -n "${MEASURE_PID:-}" ]]; then cpu0=$(cpu_seconds "$MEASURE_PID"); fi
  busy0=$(machine_busy_seconds)
  wrk -t"$WRK_THREADS" -c"$conns" -d"$WRK_DURATION" --timeout 10s -s "$HERE/post.lua" "$@" "$url" \
    >"$out.wrk" 2>&1 || { cat "$out.wrk"; return 1; }
  busy1=$(machine_busy_seconds)
  if [[ -n "${MEASURE_PID:-}" ]]; then cpu1=$(cpu_seconds "$MEASURE_PID"); fi
  grep -q '^WRK_RESULT' "$out.wrk" || { cat "$out.wrk"; return 1; }
  "$PYTHON" - "$out.wrk" "$out" "$cpu0" "$cpu1" "$busy0" "$busy1" <<'EOF'
import json, sys
line = next(l for l in open(sys.argv[1]) if l.startswith("WRK_RESULT "))
r = {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
secs = r["duration_us"] / 1e6
cpu = float(sys.argv[4]) - float(sys.argv[3])
res = {
    "requests": int(r["requests"]),
    "seconds": secs,
    "req_per_s": r["requests"] / secs,
    "p50_ms": r["lat_p50_us"] / 1e3,
    "p90_ms": r["lat_p90_us"] / 1e3,
    "p99_ms": r["lat_p99_us"] / 1e3,
    "max_ms": r["lat_max_us"] / 1e3,
    "mean_ms": r["lat_mean_us"] / 1e3,
    "errors": int(sum(r[k] for k in ("connect", "read", "write", "status", "timeout"))),
    "server_cpu_s": cpu,
    "server_cores": cpu / secs,
    "machine_cores": (float(sys.argv[6]) - float(sys.argv[5])) / secs,
}
json.dump(res, open(sys.argv[2], "w"))
cores = f", server CPU {res['server_cores']:.2f} cores" if cpu > 0 else ""
cores += f", all processes {res['machine_cores']:.2f} cores"
print(f"   {res['req_per_s']:,.0f} req/s, {res['requests']:,} requests in {secs:.1f} s, "
      f"{res['errors']} errors{cores}")
print(f"   latency mean {res['mean_ms']:.2f} ms, p50 {res['p50_ms']:.2f} ms, "
      f"p90 {res['p90_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms, max {res['max_ms']:.2f} ms")
EOF
}

# metric_sum FILE NAME [LABEL_SUBSTRING]: the sum of the samples of NAME in a /metrics text
# whose label block contains LABEL_SUBSTRING (e.g. 'model_name="noop"'); 0 if none.
metric_sum() {
  "$PYTHON" - "$@" <<'EOF'
import sys
path, name = sys.argv[1], sys.argv[2]
want = sys.argv[3] if len(sys.argv) > 3 else ""
total = 0.0
for line in open(path):
    if line.startswith("#"):
        continue
    parts = line.rsplit(" ", 1)
    if len(parts) != 2:
        continue
    key, value = parts
    metric, _, labels = key.partition("{")
    if metric == name and want in labels:
        total += float(value)
print(int(total) if total == int(total) else total)
EOF
}
