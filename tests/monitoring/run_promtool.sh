#!/usr/bin/env bash
# Offline checks of deploy/prometheus (docs/monitoring.md), run by `make monitoring-check`:
#   1. promtool check config   the shipped prometheus.yml, and its commented variants
#                              (metrics_token, several instances) uncommented
#   2. promtool check rules    the recording and alert rules
#   3. promtool test rules     deploy/prometheus/tests/*.yml
#   4. check_rules.py          every recording rule and alert is tested (alerts firing and
#                              not), every metric the rules read is in config/metrics.yaml
#                              and docs/metrics.md, and a renamed metric is caught
# With TSERVE_METRICS_URL=http://host:port/metrics, step 4 also checks the names against
# a running tserve. Needs promtool (Debian: prometheus) and python3-yaml. Exits non-zero on
# the first failing step.
set -euo pipefail
cd "$(dirname "$0")/../.."

PROM=deploy/prometheus
RULES=("$PROM"/rules/*.yml)
TESTS=("$PROM"/tests/*.yml)
CHECK=(python3 tests/monitoring/check_rules.py)

command -v promtool >/dev/null || { echo "promtool not found (apt-get install prometheus)"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== promtool check config"
promtool check config "$PROM/prometheus.yml"

# The commented variants, uncommented, must be valid too (rules next to them, as shipped).
cp -r "$PROM/rules" "$tmp/rules"
echo "token" >"$tmp/token"
python3 - "$PROM/prometheus.yml" "$tmp" <<'PY'
import sys
src, tmp = sys.argv[1], sys.argv[2]
text = open(src).read()
# metrics_token: the commented authorization block of the torchserve job.
lines, out = text.splitlines(), []
for line in lines:
    if line.startswith("    # ") and line[6:].lstrip().startswith(("authorization:", "type: Bearer", "credentials_file:")):
        line = "    " + line[6:]
        line = line.replace("/etc/prometheus/tserve-metrics-token", f"{tmp}/token")
    out.append(line)
open(f"{tmp}/token.yml", "w").write("\n".join(out) + "\n")
# Each commented job block (several instances, file discovery, Kubernetes) replacing the job.
head = text.split("  - job_name: 'torchserve'")[0]
blocks, current = [], None
for line in lines:
    if line.startswith("#  - job_name: 'torchserve'"):
        current = []
        blocks.append(current)
    if current is not None:
        if line.startswith("#  "):
            current.append(line[1:])
        else:
            current = None
for i, block in enumerate(blocks):
    open(f"{tmp}/job{i}.yml", "w").write(head + "\n".join(block) + "\n")
print(f"variants: token.yml and {len(blocks)} job blocks")
PY
for variant in "$tmp"/token.yml "$tmp"/job*.yml; do
  if ! out=$(promtool check config "$variant" 2>&1); then
    if grep -q "kubernetes_sd_configs not found" <<<"$out"; then
      echo "SKIP $(basename "$variant"): this promtool is built without Kubernetes discovery (Debian's)"
      continue
    fi
    echo "$out"; echo "FAIL commented variant $(basename "$variant") of $PROM/prometheus.yml"; exit 1
  fi
  echo "ok: variant $(basename "$variant")"
done

echo "== promtool check rules"
promtool check rules "${RULES[@]}"

echo "== promtool test rules"
promtool test rules "${TESTS[@]}"

echo "== every rule and alert tested"
"${CHECK[@]}" coverage --rules "${RULES[@]}" --tests "${TESTS[@]}"

echo "== metric names"
"${CHECK[@]}" names --rules "${RULES[@]}" ${TSERVE_METRICS_URL:+--live "$TSERVE_METRICS_URL"}

# The name check must catch a metric renamed on either side.
sed 's/\bts_queue_depth\b/ts_queue_length/' "$PROM/rules/tserve-recording.yml" >"$tmp/renamed-rule.yml"
if "${CHECK[@]}" names --rules "$tmp/renamed-rule.yml" >/dev/null; then
  echo "FAIL the name check accepted a rule reading an unknown metric (ts_queue_length)"; exit 1
fi
sed 's/name: ts_workers$/name: ts_worker_count/' config/metrics.yaml >"$tmp/metrics.yaml"
if "${CHECK[@]}" names --rules "${RULES[@]}" --metrics-yaml "$tmp/metrics.yaml" >/dev/null; then
  echo "FAIL the name check accepted rules reading ts_workers after metrics.yaml renamed it"; exit 1
fi
echo "ok: renamed metrics are caught"
echo "monitoring-check: all passed"
