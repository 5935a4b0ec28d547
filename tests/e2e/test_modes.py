"""Metrics modes and configuration end to end: log / legacy / prometheus, the metrics
listener switch, system metrics, metrics.yaml, bad config, env overrides, CLI."""

from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
import time

import pytest
import requests

from e2e_util import (BINARY, GPU_FAMILIES, HOST_FAMILIES, HOSTNAME, LEGACY_FAMILIES,
                      REQUEST_FAMILIES, base_env, families_by_name, family_names,
                      format_properties, free_ports, help_line, launch, port_accepts,
                      run_expect_exit, type_line, wait_for)

# SPEC §2 log line: `2023-07-17T17:00:25,016 - Requests2XX.Count:1.0|#Level:Host|#hostname:h,timestamp:1689613225`
LOG_LINE = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2},\d{3}) - "
    r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.(?P<unit>[A-Za-z]+):"
    r"(?P<value>-?\d+(?:\.\d+)?(?:E-?\d+)?|NaN|-?Infinity)"
    r"\|#(?P<dims>[^|]*)"
    r"\|#hostname:(?P<host>[^,|]+)(?:,requestID:[^,|]+)?,timestamp:(?P<ts>\d+)$")


def parse_metric_log(path) -> list[re.Match]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        m = LOG_LINE.match(line)
        assert m, f"{path.name}: line not in TorchServe's metric log format: {line!r}"
        out.append(m)
    return out


def ping(server, n=1):
    for _ in range(n):
        assert requests.get(f"{server.inference_url}/ping", timeout=5).status_code == 200


# ---------------------------------------------------------------------------------------
# metrics_mode


def test_log_mode(tserve, tmp_path):
    metrics_dir = tmp_path / "metrics-logs"
    server = tserve(config={"metrics_mode": "log", "metric_time_interval": 1},
                    env={"METRICS_LOCATION": str(metrics_dir)})
    r = server.metrics()
    assert r.status_code == 200
    assert r.text == ""
    ping(server, 3)
    for _ in range(2):
        assert requests.get(f"{server.inference_url}/nope", timeout=5).status_code == 404
    log = metrics_dir / "ts_metrics.log"

    def complete():
        lines = parse_metric_log(log)
        by_name = {}
        for m in lines:
            by_name.setdefault(m["name"], []).append(m)
        four = sum(float(m["value"]) for m in by_name.get("Requests4XX", []))
        return (by_name if "Requests2XX" in by_name and four == 2.0
                and len(by_name.get("CPUUtilization", [])) >= 2 else None)

    by_name = wait_for(complete, 10, f"Requests2XX, Requests4XX (sum 2.0) and two "
                       f"CPUUtilization samples in {log}:\n"
                       + (log.read_text()[-3000:] if log.exists() else "(missing)"))
    now = time.time()
    for name, matches in by_name.items():
        for m in matches:
            assert m["host"] == HOSTNAME, m.group(0)
            assert abs(int(m["ts"]) - now) < 120, m.group(0)
            datetime.datetime.strptime(m["date"], "%Y-%m-%dT%H:%M:%S,%f")
    for m in by_name["Requests2XX"] + by_name["Requests4XX"]:
        assert m["unit"] == "Count"
        assert m["dims"] == "Level:Host", m.group(0)
    for name in HOST_FAMILIES:
        assert name in by_name, f"no {name} line in ts_metrics.log"
    for m in by_name["CPUUtilization"]:
        assert m["unit"] == "Percent" and m["dims"] == "Level:Host", m.group(0)
    gpu = by_name.get("GPUUtilization", [])
    assert {m["dims"] for m in gpu} >= {"Level:Host,DeviceId:0", "Level:Host,DeviceId:1"}, \
        [m.group(0) for m in gpu]
    # METRICS_LOCATION, not the log dir, holds the metric logs.
    assert not (server.log_dir / "ts_metrics.log").exists()
    # /metrics stays empty in log mode, filtered or not.
    assert server.metrics().text == ""
    assert server.metrics("?name[]=Requests2XX").text == ""


def test_prometheus_mode_logs_no_metric_lines(server):
    ping(server, 2)
    requests.get(f"{server.inference_url}/nope", timeout=5)
    time.sleep(0.5)
    log = server.metrics_log_dir / "ts_metrics.log"
    names = "|".join(REQUEST_FAMILIES + HOST_FAMILIES)
    if log.exists():
        assert not re.search(names, log.read_text()), \
            f"prometheus mode wrote metric lines to {log}"


def test_legacy_mode(tserve):
    server = tserve(config={"metrics_mode": "legacy"})
    ping(server, 2)
    text = server.metrics().text
    assert family_names(text) == sorted(LEGACY_FAMILIES)
    assert text == "".join(f"{help_line(n)}\n{type_line(n)}\n" for n in sorted(LEGACY_FAMILIES))
    assert server.metrics("?name[]=Requests2XX").text == ""


def test_metrics_api_disabled(tserve):
    server = tserve(config={"enable_metrics_api": False})
    ping(server)
    assert requests.get(f"{server.management_url}/models", timeout=5).status_code == 200
    assert not port_accepts(server.ports["metrics"]), "metrics port accepts connections"
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{server.metrics_url}/metrics", timeout=5)
    # /metrics is not served by the other listeners either.
    assert requests.get(f"{server.inference_url}/metrics", timeout=5).status_code == 404


def test_disable_system_metrics(tserve):
    server = tserve(config={"disable_system_metrics": True, "metric_time_interval": 1})
    ping(server)
    time.sleep(1.5)
    text = server.metrics().text
    fams = families_by_name(text)
    for name in HOST_FAMILIES + GPU_FAMILIES:
        assert fams[name].samples == [], f"{name} sampled although disabled"
        assert f"{help_line(name)}\n{type_line(name)}\n" in text
    assert fams["Requests2XX"].samples, "request counters must still work"


def test_metric_time_interval_one_second(tserve):
    server = tserve(config={"metric_time_interval": 1})

    def cpu_line():
        fams = families_by_name(server.metrics().text)
        return fams["CPUUtilization"].samples
    wait_for(cpu_line, 5, "a CPUUtilization sample")
    time.sleep(2.2)
    samples = cpu_line()
    assert len(samples) == 1
    assert 0.0 <= samples[0].value <= 100.0


# ---------------------------------------------------------------------------------------
# metrics_config (metrics.yaml)

REDUCED_YAML = """\
dimensions:
  - &level "Level"
  - &hostname "Hostname"
ts_metrics:
  counter:
    - name: Requests2XX
      unit: Requests
      dimensions: [*level, *hostname]
  gauge:
    - name: CPUUtilization
      unit: Percent
      dimensions: [*level, *hostname]
"""


def test_custom_metrics_config(tserve, tmp_path):
    yaml_path = tmp_path / "reduced-metrics.yaml"
    yaml_path.write_text(REDUCED_YAML)
    server = tserve(config={"metrics_config": str(yaml_path)})
    ping(server, 2)
    assert requests.get(f"{server.inference_url}/nope", timeout=5).status_code == 404
    wait_for(lambda: families_by_name(server.metrics().text)["CPUUtilization"].samples, 5,
             "a CPUUtilization sample")
    text = server.metrics().text
    fams = families_by_name(text)
    listed = {n for n in fams if not n.startswith("process_")}
    assert listed == {"Requests2XX", "CPUUtilization"}, sorted(fams)
    assert fams["Requests2XX"].help_line == \
        "# HELP Requests2XX Torchserve prometheus counter metric with unit: Requests"
    assert fams["CPUUtilization"].help_line == help_line("CPUUtilization")
    assert [s.line for s in fams["Requests2XX"].samples][0].startswith(
        f'Requests2XX{{Level="Host",Hostname="{HOSTNAME}",}} ')


@pytest.mark.parametrize("content,line", [
    # An entry without a name, on line 6.
    ("dimensions:\n  - &level Level\nts_metrics:\n  counter:\n"
     "    - {name: Requests2XX, unit: Count, dimensions: [Level, Hostname]}\n"
     "    - {unit: Count, dimensions: [Level, Hostname]}\n", 6),
    # Broken YAML (an unclosed flow sequence).
    ("dimensions:\n  - &level Level\nts_metrics:\n  counter:\n"
     "    - name: Requests2XX\n      unit: Count\n      dimensions: [Level, Hostname\n"
     "  gauge: []\n", None),
])
def test_bad_metrics_config(tmp_path, content, line):
    yaml_path = tmp_path / "broken-metrics.yaml"
    yaml_path.write_text(content)
    rc, out, err = run_expect_exit(tmp_path / "run", config={"metrics_config": str(yaml_path)})
    assert rc == 2, f"exit {rc}, expected 2; stderr: {err}"
    assert str(yaml_path) in err or yaml_path.name in err, f"file not named: {err!r}"
    nums = [int(n) for n in re.findall(r"(?:line\s*|:)(\d+)", err)]
    assert nums, f"no line number in {err!r}"
    if line is not None:
        assert line in nums, f"expected line {line} in {err!r}"


def test_missing_metrics_config(tmp_path):
    missing = tmp_path / "nope" / "metrics.yaml"
    rc, out, err = run_expect_exit(tmp_path / "run", config={"metrics_config": str(missing)})
    assert rc == 2, f"exit {rc}; stderr: {err}"
    assert str(missing) in err


# ---------------------------------------------------------------------------------------
# config.properties


@pytest.mark.parametrize("key,value,allowed", [
    ("metrics_mode", "fast", ["prometheus", "log", "legacy"]),
    ("metric_time_interval", "soon", []),
    ("metric_time_interval", "-3", []),
    ("enable_metrics_api", "maybe", ["true", "false"]),
    ("disable_system_metrics", "yes please", ["true", "false"]),
    ("max_request_size", "big", []),
    ("metrics_address", "http://127.0.0.1:notaport", []),
])
def test_bad_config_value(tmp_path, key, value, allowed):
    rc, out, err = run_expect_exit(tmp_path, config={key: value})
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, f"exit {rc}, expected 2; stderr: {err}"
    assert len(lines) == 1, f"expected one stderr line, got {lines}"
    assert key in lines[0] and value in lines[0], lines[0]
    for word in allowed:
        assert word in lines[0], f"allowed value {word!r} not named: {lines[0]}"


def test_unknown_key_warns_and_starts(tserve):
    server = tserve(config={"no_such_key_for_tserve": "1"})
    ping(server)
    wait_for(lambda: "no_such_key_for_tserve" in server.logs_text(), 5,
             "a warning naming the unknown key (stderr or logs)")


def test_env_override_needs_enable_envvars_config(tserve):
    on = tserve(config={"enable_envvars_config": True}, env={"TS_METRICS_MODE": "legacy"})
    assert family_names(on.metrics().text) == sorted(LEGACY_FAMILIES)
    off = tserve(env={"TS_METRICS_MODE": "legacy"})
    assert "Requests2XX" in family_names(off.metrics().text)
    assert "CPUUtilization" in family_names(off.metrics().text)


def test_env_override_beats_file(tserve):
    server = tserve(config={"enable_envvars_config": True, "metrics_mode": "legacy"},
                    env={"TS_METRICS_MODE": "prometheus"})
    assert "Requests2XX" in family_names(server.metrics().text)


def test_dollar_var_expansion(tserve):
    server = tserve(config={"metrics_mode": "$$TSERVE_E2E_MODE$$"},
                    env={"TSERVE_E2E_MODE": "legacy"})
    assert family_names(server.metrics().text) == sorted(LEGACY_FAMILIES)


# ---------------------------------------------------------------------------------------
# CLI


def test_help_and_version(tmp_path):
    rc, out, err = run_expect_exit(tmp_path / "h", args=["--help"])
    assert rc == 0, err
    text = out + err
    for flag in ("--start", "--stop", "--foreground", "--ts-config", "--model-store"):
        assert flag in text, f"{flag} not in --help"
    rc, out, err = run_expect_exit(tmp_path / "v", args=["--version"])
    assert rc == 0, err
    assert re.search(r"\d+\.\d+", out + err), out + err


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:"):
                    return "Z" not in line.split()[1]
    except FileNotFoundError:
        return False
    return True


def test_background_start_and_stop(tmp_path):
    ports = free_ports(3)
    store = tmp_path / "store"
    store.mkdir()
    cfg = {"inference_address": f"http://127.0.0.1:{ports[0]}",
           "management_address": f"http://127.0.0.1:{ports[1]}",
           "metrics_address": f"http://127.0.0.1:{ports[2]}", "model_store": str(store)}
    cfg_path = tmp_path / "config.properties"
    cfg_path.write_text(format_properties(cfg))
    env = base_env(tmp_path, nvml="standin")
    pid_file = tmp_path / "tserve.pid"
    pid = None
    try:
        with open(tmp_path / "start.out", "wb") as out, open(tmp_path / "start.err", "wb") as er:
            proc = subprocess.run([str(BINARY), "--start", "--ts-config", str(cfg_path)],
                                  cwd=tmp_path, env=env, stdout=out, stderr=er,
                                  stdin=subprocess.DEVNULL, timeout=20)
        said = (tmp_path / "start.out").read_text() + (tmp_path / "start.err").read_text()
        assert proc.returncode == 0, said
        assert env["LOG_LOCATION"] in said, f"--start did not say where logs go: {said!r}"
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 10, "the pid file")
        pid = int(pid_file.read_text().strip())
        assert _pid_alive(pid)
        wait_for(lambda: all(port_accepts(p) for p in ports), 10, "the listeners")
        r = requests.get(f"http://127.0.0.1:{ports[2]}/metrics", timeout=5)
        assert r.status_code == 200 and "Requests2XX" in r.text
        # A second --start while it runs refuses (TorchServe: "already running") and leaves
        # the running server alone.
        second = subprocess.run([str(BINARY), "--start", "--ts-config", str(cfg_path)],
                                cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=20, stdin=subprocess.DEVNULL)
        assert second.returncode != 0, second.stdout + second.stderr
        assert (second.stdout + second.stderr).strip()
        assert int(pid_file.read_text().strip()) == pid and _pid_alive(pid)
        assert requests.get(f"http://127.0.0.1:{ports[0]}/ping", timeout=5).status_code == 200
        stop = subprocess.run([str(BINARY), "--stop"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=20,
                              stdin=subprocess.DEVNULL)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        wait_for(lambda: not _pid_alive(pid), 15, f"pid {pid} to exit after --stop")
        wait_for(lambda: not pid_file.exists(), 5, "the pid file to go away")
        assert not any(port_accepts(p) for p in ports)
        # Stopping again with nothing running says so (TorchServe: "not currently running").
        again = subprocess.run([str(BINARY), "--stop"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=20,
                               stdin=subprocess.DEVNULL)
        assert (again.stdout + again.stderr).strip(), "--stop with nothing running is silent"
    finally:
        if pid is not None and _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_sigint_is_graceful(tmp_path):
    server = launch(tmp_path / "s")
    try:
        ping(server)
        server.proc.send_signal(signal.SIGINT)
        rc = server.proc.wait(timeout=15)
        assert rc == 0, server.describe()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def _sigterm_exits_within(server, limit: float, what: str) -> None:
    t0 = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    try:
        rc = server.proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        server.failure_reported = True
        raise AssertionError(f"tserve still running {limit:.0f} s after SIGTERM with {what} "
                             f"open (http_read_timeout {server.config.get('http_read_timeout', 30)}"
                             f" s, http_idle_timeout {server.config.get('http_idle_timeout', 60)}"
                             " s)") from None
    assert rc == 0, server.describe()
    server.stopped_rc = rc
    assert time.monotonic() - t0 < limit


def test_sigterm_with_idle_connections_exits_promptly(tserve):
    """Graceful shutdown does not wait for clients with no request in flight: an idle
    keep-alive connection and a silent one (default timeouts: idle 60 s, read 30 s)."""
    import socket

    server = tserve()
    idle = socket.create_connection(("127.0.0.1", server.ports["inference"]), timeout=5)
    silent = socket.create_connection(("127.0.0.1", server.ports["metrics"]), timeout=5)
    try:
        idle.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(0.2)
        _sigterm_exits_within(server, 8, "an idle keep-alive and a silent connection")
    finally:
        idle.close()
        silent.close()


def test_sigterm_does_not_wait_for_an_incomplete_request_head(tserve):
    """A client that sent half a request head has nothing in flight yet; shutdown must not
    wait the whole http_read_timeout (30 s by default) for it, or one slow client holds
    every restart (Kubernetes kills after 30 s)."""
    import socket

    server = tserve()
    partial = socket.create_connection(("127.0.0.1", server.ports["management"]), timeout=5)
    try:
        partial.sendall(b"GET /models HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.2)
        _sigterm_exits_within(server, 8, "a connection that sent half a request head")
    finally:
        partial.close()


def test_shipped_metrics_yaml_matches_builtin_default(tserve):
    """config/metrics.yaml (the shipped default) gives the same families as no
    metrics_config at all."""
    from e2e_util import REPO_ROOT

    shipped = REPO_ROOT / "config" / "metrics.yaml"
    assert shipped.is_file(), f"{shipped} missing"
    a = tserve(config={"metrics_config": str(shipped)})
    b = tserve()
    fa = families_by_name(a.metrics().text)
    fb = families_by_name(b.metrics().text)
    assert sorted(fa) == sorted(fb)
    assert [f.help_line for f in fa.values()] == [f.help_line for f in fb.values()]
    assert [f.type_line for f in fa.values()] == [f.type_line for f in fb.values()]


def test_properties_syntax(tserve, tmp_path):
    """Java properties syntax end to end: `key: value`, `key = value`, `key value`,
    `!`/`#` comments, backslash continuation, leading blanks."""
    p = free_ports(3)
    text = (f"# a hash comment\n! a bang comment\n"
            f"inference_address: http://127.0.0.1:{p[0]}\n"
            f"   management_address = http://127.0.0.1:{p[1]}\n"
            f"metrics_address http://127.0.0.1:{p[2]}\n"
            f"metrics_mode=leg\\\n      acy\n"
            f"model_store={tmp_path}\n")
    server = tserve(config_text=text,
                    ports={"inference": p[0], "management": p[1], "metrics": p[2]})
    assert family_names(server.metrics().text) == sorted(LEGACY_FAMILIES)


def test_ts_config_file_env(tmp_path):
    """TS_CONFIG_FILE names the config when --ts-config is absent."""
    from e2e_util import default_config

    ports = free_ports(3)
    cfg = default_config(tmp_path, ports)
    cfg["metrics_mode"] = "legacy"
    path = tmp_path / "via-env.properties"
    path.write_text(format_properties(cfg))
    env = base_env(tmp_path)
    env["TS_CONFIG_FILE"] = str(path)
    with open(tmp_path / "err.txt", "wb") as err:
        proc = subprocess.Popen([str(BINARY), "--start", "--foreground"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_accepts(ports[2]), 15, "the metrics listener")
        r = requests.get(f"http://127.0.0.1:{ports[2]}/metrics", timeout=5)
        assert family_names(r.text) == sorted(LEGACY_FAMILIES)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_env_override_value(tmp_path):
    rc, out, err = run_expect_exit(tmp_path, config={"enable_envvars_config": True},
                                   env={"TS_METRICS_MODE": "fast"})
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and "fast" in lines[0] and \
        ("metrics_mode" in lines[0] or "TS_METRICS_MODE" in lines[0]), lines
