#!/usr/bin/env bash
# `make monitor`: Prometheus with tserve's shipped configuration and rules
# (deploy/prometheus/prometheus.yml, rules/*.yml) next to a running tserve, in the
# foreground; Ctrl-C stops it. See docs/monitoring.md.
#
# Environment:
#   TSERVE_METRICS_ADDRESS     host:port of tserve's metrics listener (default localhost:8082,
#                              the metrics_address of config/config.properties)
#   TSERVE_METRICS_TOKEN_FILE  a file holding tserve's metrics_token, when it has one
#   PROMETHEUS_LISTEN          Prometheus' own address (default 127.0.0.1:9090, where the
#                              Grafana provisioning of deploy/grafana looks for it)
#   PROMETHEUS_DATA            keep Prometheus' data there (default: a temporary directory,
#                              removed on exit)
# Only the targets, the rule paths (absolute) and, with a token file, the torchserve job's
# authorization differ from the shipped file; intervals (15 s) and rules are as shipped.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

target=${TSERVE_METRICS_ADDRESS:-localhost:8082}
listen=${PROMETHEUS_LISTEN:-127.0.0.1:9090}
token_file=${TSERVE_METRICS_TOKEN_FILE:-}

die() { echo "monitor: $*" >&2; exit 1; }

prometheus=$(command -v prometheus || true)
[ -n "$prometheus" ] || die "prometheus is not installed (Debian: apt-get install prometheus, or make deps)"
command -v curl >/dev/null || die "curl is not installed (apt-get install curl)"
[ -z "$token_file" ] || [ -r "$token_file" ] || die "TSERVE_METRICS_TOKEN_FILE=$token_file is not readable"

# tserve must answer on its metrics listener.
auth=()
[ -z "$token_file" ] || auth=(-H "Authorization: Bearer $(tr -d '\r\n' <"$token_file")")
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${auth[@]}" "http://$target/metrics" || true)
case "$code" in
  200) ;;
  401) die "tserve at http://$target/metrics answers 401: it has a metrics_token; put it in a file and set TSERVE_METRICS_TOKEN_FILE" ;;
  000) die "tserve's metrics endpoint http://$target/metrics does not answer: start tserve first (make run), or set TSERVE_METRICS_ADDRESS=host:port" ;;
  *) die "tserve's metrics endpoint http://$target/metrics does not answer 200 (got $code): is that tserve's metrics_address?" ;;
esac

# Prometheus' own address must be free (Debian's prometheus service listens on :9090).
if curl -s -o /dev/null --max-time 2 "http://$listen/"; then
  die "something already listens on $listen (Debian's prometheus service?): set PROMETHEUS_LISTEN=127.0.0.1:9091, and point Grafana's datasource there"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tserve-monitor.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
data=${PROMETHEUS_DATA:-$tmp/data}
mkdir -p "$data"

/usr/bin/python3 - "$repo/deploy/prometheus" "$tmp/prometheus.yml" "$target" "$listen" "$token_file" <<'PY'
import os, sys
import yaml

src, dst, target, listen, token_file = sys.argv[1:6]
cfg = yaml.safe_load(open(os.path.join(src, "prometheus.yml")))
cfg["rule_files"] = [os.path.abspath(os.path.join(src, p)) for p in cfg.get("rule_files") or []]
for job in cfg["scrape_configs"]:
    if job["job_name"] == "torchserve":
        job["static_configs"] = [{"targets": [target]}]
        if token_file:
            job["authorization"] = {"type": "Bearer", "credentials_file": os.path.abspath(token_file)}
    elif job["job_name"] == "prometheus":
        job["static_configs"] = [{"targets": [listen]}]
with open(dst, "w") as f:
    yaml.safe_dump(cfg, f, sort_keys=False)
PY

ui="http://$listen"
cat <<EOF
Prometheus $("$prometheus" --version 2>&1 | head -1 | awk '{print $3}') scraping tserve at http://$target/metrics
with deploy/prometheus/prometheus.yml and rules/*.yml (config: $tmp/prometheus.yml, data: $data)

  Prometheus UI     $ui/graph
  targets           $ui/targets
  alerts            $ui/alerts
  recording rules   $ui/rules

Grafana (not started here): provision it with deploy/grafana/provisioning (datasource
http://localhost:9090, dashboards from deploy/grafana/dashboards), e.g.
  docker run --rm --network host \\
    -v $repo/deploy/grafana/provisioning:/etc/grafana/provisioning:ro \\
    -v $repo/deploy/grafana/dashboards:/var/lib/grafana/dashboards/tserve:ro \\
    grafana/grafana-oss        # http://localhost:3000 (admin/admin)
(docs/monitoring.md#grafana). Ctrl-C stops Prometheus.
EOF
case "$listen" in
  127.0.0.1:9090 | localhost:9090 | 0.0.0.0:9090 | :9090) ;;
  *) echo "(Prometheus listens on $listen, not :9090: for Grafana, change the url in" \
    "deploy/grafana/provisioning/datasources/prometheus.yml to http://$listen.)" ;;
esac

# In the foreground: Ctrl-C reaches Prometheus, which shuts down cleanly; the EXIT trap
# then removes the temporary directory.
status=0
"$prometheus" --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$data" \
  --web.listen-address="$listen" --log.level=warn || status=$?
# Prometheus exits 0 on SIGINT/SIGTERM; 130/143 mean the signal killed it before its handler.
case "$status" in 0 | 130 | 143) exit 0 ;; *) exit "$status" ;; esac
