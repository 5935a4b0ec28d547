#!/usr/bin/env bash
# resnet18 through tserve against a raw LibTorch loop on the same machine, batch 1 and 8.
#
# Raw: bench/resnet_bench runs the model.pt of resnet18.mar on $RESNET_THREADS threads (2),
# each with its own module and 1 intra-op thread: forward only, and e2e (image_classifier's
# preprocessing of examples/images/kitten.jpg, forward, softmax, top 5). It runs twice:
# with tserve's malloc settings plus the proposed fix ($RESNET_RAW_TUNABLES, "tuned") and
# with glibc's defaults (e2e only). The faster e2e loop is the baseline of the ratios.
# tserve: the same model.pt and index_to_name.json repackaged with tserve-archiver as two
# models, resnet18 (batchSize 1) and resnet18_b8 (batchSize 8, maxBatchDelay 50), each with
# minWorkers = maxWorkers = $RESNET_THREADS (1 intra-op thread per worker, tserve's default),
# and kitten.jpg POSTed by bench/post_client.py (closed loop, keep-alive): for batch 1 on
# $RESNET_THREADS connections (one per worker) and on 2 x $RESNET_THREADS (a request always
# waiting: saturated), for batch 8 on 8 x $RESNET_THREADS so every worker can fill its
# batches. post_client.py rather than wrk: at a few requests per second, wrk's count of the
# responses completed inside its window is off by up to a batch per worker (see there).
# Two tservers run side by side: "as-is", and "fix", started with
# GLIBC_TUNABLES=$RESNET_FIX_TUNABLES (default glibc.malloc.top_pad=67108864: the malloc
# change docs/performance.md proposes; set it empty to skip that server).
# The runs alternate (raw b1, tserve as-is b1, fix b1, raw b8, ...) so that a change in
# background load hits both sides of a ratio alike. Each side's CPU use is measured (the
# machine is shared: images per CPU second is the figure background load distorts least),
# and its minor page faults. Both sides warm up first (raw: 3 batches per thread; tserve:
# $RESNET_WARMUP s of load, not measured: TorchScript's profiling executor specializes on
# the first shapes it sees).
# Checks: per model, the requests counted, finished and run in batches agree, 0 failures;
# tserve exits 0 on SIGTERM.
#
# Usage: bash bench/resnet_load.sh [BUILD_DIR]     (default build-bench; needs BUILD_DIR/tserve
#        built with LibTorch, BUILD_DIR/tserve-archiver, BUILD_DIR/bench/resnet_bench)
# Environment: RESNET_THREADS (2), RESNET_SECONDS (raw loop seconds per run, 6),
# RESNET_WARMUP (2) and RESNET_DURATION (8): tserve's warm-up and measured seconds per run;
# RESNET_FIX_TUNABLES, RESNET_RAW_TUNABLES (above); RESNET_MAR (default: resnet18.mar from
# BUILD_DIR/model_store or build/model_store, else made by scripts/make_demo_models.py);
# RESNET_RESULTS (write a JSON summary there).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PYTHON=/usr/bin/python3
BUILD_DIR=$(cd "${1:-$ROOT/build-bench}" && pwd)
TSERVE=${TSERVE_BINARY:-$BUILD_DIR/tserve}
ARCHIVER=$BUILD_DIR/tserve-archiver
RAW=$BUILD_DIR/bench/resnet_bench
IMAGE=$ROOT/examples/images/kitten.jpg
THREADS=${RESNET_THREADS:-2}
RAW_SECONDS=${RESNET_SECONDS:-6}
WARMUP=${RESNET_WARMUP:-2}
DURATION=${RESNET_DURATION:-8}
RESULTS=${RESNET_RESULTS:-}
FIX_TUNABLES=${RESNET_FIX_TUNABLES-glibc.malloc.top_pad=67108864}
# tserve's malloc settings (src/common/malloc_tuning.cc) plus the fix, for the raw loop.
RAW_TUNABLES=${RESNET_RAW_TUNABLES-glibc.malloc.mmap_threshold=67108864:glibc.malloc.trim_threshold=134217728:glibc.malloc.top_pad=67108864}

if [[ ! -x "$RAW" ]]; then
  echo "resnet_load: no $RAW (it needs LibTorch: configure found no Torch); skipped" >&2
  exit 0
fi
for f in "$TSERVE" "$ARCHIVER"; do
  [[ -x "$f" ]] || { echo "resnet_load: missing $f (make bench builds it)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/tserve-resnet-load.XXXXXX)
# shellcheck source=bench/serving_common.sh
source "$HERE/serving_common.sh"
cleanup() {
  stop_all_servers
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== resnet18: tserve against a raw LibTorch loop, $THREADS threads, $(nproc) CPUs," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"

MAR=${RESNET_MAR:-}
if [[ -z "$MAR" ]]; then
  for d in "$BUILD_DIR/model_store" "$ROOT/build/model_store"; do
    if [[ -f "$d/resnet18.mar" ]]; then MAR=$d/resnet18.mar; break; fi
  done
fi
if [[ -z "$MAR" ]]; then
  echo "   no resnet18.mar found: making the demo models (scripts/make_demo_models.py)"
  "$PYTHON" "$ROOT/scripts/make_demo_models.py" --out "$WORK/demo" --archiver "$ARCHIVER" >/dev/null
  MAR=$WORK/demo/resnet18.mar
fi
echo "   model: $MAR"
mkdir -p "$WORK/model" "$WORK/store"
"$PYTHON" - "$MAR" "$WORK/model" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("model.pt", "index_to_name.json"):
        z.extract(name, sys.argv[2])
EOF

make_variant() {  # model name, batch size
  local dir=$WORK/cfg-$1
  mkdir -p "$dir"
  cat >"$dir/model-config.yaml" <<EOF
minWorkers: $THREADS
maxWorkers: $THREADS
batchSize: $2
maxBatchDelay: 50
responseTimeout: 120
EOF
  "$ARCHIVER" --model-name "$1" --version 1.0 --serialized-file "$WORK/model/model.pt" \
    --handler image_classifier --extra-files "$WORK/model/index_to_name.json" \
    --config-file "$dir/model-config.yaml" --export-path "$WORK/store" --force >/dev/null
}
make_variant resnet18 1
make_variant resnet18_b8 8

# One tserve per variant: "as-is", and "fix" started with GLIBC_TUNABLES=$FIX_TUNABLES (the
# malloc change docs/performance.md proposes; RESNET_FIX_TUNABLES= skips it).
VARIANTS=(as-is)
[[ -n "$FIX_TUNABLES" ]] && VARIANTS+=(fix)
declare -A INF_PORT MET_PORT PID
for v in "${VARIANTS[@]}"; do
  read -r inf mgmt met < <(free_ports 3)
  cat >"$WORK/tserve-$v.properties" <<EOF
inference_address=http://127.0.0.1:$inf
management_address=http://127.0.0.1:$mgmt
metrics_address=http://127.0.0.1:$met
model_store=$WORK/store
load_models=resnet18.mar,resnet18_b8.mar
log_location=$WORK/logs-$v
EOF
  tunables=""
  [[ $v == fix ]] && tunables=$FIX_TUNABLES
  GLIBC_TUNABLES=$tunables start_tserve "$TSERVE" "tserve-$v" "$inf" 180
  INF_PORT[$v]=$inf
  MET_PORT[$v]=$met
  PID[$v]=$TS_PID
  echo "   tserve $v${tunables:+ (GLIBC_TUNABLES=$tunables)}: pid $TS_PID, models resnet18" \
    "(batch 1) and resnet18_b8 (batch 8), $THREADS workers each"
  code=$(curl -s -o "$WORK/answer.json" -w '%{http_code}' --max-time 30 \
    -H 'Content-Type: image/jpeg' --data-binary @"$IMAGE" "http://127.0.0.1:$inf/predictions/resnet18")
  if [[ $code != 200 ]]; then
    echo "resnet_load: POST kitten.jpg answered $code: $(cat "$WORK/answer.json")" >&2
    exit 1
  fi
done
echo "   tserve binary: $TSERVE"

# run_client LABEL RESULT_JSON CONNECTIONS URL PID: bench/post_client.py posting kitten.jpg,
# with the server's CPU use and minor page faults over the run added to the result.
run_client() {
  local label=$1 out=$2 conns=$3 url=$4 pid=$5
  echo "-- $label: post_client.py --connections $conns --warmup $WARMUP --duration $DURATION $url"
  local cpu0 cpu1 busy0 busy1 t0 t1 f0 f1
  cpu0=$(cpu_seconds "$pid")
  f0=$(awk '{print $10}' "/proc/$pid/stat")
  busy0=$(machine_busy_seconds)
  t0=$(date +%s.%N)
  "$PYTHON" "$HERE/post_client.py" "$url" "$IMAGE" --content-type image/jpeg \
    --connections "$conns" --warmup "$WARMUP" --duration "$DURATION" --out "$out"
  t1=$(date +%s.%N)
  busy1=$(machine_busy_seconds)
  f1=$(awk '{print $10}' "/proc/$pid/stat")
  cpu1=$(cpu_seconds "$pid")
  "$PYTHON" - "$out" "$cpu0" "$cpu1" "$busy0" "$busy1" "$t0" "$t1" "$f0" "$f1" <<'EOF'
import json, sys
out = sys.argv[1]
cpu0, cpu1, busy0, busy1, t0, t1, f0, f1 = map(float, sys.argv[2:])
r = json.load(open(out))
r["server_cores"] = (cpu1 - cpu0) / (t1 - t0)
r["machine_cores"] = (busy1 - busy0) / (t1 - t0)
# Per request sent over the whole run (warm-up included): requests_all is post_client's.
r["faults_per_request"] = (f1 - f0) / max(1, r.get("requests_all", r["requests"]))
json.dump(r, open(out, "w"))
print(f"   tserve CPU {r['server_cores']:.2f} cores, all processes {r['machine_cores']:.2f} "
      f"cores; tserve minor page faults {r['faults_per_request']:,.0f} per request")
EOF
}

# check_counts VARIANT MODEL BEFORE AFTER: the server's own counts agree with each other.
check_counts() {
  "$PYTHON" - "$3" "$4" "$2" <<'EOF'
import re, sys
before, after, model = open(sys.argv[1]).read(), open(sys.argv[2]).read(), sys.argv[3]
def sample(text, name):
    pat = r'^%s\{[^}]*model_name="%s"[^}]*\} (\S+)$' % (name, re.escape(model))
    return sum(float(v) for v in re.findall(pat, text, re.M))
d = {n: sample(after, n) - sample(before, n) for n in (
    "ts_inference_requests_total", "ts_request_duration_seconds_count", "ts_batch_size_count",
    "ts_batch_size_sum", "ts_inference_failures_total")}
ok = d["ts_inference_requests_total"] == d["ts_request_duration_seconds_count"] == \
    d["ts_batch_size_sum"] and d["ts_inference_failures_total"] == 0
print(f"   check: {d['ts_inference_requests_total']:.0f} requests counted, "
      f"{d['ts_request_duration_seconds_count']:.0f} finished, {d['ts_batch_size_sum']:.0f} in "
      f"{d['ts_batch_size_count']:.0f} batches (mean "
      f"{d['ts_batch_size_sum'] / max(1, d['ts_batch_size_count']):.2f}), "
      f"{d['ts_inference_failures_total']:.0f} failures: {'consistent' if ok else 'MISMATCH'}")
sys.exit(0 if ok else 1)
EOF
}

failed=0
for batch in 1 8; do
  model=resnet18
  ((batch == 1)) || model=resnet18_b$batch
  # Batch 1: one connection per worker (each worker idles for a client round trip between
  # requests) and two (a request always waits: the saturated throughput). Batch 8: 8 per worker.
  conn_counts=($((THREADS * batch)))
  ((batch == 1)) && conn_counts+=($((2 * THREADS)))
  echo
  echo "-- raw LibTorch, batch $batch, malloc as tserve-fix's (GLIBC_TUNABLES=$RAW_TUNABLES):" \
    "resnet_bench --batch $batch --threads $THREADS --seconds $RAW_SECONDS --mode forward,e2e"
  GLIBC_TUNABLES=$RAW_TUNABLES "$RAW" "$WORK/model/model.pt" "$IMAGE" --batch "$batch" \
    --threads "$THREADS" --seconds "$RAW_SECONDS" --mode forward,e2e | tee "$WORK/raw-tuned-b$batch.txt"
  echo "-- raw LibTorch, batch $batch, glibc's default malloc: resnet_bench ... --mode e2e"
  "$RAW" "$WORK/model/model.pt" "$IMAGE" --batch "$batch" --threads "$THREADS" \
    --seconds "$RAW_SECONDS" --mode e2e | tee "$WORK/raw-default-b$batch.txt"
  for conns in "${conn_counts[@]}"; do
    for v in "${VARIANTS[@]}"; do
      met="http://127.0.0.1:${MET_PORT[$v]}/metrics"
      curl -s --max-time 5 "$met" >"$WORK/before.txt"
      echo
      run_client "tserve $v, $model (batch $batch), $conns connections" \
        "$WORK/tserve-$v-b$batch-c$conns.json" "$conns" \
        "http://127.0.0.1:${INF_PORT[$v]}/predictions/$model" "${PID[$v]}"
      curl -s --max-time 5 "$met" >"$WORK/after.txt"
      check_counts "$v" "$model" "$WORK/before.txt" "$WORK/after.txt" || failed=1
    done
  done
done

for v in "${VARIANTS[@]}"; do
  rc=0
  stop_server "${PID[$v]}" || rc=$?
  ((rc == 0)) || { echo "   tserve $v exited with status $rc on SIGTERM"; failed=1; }
done
SERVER_PIDS=()

echo
"$PYTHON" - "$WORK" "$THREADS" "${RESULTS:-}" "${VARIANTS[@]}" <<'EOF'
import json, os, sys
work, threads, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
variants = sys.argv[4:]

def raw_results(path):
    res = {}
    for line in open(path):
        if line.startswith("RESNET_RESULT "):
            r = dict(kv.split("=") for kv in line.split()[1:])
            res[r["mode"]] = {k: float(v) for k, v in r.items() if k != "mode"}
    return res

print(f"resnet18, {threads} threads (raw) / {threads} workers x 1 intra-op thread (tserve).")
print("img/s: images per second; vs raw: against the faster raw e2e loop of the two malloc "
      "settings; per core: img/s / CPU cores the process used; p50 / p99: latency in ms (raw: "
      "per batch; tserve: per request); faults: the process's minor page faults per image")
print("| batch | run | img/s | vs raw | per core | vs raw, per core | p50 / p99 ms | cores | faults |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
summary = {}
per_core_fwd = {}
for b in (1, 8):
    tuned = raw_results(os.path.join(work, f"raw-tuned-b{b}.txt"))
    default = raw_results(os.path.join(work, f"raw-default-b{b}.txt"))
    rows = []
    for label, r in (("raw forward, tuned malloc", tuned["forward"]),
                     ("raw e2e, tuned malloc", tuned["e2e"]),
                     ("raw e2e, default malloc", default["e2e"])):
        rows.append((label, r["images_per_s"], r["cores"], r["batch_p50_ms"], r["batch_p99_ms"],
                     r["faults_per_image"]))
    per_core_fwd[b] = tuned["forward"]["images_per_s"] / tuned["forward"]["cores"]
    best = max((tuned["e2e"], default["e2e"]), key=lambda r: r["images_per_s"])
    base, base_pc = best["images_per_s"], best["images_per_s"] / best["cores"]
    for conns in (threads * b, 2 * threads) if b == 1 else (threads * b,):
        for v in variants:
            r = json.load(open(os.path.join(work, f"tserve-{v}-b{b}-c{conns}.json")))
            rows.append((f"tserve {v}, {conns} conn.", r["req_per_s"], r["server_cores"],
                         r["p50_ms"], r["p99_ms"], r["faults_per_request"]))
    summary[b] = {}
    for label, rate, cores, p50, p99, faults in rows:
        ratio, ratio_pc = rate / base, (rate / cores) / base_pc
        verdict = ""
        if label.startswith("tserve"):
            verdict = " (goal ≥ 0.95: " + ("met" if ratio >= 0.95 else "**missed**") + ")"
        print(f"| {b} | {label} | {rate:.1f} | {ratio:.2f}{verdict} | {rate / cores:.1f} | "
              f"{ratio_pc:.2f} | {p50:.0f} / {p99:.0f} | {cores:.2f} | {faults:,.0f} |")
        summary[b][label] = {"images_per_s": rate, "ratio": ratio, "per_core": rate / cores,
                             "ratio_per_core": ratio_pc, "p50_ms": p50, "p99_ms": p99,
                             "cores": cores, "faults_per_image": faults}
print(f"raw forward (tuned malloc), batch 8 against batch 1: {per_core_fwd[8] / per_core_fwd[1]:.2f}x "
      "the images per CPU second")
if out:
    json.dump({str(k): v for k, v in summary.items()}, open(out, "w"), indent=1)
EOF
exit $failed
