"""The Metrics API end to end: the seed's curl examples, TorchServe's format and regexes,
exact request counters, filter semantics, gzip, real parsers (prometheus_client, promtool),
GPU families with the NVML stand-in, process metrics."""

from __future__ import annotations

import gzip
import math
import os
import re
import subprocess
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from e2e_util import (CONTENT_TYPE, GPU_FAMILIES, HOST_FAMILIES, HOSTNAME, LEGACY_FAMILIES,
                      MODEL_FAMILIES, PROCESS_FAMILIES, REQUEST_FAMILIES, TORCHSERVE_FAMILIES,
                      Tally, families_by_name, family_names, help_line, host_labels,
                      java_double, parse_exposition, require_tool,
                      type_line, wait_for)

# TorchServe's own prometheus-mode test patterns (test/pytest/test_metrics.py), host part:
# every one must match exactly once.
TORCHSERVE_HOST_PATTERNS = [
    r'Requests2XX\{Level="Host",Hostname=".+",\} \d+\.\d+',
    r'CPUUtilization\{Level="Host",Hostname=".+",\} \d+\.\d+',
    r'MemoryUsed\{Level="Host",Hostname=".+",\} \d+\.\d+',
    r'MemoryAvailable\{Level="Host",Hostname=".+",\} \d+\.\d+',
    r'MemoryUtilization\{Level="Host",Hostname=".+",\} \d+\.\d+',
    r'DiskUsage\{Level="Host",Hostname=".+",\} \d+\.\d+',
    r'DiskUtilization\{Level="Host",Hostname=".+",\} \d+\.\d+',
    r'DiskAvailable\{Level="Host",Hostname=".+",\} \d+\.\d+',
    r"TYPE Requests2XX counter",
    r"TYPE ts_inference_requests_total counter",
    r"TYPE ts_inference_latency_microseconds counter",
    r"TYPE ts_queue_latency_microseconds counter",
    r"TYPE QueueTime gauge",
    r"TYPE WorkerThreadTime gauge",
    r"TYPE WorkerLoadTime gauge",
    r"TYPE CPUUtilization gauge",
]

# Names promtool may flag: the TorchServe-compatible legacy names, kept for compatibility.
PROMTOOL_ALLOWED_FINDINGS = {
    "Requests2XX", "Requests4XX", "Requests5XX",
    "ts_inference_requests_total", "ts_inference_latency_microseconds",
    "ts_queue_latency_microseconds",
    "QueueTime", "WorkerThreadTime", "WorkerLoadTime", "HandlerTime", "PredictionTime",
    "CPUUtilization", "MemoryUsed", "MemoryAvailable", "MemoryUtilization",
    "DiskUsage", "DiskAvailable", "DiskUtilization",
    "GPUUtilization", "GPUMemoryUtilization", "GPUMemoryUsed",
}

JAVA_DOUBLE_RE = re.compile(r"^(-?\d+\.\d+|-?\d\.\d+E-?\d+|NaN|\+Inf|-Inf)$")


def wait_host_samples(server, families=HOST_FAMILIES, timeout=10.0) -> str:
    """Scrapes until the first system-metrics sample is in (sampled once at start)."""
    def ready():
        text = server.metrics().text
        fams = families_by_name(text)
        return text if all(fams.get(f) and fams[f].samples for f in families) else None
    return wait_for(ready, timeout, f"samples of {families}")


def ping(server) -> None:
    r = requests.get(f"{server.inference_url}/ping", timeout=5)
    assert r.status_code == 200


@pytest.fixture(scope="module")
def shared(module_tserve):
    """One server for the read-only tests of this module, with host samples present and
    at least one 2xx counted."""
    server = module_tserve(name="shared")
    ping(server)
    wait_host_samples(server)
    return server


# ---------------------------------------------------------------------------------------
# The seed's curl examples


def test_seed_curl_example_full_output(server):
    curl = require_tool("curl")
    ping(server)  # so Requests2XX has a sample, as in the seed's output
    wait_host_samples(server)
    port = server.ports["metrics"]
    # Verbatim apart from the port: `curl http://127.0.0.1:8082/metrics`
    proc = subprocess.run(f"{curl} http://127.0.0.1:{port}/metrics", shell=True,
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    lines = out.splitlines()
    # Every HELP/TYPE line of the seed's output is there, byte for byte.
    for name in TORCHSERVE_FAMILIES:
        assert help_line(name) in lines, f"missing {help_line(name)!r}"
        assert type_line(name) in lines, f"missing {type_line(name)!r}"
    # TorchServe's own regexes, each matching exactly once.
    for pattern in TORCHSERVE_HOST_PATTERNS:
        matches = re.findall(pattern, out)
        assert len(matches) == 1, f"{pattern!r} matched {len(matches)} times"
    # Host gauges in the exact TorchServe line shape.
    for name in HOST_FAMILIES:
        rx = re.compile(rf'^{name}\{{Level="Host",Hostname="{re.escape(HOSTNAME)}",\}} '
                        r"(\d+\.\d+(E-?\d+)?)$", re.M)
        assert len(rx.findall(out)) == 1, f"{name}: no single exact host line in output"
    fams = families_by_name(out)
    # No models yet: the model families print HELP/TYPE only.
    for name in MODEL_FAMILIES:
        assert fams[name].samples == [], f"{name} has samples without models"


def test_seed_curl_example_filter(server):
    curl = require_tool("curl")
    ping(server)
    port = server.ports["metrics"]
    # Verbatim apart from the port (the seed's second example):
    cmd = (f'{curl} "http://127.0.0.1:{port}/metrics?name[]=ts_inference_latency_microseconds'
           f'&name[]=ts_queue_latency_microseconds" --globoff')
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    # Without models both families have no samples, so the filter leaves nothing.
    assert proc.stdout == ""
    # The same style with families that have samples.
    wait_host_samples(server, ["CPUUtilization"])
    cmd = (f'{curl} -sS -w "\\n%{{http_code}}" "http://127.0.0.1:{port}/metrics?'
           f'name[]=Requests2XX&name[]=CPUUtilization" --globoff')
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    body, _, code = proc.stdout.rpartition("\n")
    assert code == "200"
    fams = parse_exposition(body)
    assert [f.name for f in fams] == ["CPUUtilization", "Requests2XX"]
    for f in fams:
        assert f.help_line == help_line(f.name)
        assert f.type_line == type_line(f.name)
        assert len(f.samples) == 1
        assert f.samples[0].labels == host_labels()


# ---------------------------------------------------------------------------------------
# Format


def test_content_type_and_status(shared):
    r = shared.metrics()
    assert r.status_code == 200
    assert r.headers["Content-Type"] == CONTENT_TYPE
    assert "Content-Encoding" not in r.headers
    r = shared.metrics("?name[]=nope")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == CONTENT_TYPE


def test_every_family_present_with_exact_help_and_type(shared):
    fams = families_by_name(shared.metrics().text)
    for name in TORCHSERVE_FAMILIES:
        assert name in fams, f"family {name} missing"
        assert fams[name].help_line == help_line(name)
        assert fams[name].type_line == type_line(name)
    for name, mtype in PROCESS_FAMILIES.items():
        assert name in fams, f"family {name} missing"
        assert fams[name].type == mtype, f"{name}: TYPE {fams[name].type}, expected {mtype}"
        assert fams[name].help, f"{name}: empty HELP"


def test_families_sorted_and_unique(shared):
    text = shared.metrics().text
    names = family_names(text)
    assert len(names) == len(set(names)), "a family is printed twice"
    assert names == sorted(names), f"families not sorted by name: {names}"
    # HELP comes right before TYPE for every family.
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert lines[i + 1].startswith(f"# TYPE {name} "), lines[i:i + 2]


def test_samples_use_torchserve_label_and_number_format(shared):
    text = shared.metrics().text
    for fam in parse_exposition(text):
        for s in fam.samples:
            if fam.name in TORCHSERVE_FAMILIES:
                # Every label followed by a comma, the last one too.
                assert s.label_text.endswith(',}'), s.line
                assert s.labels.get("Hostname") == HOSTNAME or \
                    s.labels.get("hostname") == HOSTNAME, s.line
            assert JAVA_DOUBLE_RE.match(s.value_text), s.line
            assert s.value_text == java_double(s.value), \
                f"{s.line!r}: Java Double.toString gives {java_double(s.value)}"
    # No timestamps, no # EOF.
    assert "# EOF" not in text


def test_help_type_only_families_on_fresh_server(server):
    # First response of a fresh server: nothing observed yet for requests or models.
    text = server.metrics().text
    for name in REQUEST_FAMILIES + MODEL_FAMILIES:
        block = f"{help_line(name)}\n{type_line(name)}\n"
        assert block in text, f"{name}: HELP/TYPE block missing"
        idx = text.index(block) + len(block)
        rest = text[idx:]
        assert rest == "" or rest.startswith("# HELP "), \
            f"{name} (never observed) must print HELP/TYPE only; next line: {rest[:120]!r}"


def test_no_duplicate_series(shared):
    text = shared.metrics().text
    seen = set()
    for fam in parse_exposition(text):
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in seen, f"duplicate series {s.line!r}"
            seen.add(key)


def test_prometheus_client_parser_reads_every_family(shared):
    text = shared.metrics().text
    ours = families_by_name(text)
    parsed = {f.name: f for f in text_string_to_metric_families(text)}

    def client_name(name, mtype):
        return name[:-len("_total")] if mtype == "counter" and name.endswith("_total") else name

    for name, fam in ours.items():
        cname = client_name(name, fam.type)
        assert cname in parsed, f"prometheus_client did not read family {name}"
        pf = parsed[cname]
        assert pf.type == fam.type
        assert len(pf.samples) == len(fam.samples), name
        for ps, s in zip(pf.samples, fam.samples):
            assert ps.labels == s.labels
            assert ps.value == s.value or (math.isnan(ps.value) and math.isnan(s.value))
    assert len(parsed) == len(ours)


def test_promtool_check_metrics(shared):
    promtool = require_tool("promtool")
    text = shared.metrics().text
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30)
    findings = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode in (0, 3), \
        f"promtool exit {proc.returncode} (1 = parse error):\n" + "\n".join(findings)
    if proc.returncode == 3:
        assert findings, "promtool exit 3 without findings"
    for line in findings:
        name = line.split(" ", 1)[0]
        assert name in PROMTOOL_ALLOWED_FINDINGS, \
            f"promtool flags a non-legacy name: {line!r}"
        assert not name.startswith("process_")


# ---------------------------------------------------------------------------------------
# HEAD, gzip


def test_head(shared):
    r = requests.head(f"{shared.metrics_url}/metrics", headers={"Accept-Encoding": "identity"},
                      timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == CONTENT_TYPE
    assert r.content == b""


@pytest.mark.parametrize("accept", ["gzip", "gzip, deflate", "deflate, gzip;q=1.0, *;q=0.5"])
def test_gzip_round_trip(shared, accept):
    plain = shared.metrics(headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    r = requests.get(f"{shared.metrics_url}/metrics", headers={"Accept-Encoding": accept},
                     stream=True, timeout=10)
    assert r.status_code == 200
    assert r.headers.get("Content-Encoding") == "gzip"
    assert r.headers["Content-Type"] == CONTENT_TYPE
    raw = r.raw.read(decode_content=False)
    assert raw[:2] == b"\x1f\x8b", "not a gzip stream"
    text = gzip.decompress(raw).decode("utf-8")
    a, b = parse_exposition(plain.text), parse_exposition(text)
    assert [f.name for f in a] == [f.name for f in b]
    assert [f.help_line for f in a] == [f.help_line for f in b]
    key = lambda fams: [(f.name, [(s.name, s.label_text) for s in f.samples]) for f in fams]
    assert key(a) == key(b)


def test_gzip_filtered_and_not_offered(shared):
    r = requests.get(f"{shared.metrics_url}/metrics?name[]=CPUUtilization",
                     headers={"Accept-Encoding": "gzip"}, stream=True, timeout=10)
    raw = r.raw.read(decode_content=False)
    assert r.headers.get("Content-Encoding") == "gzip"
    assert family_names(gzip.decompress(raw).decode()) == ["CPUUtilization"]
    for accept in ("identity", "br"):
        r = requests.get(f"{shared.metrics_url}/metrics", headers={"Accept-Encoding": accept},
                         stream=True, timeout=10)
        raw = r.raw.read(decode_content=False)
        assert "Content-Encoding" not in r.headers, accept
        assert raw.startswith(b"# HELP "), accept


# ---------------------------------------------------------------------------------------
# Exact request counters


def test_request_counters_exact(server):
    tally = Tally(server)
    # A fresh server has answered nothing: all three families are HELP/TYPE only.
    tally.assert_exact()
    for _ in range(5):
        assert tally.get(f"{server.inference_url}/ping").status_code == 200
    for _ in range(3):
        assert tally.get(f"{server.management_url}/models").status_code == 200
    for listener in ("inference", "management", "metrics"):
        for _ in range(4):
            assert tally.get(f"{server.url(listener)}/no/such/path").status_code == 404
    for _ in range(2):
        assert tally.request("POST", f"{server.inference_url}/ping").status_code == 405
        assert tally.request("PUT", f"{server.metrics_url}/metrics").status_code == 405
        assert tally.request("DELETE", f"{server.metrics_url}/metrics").status_code == 405
        assert tally.request("HEAD", f"{server.metrics_url}/metrics").status_code == 200
        assert tally.get(f"{server.metrics_url}/metrics?name[]=Requests2XX").status_code == 200
        assert tally.get(f"{server.metrics_url}/metrics?name[]=nope").status_code == 200
    seen = tally.assert_exact()
    assert seen["Requests5XX"] == 0.0
    # 12 unknown paths (404) + 6 wrong methods (405).
    assert seen["Requests4XX"] == 12 + 6
    # And once more, after all that.
    tally.assert_exact()


def test_request_counters_count_metrics_scrapes(server):
    """A scrape sees the responses before it; its own counts once it is sent."""
    tally = Tally(server)
    values = []
    for _ in range(4):
        values.append(tally.assert_exact()["Requests2XX"])
    assert values == sorted(values) and values[-1] - values[0] >= 3


# ---------------------------------------------------------------------------------------
# Filter semantics (SPEC §2)


def _filtered(server, query):
    r = server.metrics(query)
    assert r.status_code == 200, f"{query}: {r.status_code} {r.text[:200]}"
    assert r.headers["Content-Type"] == CONTENT_TYPE
    return r.text


def test_filter_single_family(shared):
    text = _filtered(shared, "?name[]=Requests2XX")
    fams = parse_exposition(text)
    assert [f.name for f in fams] == ["Requests2XX"]
    assert fams[0].help_line == help_line("Requests2XX")
    assert fams[0].type_line == type_line("Requests2XX")
    assert len(fams[0].samples) == 1
    assert re.fullmatch(rf'Requests2XX\{{Level="Host",Hostname="{re.escape(HOSTNAME)}",\}} '
                        r"\d+\.0", fams[0].samples[0].line)


def test_filter_percent_encoded_key_and_value(shared):
    want = family_names(_filtered(shared, "?name[]=Requests2XX"))
    assert family_names(_filtered(shared, "?name%5B%5D=Requests2XX")) == want
    assert family_names(_filtered(shared, "?name%5b%5d=Requests2XX")) == want
    assert family_names(_filtered(shared, "?name[]=Requests%32XX")) == want


def test_filter_repeated_names_count_once(shared):
    text = _filtered(shared, "?name[]=Requests2XX&name[]=Requests2XX&name%5B%5D=Requests2XX")
    fams = parse_exposition(text)
    assert [f.name for f in fams] == ["Requests2XX"]
    assert len(fams[0].samples) == 1
    assert text.count("# HELP ") == 1


def test_filter_several_sorted(shared):
    text = _filtered(shared, "?name[]=GPUUtilization&name[]=Requests2XX&name[]=CPUUtilization"
                     "&name[]=process_open_fds")
    fams = parse_exposition(text)
    assert [f.name for f in fams] == ["CPUUtilization", "GPUUtilization", "Requests2XX",
                                      "process_open_fds"]
    assert len(fams[1].samples) == 2


def test_filter_unknown_name_gives_empty_body(shared):
    assert _filtered(shared, "?name[]=nope") == ""
    assert _filtered(shared, "?name[]=requests2xx") == ""  # names are case sensitive
    assert _filtered(shared, "?name[]=") == ""


def test_filter_known_and_unknown(shared):
    assert family_names(_filtered(shared, "?name[]=nope&name[]=Requests2XX")) == ["Requests2XX"]


def test_filter_drops_families_left_empty(shared):
    # Never observed: no samples, so the filtered output leaves them out entirely.
    assert _filtered(shared, "?name[]=Requests5XX") == ""
    assert _filtered(shared, "?name[]=ts_inference_requests_total&name[]=HandlerTime") == ""
    assert family_names(_filtered(shared, "?name[]=Requests5XX&name[]=CPUUtilization")) == \
        ["CPUUtilization"]


def test_filter_ignores_other_parameters(shared):
    full = family_names(shared.metrics().text)
    # Only name[] filters: a plain `name` (no brackets) or another key is ignored.
    assert family_names(_filtered(shared, "?name=Requests2XX")) == full
    assert family_names(_filtered(shared, "?foo=bar")) == full
    assert family_names(_filtered(shared, "?foo=bar&name[]=Requests2XX")) == ["Requests2XX"]


def test_filter_histograms_need_sample_names(shared):
    """A sample is kept only if its *sample* name is in the set: for a histogram X that is
    X_bucket / X_sum / X_count, never X itself."""
    fams = parse_exposition(shared.metrics().text)
    histograms = [f for f in fams if f.type == "histogram"]
    for h in histograms:
        assert _filtered(shared, f"?name[]={h.name}") == "", h.name
        if not h.samples:
            continue
        parts = parse_exposition(_filtered(shared, f"?name[]={h.name}_count"))
        assert [p.name for p in parts] == [h.name]
        assert {s.name for s in parts[0].samples} == {h.name + "_count"}
        full = parse_exposition(_filtered(
            shared, f"?name[]={h.name}_bucket&name[]={h.name}_sum&name[]={h.name}_count"))
        assert {s.name for s in full[0].samples} == {h.name + x for x in
                                                     ("_bucket", "_sum", "_count")}
    # For the counters, the family name is the sample name.
    assert family_names(_filtered(shared, "?name[]=process_cpu_seconds_total")) == \
        ["process_cpu_seconds_total"]


def test_filter_on_legacy_names_with_models_absent(shared):
    for name in LEGACY_FAMILIES:
        assert _filtered(shared, f"?name[]={name}") == ""


# ---------------------------------------------------------------------------------------
# Host, GPU and process metrics


def _meminfo_mb() -> dict:
    out = {}
    for line in open("/proc/meminfo"):
        k, v = line.split(":")
        out[k] = int(v.split()[0]) / 1024.0
    return out


def test_host_gauges_plausible(shared):
    fams = families_by_name(shared.metrics().text)
    val = {name: fams[name].samples[0].value for name in HOST_FAMILIES}
    for name in HOST_FAMILIES:
        assert len(fams[name].samples) == 1
        assert fams[name].samples[0].labels == host_labels()
    for name in ("CPUUtilization", "MemoryUtilization", "DiskUtilization"):
        assert 0.0 <= val[name] <= 100.0, (name, val[name])
    mem = _meminfo_mb()
    assert val["MemoryAvailable"] == pytest.approx(mem["MemAvailable"], rel=0.25)
    expected_util = 100.0 * (mem["MemTotal"] - mem["MemAvailable"]) / mem["MemTotal"]
    assert abs(val["MemoryUtilization"] - expected_util) < 15, (val, expected_util)
    assert 0 < val["MemoryUsed"] <= mem["MemTotal"]
    st = os.statvfs(shared.config["model_store"])
    total_gb = st.f_blocks * st.f_frsize / 2**30
    avail_gb = st.f_bavail * st.f_frsize / 2**30
    assert val["DiskAvailable"] == pytest.approx(avail_gb, rel=0.1, abs=0.5)
    assert 0 <= val["DiskUsage"] <= total_gb * 1.01


def test_gpu_families_with_nvml_standin(shared):
    fams = families_by_name(shared.metrics().text)
    h = HOSTNAME
    expected = {
        "GPUUtilization": [f'GPUUtilization{{Level="Host",DeviceId="0",Hostname="{h}",}} 42.0',
                           f'GPUUtilization{{Level="Host",DeviceId="1",Hostname="{h}",}} 7.0'],
        "GPUMemoryUsed": [f'GPUMemoryUsed{{Level="Host",DeviceId="0",Hostname="{h}",}} 1024.0',
                          f'GPUMemoryUsed{{Level="Host",DeviceId="1",Hostname="{h}",}} 512.0'],
        "GPUMemoryUtilization": [
            f'GPUMemoryUtilization{{Level="Host",DeviceId="0",Hostname="{h}",}} 25.0',
            f'GPUMemoryUtilization{{Level="Host",DeviceId="1",Hostname="{h}",}} 3.125'],
    }
    for name, lines in expected.items():
        assert [s.line for s in fams[name].samples] == lines, name


def test_gpu_families_without_nvml(tserve, tmp_path):
    server = tserve(nvml=tmp_path / "no-such-dir" / "libnvidia-ml.so.1")
    wait_host_samples(server)
    text = server.metrics().text
    fams = families_by_name(text)
    for name in GPU_FAMILIES:
        assert fams[name].samples == [], f"{name} has samples without NVML"
        assert f"{help_line(name)}\n{type_line(name)}\n" in text
    # And the filter drops them.
    assert server.metrics("?name[]=GPUUtilization").text == ""


def _proc_status(pid) -> dict:
    out = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def test_process_metrics_plausible(shared):
    fams = families_by_name(shared.metrics().text)
    now = time.time()
    v = {}
    for name in PROCESS_FAMILIES:
        assert len(fams[name].samples) == 1, f"{name}: {len(fams[name].samples)} samples"
        v[name] = fams[name].samples[0].value
    status = _proc_status(shared.pid)
    rss = int(status["VmRSS"].split()[0]) * 1024
    assert v["process_resident_memory_bytes"] > 0
    assert rss / 3 < v["process_resident_memory_bytes"] < rss * 3
    assert v["process_virtual_memory_bytes"] >= v["process_resident_memory_bytes"]
    assert now - 3600 < v["process_start_time_seconds"] <= now + 5
    assert 0 <= v["process_cpu_seconds_total"] < 3600
    nfds = len(os.listdir(f"/proc/{shared.pid}/fd"))
    assert 3 <= v["process_open_fds"] <= nfds + 20
    soft_limit = None
    for line in open(f"/proc/{shared.pid}/limits"):
        if line.startswith("Max open files"):
            soft_limit = int(line.split()[3])
    assert v["process_max_fds"] == soft_limit


def test_request_counters_exact_under_concurrency(server):
    """Parallel clients on all listeners: no response is lost or counted twice."""
    import concurrent.futures

    tally = Tally(server)
    tally.assert_exact()
    jobs = []
    for i in range(240):
        if i % 4 == 0:
            jobs.append(("GET", f"{server.inference_url}/ping"))
        elif i % 4 == 1:
            jobs.append(("GET", f"{server.metrics_url}/metrics"))
        elif i % 4 == 2:
            jobs.append(("GET", f"{server.management_url}/nope"))
        else:
            jobs.append(("POST", f"{server.metrics_url}/metrics"))

    def run(job):
        with requests.Session() as s:
            return s.request(job[0], job[1], timeout=10).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(run, jobs))
    for job, status in zip(jobs, statuses):
        tally.record(status, f"{job[0]} {job[1]}")
    assert statuses.count(200) == 120 and statuses.count(404) == 60 and statuses.count(405) == 60
    tally.assert_exact()


def test_prometheus_accept_header_gets_text_format(shared):
    """Prometheus 2.42 prefers OpenMetrics; tserve answers the 0.0.4 text format (OpenMetrics
    is opt-in only: it would rename the counters)."""
    accept = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
              "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    r = shared.metrics(headers={"Accept": accept, "Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == CONTENT_TYPE
    assert "# EOF" not in r.text
    assert "# TYPE Requests2XX counter" in r.text
