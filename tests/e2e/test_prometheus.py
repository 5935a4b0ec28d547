"""A real Prometheus (Debian's 2.42) scrapes tserve: the target is up, `up == 1`, and a
CPUUtilization sample is queryable; with metrics_token, Prometheus authenticates with a
bearer token while a plain client gets 401."""

from __future__ import annotations

import contextlib
import signal
import subprocess

import requests

from e2e_util import HOSTNAME, REPO_ROOT, free_ports, require_tool, wait_for

TARGET_TIMEOUT_S = 60  # Prometheus 2.42's first scrape comes ~6 s after start


@contextlib.contextmanager
def prometheus(tmp_path, scrape_configs: str):
    """Starts /usr/bin/prometheus on a free loopback port; stops it by its pid."""
    binary = require_tool("prometheus")
    port = free_ports(1)[0]
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                   "scrape_configs:\n" + scrape_configs)
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=info"],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        yield api, proc, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _targets(api, proc, log):
    assert proc.poll() is None, "prometheus exited:\n" + log.read_text()[-3000:]
    r = requests.get(f"{api}/targets", timeout=5)
    r.raise_for_status()
    return {t["labels"]["job"]: t for t in r.json()["data"]["activeTargets"]}


def wait_target(api, proc, log, job, health):
    last = {}

    def check():
        targets = _targets(api, proc, log)
        last.update(targets)
        t = targets.get(job)
        return t if t and t["health"] == health else None
    try:
        return wait_for(check, TARGET_TIMEOUT_S, f"prometheus target {job} to be {health}",
                        interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ntargets: {last}\nprometheus log:\n"
                             f"{log.read_text()[-3000:]}") from None


def query(api, expr):
    r = requests.get(f"{api}/query", params={"query": expr}, timeout=5)
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_tserve(server, tmp_path):
    target = f"127.0.0.1:{server.ports['metrics']}"
    # A second job scrapes through the name[] filter: Prometheus sends the key
    # percent-encoded (name%5B%5D=...).
    scrape = (f"  - job_name: tserve\n    static_configs:\n      - targets: ['{target}']\n"
              f"  - job_name: tserve_filtered\n    params:\n"
              f"      'name[]': [CPUUtilization, GPUUtilization]\n"
              f"    static_configs:\n      - targets: ['{target}']\n")
    with prometheus(tmp_path / "prom", scrape) as (api, proc, log):
        t = wait_target(api, proc, log, "tserve", "up")
        assert t["lastError"] == ""
        up = wait_for(lambda: query(api, 'up{job="tserve"}'), 10, "up{job=tserve}")
        assert len(up) == 1 and up[0]["value"][1] == "1", up
        cpu = wait_for(lambda: query(api, 'CPUUtilization{job="tserve"}'), 10,
                       "a CPUUtilization sample in Prometheus")
        assert len(cpu) == 1, cpu
        assert cpu[0]["metric"]["Level"] == "Host"
        assert cpu[0]["metric"]["Hostname"] == HOSTNAME
        assert 0.0 <= float(cpu[0]["value"][1]) <= 100.0
        # The scrapes themselves are counted in Requests2XX.
        req = wait_for(lambda: [s for s in query(api, 'Requests2XX{job="tserve"}')
                                if float(s["value"][1]) >= 1], 10, "Requests2XX >= 1")
        assert req[0]["metric"]["Level"] == "Host"
        # The filtered job got exactly the families it asked for.
        wait_target(api, proc, log, "tserve_filtered", "up")
        names = wait_for(lambda: {s["metric"]["__name__"] for s in query(
            api, '{job="tserve_filtered",__name__!~"up|scrape_.*"}')}, 10, "filtered series")
        assert names == {"CPUUtilization", "GPUUtilization"}, names
        # Prometheus saw no duplicate or out-of-order samples.
        text = log.read_text()
        for bad in ("duplicate sample", "out of order", "Error on ingesting"):
            assert bad not in text, f"prometheus log says {bad!r}:\n{text[-2000:]}"


def test_prometheus_with_metrics_token(tserve, tmp_path):
    curl = require_tool("curl")
    token = "e2e-secret-token-123"
    server = tserve(config={"metrics_token": token})
    target = f"127.0.0.1:{server.ports['metrics']}"
    # Without the header: 401, from a plain curl and from requests.
    cp = subprocess.run([curl, "-s", "-o", "/dev/null", "-w", "%{http_code}",
                         f"http://{target}/metrics"], capture_output=True, text=True, timeout=20)
    assert cp.stdout == "401", cp.stdout + cp.stderr
    assert requests.get(f"http://{target}/metrics", timeout=5,
                        headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = requests.get(f"http://{target}/metrics", timeout=5,
                      headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and "# TYPE Requests2XX counter" in ok.text
    # The 401s were counted as 4XX.
    assert "Requests4XX{" in ok.text
    scrape = (f"  - job_name: tserve\n    authorization:\n      credentials: {token}\n"
              f"    static_configs:\n      - targets: ['{target}']\n"
              f"  - job_name: tserve_wrong_token\n    authorization:\n"
              f"      credentials: not-the-token\n"
              f"    static_configs:\n      - targets: ['{target}']\n")
    with prometheus(tmp_path / "prom", scrape) as (api, proc, log):
        wait_target(api, proc, log, "tserve", "up")
        up = wait_for(lambda: query(api, 'up{job="tserve"}'), 10, "up{job=tserve}")
        assert up[0]["value"][1] == "1", up
        bad = wait_target(api, proc, log, "tserve_wrong_token", "down")
        assert "401" in bad["lastError"], bad
        cpu = wait_for(lambda: query(api, 'CPUUtilization{job="tserve"}'), 10,
                       "a CPUUtilization sample")
        assert cpu


def test_shipped_prometheus_config_is_valid():
    promtool = require_tool("promtool")
    cfg = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
    assert cfg.is_file(), f"{cfg} is missing"
    cp = subprocess.run([promtool, "check", "config", str(cfg)], capture_output=True,
                        text=True, timeout=30)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "127.0.0.1:8082" in cfg.read_text() or "localhost:8082" in cfg.read_text()
