#!/usr/bin/env bash
# resnet18 through tserve against a raw LibTorch loop on the same machine, batch 1 and 8.
#
# Raw: bench/resnet_bench runs the model.pt of resnet18.mar on $RESNET_THREADS threads (2),
# each with its own module and 1 intra-op thread, in two modes: forward only, and e2e (the
# image_classifier's preprocessing of examples/images/kitten.jpg, forward, softmax, top 5).
# tserve: the same model.pt and index_to_name.json repackaged with tserve-archiver as two
# models, resnet18 (batchSize 1) and resnet18_b8 (batchSize 8, maxBatchDelay 50), each with
# minWorkers = maxWorkers = $RESNET_THREADS (1 intra-op thread per worker, tserve's default),
# and kitten.jpg POSTed by bench/post_client.py (closed loop, keep-alive) on $RESNET_THREADS
# connections for batch 1 and 8 x $RESNET_THREADS for batch 8, so every worker can fill its
# batches. post_client.py rather than wrk: at a few requests per second, wrk's count of the
# responses completed inside its window is off by up to a batch per worker (see there).
# The two alternate (raw b1, tserve b1, raw b8, tserve b8) so that a change in background
# load hits both sides of a ratio alike. Both sides warm up first (raw: 3 batches per
# thread; tserve: $RESNET_WARMUP s of load, not measured: TorchScript's profiling executor
# specializes on the first shapes it sees).
# Checks: per model, the requests counted, finished and run in batches agree, 0 failures;
# tserve exits 0 on SIGTERM.
#
# Usage: bash bench/resnet_load.sh [BUILD_DIR]     (default build-bench; needs
#        BUILD_DIR/tserve built with LibTorch, BUILD_DIR/tserve-archiver, BUILD_DIR/bench/resnet_bench)
# Environment: RESNET_THREADS (2), RESNET_SECONDS (raw loop seconds per mode and batch, 8),
# RESNET_WARMUP (2) and RESNET_DURATION (8): tserve's warm-up and measured seconds, per batch
# size; RESNET_MAR (default: resnet18.mar from BUILD_DIR/model_store or build/model_store,
# else made by scripts/make_demo_models.py); RESNET_RESULTS (write a JSON summary there).
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
RAW_SECONDS=${RESNET_SECONDS:-8}
WARMUP=${RESNET_WARMUP:-2}
DURATION=${RESNET_DURATION:-8}
RESULTS=${RESNET_RESULTS:-}

if [[ ! -x "$RAW" ]]; then
  echo "resnet_load: no $RAW (it needs LibTorch: configure found no Torch); skipped" >&2
  exit 0
fi
for f in "$TSERVE" "$ARCHIVER"; do
  [[ -x "$f" ]] || { echo "resnet_load: missing $f (make bench builds it)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/tserve-resnet-load.XXXXXX)
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

read -r INF MGMT MET < <(free_ports 3)
cat >"$WORK/tserve.properties" <<EOF
inference_address=http://127.0.0.1:$INF
management_address=http://127.0.0.1:$MGMT
metrics_address=http://127.0.0.1:$MET
model_store=$WORK/store
load_models=resnet18.mar,resnet18_b8.mar
log_location=$WORK/logs
EOF
start_tserve "$TSERVE" tserve "$INF" 180
echo "   tserve: $TSERVE (pid $TS_PID), models resnet18 (batch 1) and resnet18_b8 (batch 8)," \
  "$THREADS workers each"
code=$(curl -s -o "$WORK/answer.json" -w '%{http_code}' --max-time 30 -H 'Content-Type: image/jpeg' \
  --data-binary @"$IMAGE" "http://127.0.0.1:$INF/predictions/resnet18")
if [[ $code != 200 ]]; then
  echo "resnet_load: POST kitten.jpg answered $code: $(cat "$WORK/answer.json")" >&2
  exit 1
fi

# run_client LABEL RESULT_JSON CONNECTIONS URL: bench/post_client.py posting kitten.jpg,
# with tserve's CPU use over the run added to the result.
run_client() {
  local label=$1 out=$2 conns=$3 url=$4
  echo "-- $label: post_client.py --connections $conns --warmup $WARMUP --duration $DURATION $url"
  local cpu0 cpu1 busy0 busy1 t0 t1
  cpu0=$(cpu_seconds "$TS_PID")
  busy0=$(machine_busy_seconds)
  t0=$(date +%s.%N)
  "$PYTHON" "$HERE/post_client.py" "$url" "$IMAGE" --content-type image/jpeg \
    --connections "$conns" --warmup "$WARMUP" --duration "$DURATION" --out "$out"
  t1=$(date +%s.%N)
  busy1=$(machine_busy_seconds)
  cpu1=$(cpu_seconds "$TS_PID")
  "$PYTHON" - "$out" "$cpu0" "$cpu1" "$busy0" "$busy1" "$t0" "$t1" <<'EOF'
import json, sys
out = sys.argv[1]
cpu0, cpu1, busy0, busy1, t0, t1 = map(float, sys.argv[2:])
r = json.load(open(out))
r["server_cores"] = (cpu1 - cpu0) / (t1 - t0)
r["machine_cores"] = (busy1 - busy0) / (t1 - t0)
json.dump(r, open(out, "w"))
print(f"   tserve CPU {r['server_cores']:.2f} cores, all processes {r['machine_cores']:.2f} cores")
EOF
}

failed=0
for batch in 1 8; do
  model=resnet18
  ((batch == 1)) || model=resnet18_b$batch
  conns=$((THREADS * batch))
  echo
  echo "-- raw LibTorch, batch $batch: resnet_bench --batch $batch --threads $THREADS --seconds $RAW_SECONDS"
  "$RAW" "$WORK/model/model.pt" "$IMAGE" --batch "$batch" --threads "$THREADS" \
    --seconds "$RAW_SECONDS" --mode forward,e2e | tee "$WORK/raw-b$batch.txt"
  url="http://127.0.0.1:$INF/predictions/$model"
  curl -s --max-time 5 "http://127.0.0.1:$MET/metrics" >"$WORK/before.txt"
  before=$(metric_sum "$WORK/before.txt" ts_inference_requests_total "model_name=\"$model\"")
  echo
  run_client "tserve, $model (batch $batch), $conns connections" "$WORK/tserve-b$batch.json" \
    "$conns" "$url"
  curl -s --max-time 5 "http://127.0.0.1:$MET/metrics" >"$WORK/after.txt"
  "$PYTHON" - "$WORK/before.txt" "$WORK/after.txt" "$model" <<'EOF' || failed=1
import re, sys
before, after, model = open(sys.argv[1]).read(), open(sys.argv[2]).read(), sys.argv[3]
def sample(text, name):
    pat = r'^%s\{[^}]*model_name="%s"[^}]*\} (\S+)$' % (name, re.escape(model))
    return sum(float(v) for v in re.findall(pat, text, re.M))
d = {n: sample(after, n) - sample(before, n) for n in (
    "ts_inference_requests_total", "ts_request_duration_seconds_count", "ts_batch_size_count",
    "ts_batch_size_sum", "ts_inference_failures_total")}
print(f"   server side: {d['ts_batch_size_count']:.0f} batches, mean batch size "
      f"{d['ts_batch_size_sum'] / max(1, d['ts_batch_size_count']):.2f}")
ok = d["ts_inference_requests_total"] == d["ts_request_duration_seconds_count"] == \
    d["ts_batch_size_sum"] and d["ts_inference_failures_total"] == 0
print(f"   check: {d['ts_inference_requests_total']:.0f} requests counted, "
      f"{d['ts_request_duration_seconds_count']:.0f} finished, {d['ts_batch_size_sum']:.0f} "
      f"in batches, {d['ts_inference_failures_total']:.0f} failures: "
      f"{'consistent' if ok else 'MISMATCH'}")
sys.exit(0 if ok else 1)
EOF
done

rc=0
stop_server "$TS_PID" || rc=$?
SERVER_PIDS=()
((rc == 0)) || { echo "   tserve exited with status $rc on SIGTERM"; failed=1; }

echo
"$PYTHON" - "$WORK" "$THREADS" "${RESULTS:-}" <<'EOF'
import json, os, sys
work, threads, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
raw = {}
for b in (1, 8):
    for line in open(os.path.join(work, f"raw-b{b}.txt")):
        if line.startswith("RESNET_RESULT "):
            r = dict(kv.split("=") for kv in line.split()[1:])
            raw[(b, r["mode"])] = {k: float(v) if k != "mode" else v for k, v in r.items()}
ts = {b: json.load(open(os.path.join(work, f"tserve-b{b}.json"))) for b in (1, 8)}
print(f"resnet18, {threads} threads (raw) / {threads} workers x 1 intra-op thread (tserve); "
      "images/s; latency p50/p99 in ms (raw: per forward call of one batch; tserve: per request)")
print("| batch | raw forward | raw e2e | tserve | tserve / raw e2e | tserve / raw forward | "
      "raw e2e p50 / p99 | tserve p50 / p99 | tserve CPU (cores) |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
summary = {}
for b in (1, 8):
    f, e, t = raw[(b, "forward")], raw[(b, "e2e")], ts[b]
    ratio_e, ratio_f = t["req_per_s"] / e["images_per_s"], t["req_per_s"] / f["images_per_s"]
    verdict = "met" if ratio_e >= 0.95 else "**missed**"
    print(f"| {b} | {f['images_per_s']:.1f} | {e['images_per_s']:.1f} | {t['req_per_s']:.1f} | "
          f"{ratio_e:.2f} (goal ≥ 0.95: {verdict}) | {ratio_f:.2f} | "
          f"{e['batch_p50_ms']:.0f} / {e['batch_p99_ms']:.0f} | {t['p50_ms']:.0f} / {t['p99_ms']:.0f} | "
          f"{t['server_cores']:.2f} |")
    summary[b] = {"raw_forward": f, "raw_e2e": e, "tserve": t, "ratio_e2e": ratio_e,
                  "ratio_forward": ratio_f}
per = {b: summary[b]["raw_forward"]["images_per_s"] for b in (1, 8)}
print(f"raw forward per image: batch 8 is {per[8] / per[1]:.2f}x the throughput of batch 1")
if out:
    json.dump({str(k): v for k, v in summary.items()}, open(out, "w"), indent=1)
EOF
exit $failed
