"""Helpers shared by the end-to-end tests: launching tserve, raw HTTP, exposition parsing.

Everything here talks only to 127.0.0.1 and writes only below the temp dirs it is given.
"""

from __future__ import annotations

import collections
import dataclasses
import decimal
import math
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import time
from typing import Callable, Iterable

import requests

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = pathlib.Path(os.environ.get("TSERVE_BINARY", str(REPO_ROOT / "build" / "tserve"))).resolve()
NVML_STANDIN = pathlib.Path(
    os.environ.get("TSERVE_NVML_STANDIN",
                   str(REPO_ROOT / "build" / "tests" / "libnvidia-ml-standin.so"))).resolve()
HOSTNAME = socket.gethostname()

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

NOT_FOUND_BODY = {
    "code": 404,
    "type": "ResourceNotFoundException",
    "message": "Requested resource is not found, please refer to API document.",
}
METHOD_NOT_ALLOWED_BODY = {
    "code": 405,
    "type": "MethodNotAllowedException",
    "message": "Requested method is not allowed, please refer to API document.",
}

# The TorchServe families of the default metrics.yaml: name -> (type, unit).
TORCHSERVE_FAMILIES = {
    "Requests2XX": ("counter", "Count"),
    "Requests4XX": ("counter", "Count"),
    "Requests5XX": ("counter", "Count"),
    "ts_inference_requests_total": ("counter", "Count"),
    "ts_inference_latency_microseconds": ("counter", "Microseconds"),
    "ts_queue_latency_microseconds": ("counter", "Microseconds"),
    "QueueTime": ("gauge", "Milliseconds"),
    "WorkerThreadTime": ("gauge", "Milliseconds"),
    "WorkerLoadTime": ("gauge", "Milliseconds"),
    "HandlerTime": ("gauge", "ms"),
    "PredictionTime": ("gauge", "ms"),
    "CPUUtilization": ("gauge", "Percent"),
    "MemoryUsed": ("gauge", "Megabytes"),
    "MemoryAvailable": ("gauge", "Megabytes"),
    "MemoryUtilization": ("gauge", "Percent"),
    "DiskUsage": ("gauge", "Gigabytes"),
    "DiskAvailable": ("gauge", "Gigabytes"),
    "DiskUtilization": ("gauge", "Percent"),
    "GPUUtilization": ("gauge", "Percent"),
    "GPUMemoryUtilization": ("gauge", "Percent"),
    "GPUMemoryUsed": ("gauge", "Megabytes"),
}
# tserve's own process families (lint-clean names): name -> type.
PROCESS_FAMILIES = {
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
}
HOST_FAMILIES = ["CPUUtilization", "MemoryUsed", "MemoryAvailable", "MemoryUtilization",
                 "DiskUsage", "DiskAvailable", "DiskUtilization"]
GPU_FAMILIES = ["GPUUtilization", "GPUMemoryUtilization", "GPUMemoryUsed"]
MODEL_FAMILIES = ["ts_inference_requests_total", "ts_inference_latency_microseconds",
                  "ts_queue_latency_microseconds", "QueueTime", "WorkerThreadTime",
                  "WorkerLoadTime", "HandlerTime", "PredictionTime"]
LEGACY_FAMILIES = ["ts_inference_latency_microseconds", "ts_inference_requests_total",
                   "ts_queue_latency_microseconds"]
REQUEST_FAMILIES = ["Requests2XX", "Requests4XX", "Requests5XX"]


def help_line(name: str) -> str:
    mtype, unit = TORCHSERVE_FAMILIES[name]
    return f"# HELP {name} Torchserve prometheus {mtype} metric with unit: {unit}"


def type_line(name: str) -> str:
    return f"# TYPE {name} {TORCHSERVE_FAMILIES[name][0]}"


# ---------------------------------------------------------------------------------------
# Waiting


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Polls predicate until it returns something truthy; fails with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - reported below
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                                 + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


# ---------------------------------------------------------------------------------------
# Ports

_handed_out: set[int] = set()


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports, never one handed out before in this run."""
    ports: list[int] = []
    held = []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            held.append(s)
            port = s.getsockname()[1]
            if port in _handed_out:
                continue
            _handed_out.add(port)
            ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def listening_sockets() -> list[tuple[str, int, str]]:
    """(family, port, local address hex) of every TCP socket in LISTEN state on this host."""
    out = []
    for fam in ("tcp", "tcp6"):
        try:
            lines = pathlib.Path(f"/proc/net/{fam}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state != "0A":
                continue
            addr, port_hex = local.rsplit(":", 1)
            out.append((fam, int(port_hex, 16), addr))
    return out


# ---------------------------------------------------------------------------------------
# Config and launching


def format_properties(config: dict) -> str:
    lines = ["# written by tests/e2e"]
    for key, value in config.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class Server:
    """A running `tserve --start --foreground`, started by launch()."""

    proc: subprocess.Popen
    workdir: pathlib.Path
    config: dict
    config_path: pathlib.Path
    env: dict
    ports: dict  # "inference" | "management" | "metrics" -> port
    stdout_path: pathlib.Path
    stderr_path: pathlib.Path
    log_dir: pathlib.Path
    metrics_log_dir: pathlib.Path
    stopped_rc: int | None = None
    failure_reported: bool = False  # a test already failed on its shutdown: skip teardown check

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['inference']}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['management']}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['metrics']}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, listener: str) -> str:
        return f"http://127.0.0.1:{self.ports[listener]}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def logs_text(self) -> str:
        """stdout, stderr and every file under the log dirs, for searching."""
        parts = [self.stdout(), self.stderr()]
        for d in {self.log_dir, self.metrics_log_dir}:
            if d.is_dir():
                for f in sorted(d.rglob("*")):
                    if f.is_file():
                        parts.append(f.read_text(errors="replace"))
        return "\n".join(parts)

    def describe(self) -> str:
        return (f"tserve pid {self.proc.pid} rc={self.proc.poll()}\n--- config ---\n"
                f"{self.config_path.read_text()}--- stderr (tail) ---\n{self.stderr()[-4000:]}"
                f"\n--- stdout (tail) ---\n{self.stdout()[-2000:]}")

    def metrics(self, query: str = "", *, gzip_ok: bool = False, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        headers.setdefault("Accept-Encoding", "gzip" if gzip_ok else "identity")
        return requests.get(f"{self.metrics_url}/metrics{query}", headers=headers, timeout=10, **kwargs)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def assert_alive(self) -> None:
        assert self.alive(), "tserve died:\n" + self.describe()
        r = requests.get(f"{self.inference_url}/ping", timeout=5)
        assert r.status_code == 200, self.describe()

    def stop(self) -> int:
        """SIGTERM, wait, and return the exit code (graceful shutdown must give 0)."""
        if self.stopped_rc is not None:
            return self.stopped_rc
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.stopped_rc = -9
                raise AssertionError(f"tserve did not exit within {STOP_TIMEOUT_S}s of SIGTERM\n"
                                     + self.describe())
        self.stopped_rc = self.proc.returncode
        return self.stopped_rc


def check_binary() -> None:
    if not BINARY.is_file() or not os.access(BINARY, os.X_OK):
        raise AssertionError(f"tserve binary not found at {BINARY}: run `make build` first "
                             "(or set TSERVE_BINARY)")


def base_env(workdir: pathlib.Path, nvml: str | os.PathLike | None = "standin") -> dict:
    """Environment for a tserve under workdir: pid file and logs inside it, no TS_* leaks."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TS_") and k not in ("LOG_LOCATION", "METRICS_LOCATION",
                                                     "TSERVE_NVML_LIBRARY")}
    env["TSERVE_PID_FILE"] = str(workdir / "tserve.pid")
    env["LOG_LOCATION"] = str(workdir / "logs")
    if nvml == "standin":
        if not NVML_STANDIN.is_file():
            raise AssertionError(f"NVML stand-in not found at {NVML_STANDIN}: build the tests "
                                 "(make build) or set TSERVE_NVML_STANDIN")
        env["TSERVE_NVML_LIBRARY"] = str(NVML_STANDIN)
    elif nvml is not None:
        env["TSERVE_NVML_LIBRARY"] = str(nvml)
    return env


def default_config(workdir: pathlib.Path, ports: list[int]) -> dict:
    model_store = workdir / "model-store"
    model_store.mkdir(exist_ok=True)
    return {
        "inference_address": f"http://127.0.0.1:{ports[0]}",
        "management_address": f"http://127.0.0.1:{ports[1]}",
        "metrics_address": f"http://127.0.0.1:{ports[2]}",
        "model_store": str(model_store),
    }


def launch(workdir: pathlib.Path, config: dict | None = None, env: dict | None = None,
           args: Iterable[str] = (), nvml: str | os.PathLike | None = "standin",
           wait: bool = True, config_text: str | None = None,
           listen_ports: dict | None = None, fd_limit: int | None = None) -> Server:
    """Starts tserve in the foreground under workdir and waits until its listeners accept.

    `config` entries override the defaults (free loopback ports, an empty model store);
    a value of None removes a key. `env` entries are added to the environment.
    With `config_text`, that text is the config file verbatim and `listen_ports` says which
    ports it configures ({"inference": p, "management": p, "metrics": p}).
    `fd_limit` lowers tserve's RLIMIT_NOFILE (soft and hard) to that many descriptors.
    """
    check_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    ports = free_ports(3)
    cfg = default_config(workdir, ports)
    cfg.update(config or {})
    cfg = {k: v for k, v in cfg.items() if v is not None}
    config_path = workdir / "config.properties"
    config_path.write_text(format_properties(cfg) if config_text is None else config_text)
    full_env = base_env(workdir, nvml)
    full_env.update(env or {})
    stdout_path = workdir / "stdout.txt"
    stderr_path = workdir / "stderr.txt"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [str(BINARY), "--start", "--foreground", "--ts-config", str(config_path), *args],
            cwd=workdir, env=full_env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
            preexec_fn=None if fd_limit is None else _lower_fd_limit(fd_limit))
    port_of = dict(listen_ports or {})
    for listener, key in (("inference", "inference_address"),
                          ("management", "management_address"),
                          ("metrics", "metrics_address")):
        m = re.search(r":(\d+)$", str(cfg.get(key, "")))
        if m and config_text is None:
            port_of[listener] = int(m.group(1))
    server = Server(proc=proc, workdir=workdir, config=cfg, config_path=config_path,
                    env=full_env, ports=port_of, stdout_path=stdout_path,
                    stderr_path=stderr_path, log_dir=pathlib.Path(full_env["LOG_LOCATION"]),
                    metrics_log_dir=pathlib.Path(full_env.get("METRICS_LOCATION",
                                                              full_env["LOG_LOCATION"])))
    if wait:
        wait_ready(server)
    return server


def _lower_fd_limit(n: int) -> Callable[[], None]:
    def apply() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return apply


def wait_ready(server: Server) -> None:
    """Waits until every configured listener accepts TCP connections (no HTTP request is
    sent, so the request counters stay at zero)."""
    metrics_enabled = str(server.config.get("enable_metrics_api", "true")).lower() != "false"
    wanted = [p for name, p in server.ports.items() if name != "metrics" or metrics_enabled]
    deadline = time.monotonic() + START_TIMEOUT_S
    pending = list(wanted)
    while pending:
        if server.proc.poll() is not None:
            raise AssertionError("tserve exited during startup\n" + server.describe())
        pending = [p for p in pending if not port_accepts(p)]
        if not pending:
            break
        if time.monotonic() > deadline:
            server.proc.kill()
            server.proc.wait()
            raise AssertionError(f"tserve did not listen on {pending} within "
                                 f"{START_TIMEOUT_S}s\n" + server.describe())
        time.sleep(0.05)


def run_expect_exit(workdir: pathlib.Path, config: dict | None = None, env: dict | None = None,
                    args: Iterable[str] | None = None, timeout: float = 15.0,
                    nvml: str | os.PathLike | None = None) -> tuple[int, str, str]:
    """Runs tserve expecting it to exit by itself; returns (rc, stdout, stderr).
    Kills it (and fails) when it is still running after `timeout`."""
    check_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [str(BINARY)]
    if config is not None:
        ports = free_ports(3)
        cfg = default_config(workdir, ports)
        cfg.update(config)
        cfg = {k: v for k, v in cfg.items() if v is not None}
        config_path = workdir / "config.properties"
        config_path.write_text(format_properties(cfg))
        cmd += ["--start", "--foreground", "--ts-config", str(config_path)]
    cmd += list(args or [])
    full_env = base_env(workdir, nvml)
    full_env.update(env or {})
    out_p, err_p = workdir / "stdout.txt", workdir / "stderr.txt"
    with open(out_p, "wb") as out, open(err_p, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=workdir, env=full_env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{cmd} still running after {timeout}s (expected it to exit)\n"
                             f"stderr: {err_p.read_text(errors='replace')[-3000:]}")
    return rc, out_p.read_text(errors="replace"), err_p.read_text(errors="replace")


# ---------------------------------------------------------------------------------------
# Exposition format parsing (strict, for TorchServe's text format)

_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)",?')
_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^\n]*\})? (\S+)$")


@dataclasses.dataclass
class Sample:
    name: str
    labels: dict
    label_text: str  # the raw "{...}" text, "" when absent
    value_text: str
    line: str

    @property
    def value(self) -> float:
        return float(self.value_text.replace("Inf", "inf"))


@dataclasses.dataclass
class Family:
    name: str
    help: str | None
    type: str | None
    help_line: str | None
    type_line: str | None
    samples: list


def parse_labels(text: str) -> dict:
    """Parses '{a="x",b="y",}' (TorchServe style, trailing comma) strictly."""
    assert text.startswith("{") and text.endswith("}"), text
    inner = text[1:-1]
    labels = {}
    pos = 0
    while pos < len(inner):
        m = _LABEL_RE.match(inner, pos)
        assert m, f"bad label syntax at {inner[pos:]!r} in {text!r}"
        assert m.group(1) not in labels, f"repeated label {m.group(1)} in {text!r}"
        labels[m.group(1)] = m.group(2)
        pos = m.end()
    return labels


def parse_exposition(text: str) -> list[Family]:
    """Parses text format 0.0.4 into families in output order; fails on anything odd."""
    families: list[Family] = []
    current: Family | None = None
    if text == "":
        return families
    assert text.endswith("\n"), "exposition must end with a newline"
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            rest = line[len("# HELP "):]
            name, _, help_text = rest.partition(" ")
            current = Family(name=name, help=help_text, type=None, help_line=line,
                             type_line=None, samples=[])
            families.append(current)
        elif line.startswith("# TYPE "):
            name, _, mtype = line[len("# TYPE "):].partition(" ")
            assert mtype in ("counter", "gauge", "histogram", "summary", "untyped"), line
            if current is None or current.name != name or current.type is not None:
                current = Family(name=name, help=None, type=None, help_line=None,
                                 type_line=None, samples=[])
                families.append(current)
            current.type = mtype
            current.type_line = line
        elif line.startswith("#"):
            raise AssertionError(f"unexpected comment line {line!r}")
        else:
            m = _SAMPLE_RE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, label_text, value = m.group(1), m.group(2) or "", m.group(3)
            labels = parse_labels(label_text) if label_text else {}
            assert current is not None, f"sample before any HELP/TYPE: {line!r}"
            base = current.name
            allowed = {base}
            if current.type == "histogram":
                allowed = {base + "_bucket", base + "_sum", base + "_count"}
            elif current.type == "summary":
                allowed = {base, base + "_sum", base + "_count"}
            assert name in allowed, f"sample {name!r} inside family {base!r}: {line!r}"
            current.samples.append(Sample(name, labels, label_text, value, line))
    return families


def families_by_name(text: str) -> dict[str, Family]:
    fams = parse_exposition(text)
    out = {}
    for f in fams:
        assert f.name not in out, f"family {f.name} appears twice"
        out[f.name] = f
    return out


def family_names(text: str) -> list[str]:
    return [f.name for f in parse_exposition(text)]


def host_labels() -> dict:
    return {"Level": "Host", "Hostname": HOSTNAME}


def request_counters(text: str) -> dict[str, float]:
    """Requests2XX/4XX/5XX values (missing sample = 0) from an unfiltered scrape."""
    fams = families_by_name(text)
    out = {}
    for name in REQUEST_FAMILIES:
        assert name in fams, f"family {name} missing from /metrics"
        samples = fams[name].samples
        assert len(samples) <= 1, f"{name}: more than one series: {[s.line for s in samples]}"
        if samples:
            assert samples[0].labels == host_labels(), samples[0].line
            out[name] = samples[0].value
        else:
            out[name] = 0.0
    return out


# ---------------------------------------------------------------------------------------
# Java Double.toString (shortest repr), as SPEC §2 describes


def java_double(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "-0.0" if math.copysign(1.0, v) < 0 else "0.0"
    sign = "-" if v < 0 else ""
    d = decimal.Decimal(repr(abs(v)))  # Python's repr is the shortest round-trip form
    _, digits, exp = d.as_tuple()
    ds = "".join(map(str, digits)).lstrip("0") or "0"
    # value = 0.ds * 10^(point) where point = position of the decimal point in ds
    stripped = ds.rstrip("0")
    point = len(ds) + exp  # digits before the decimal point
    ds = stripped or "0"
    if 1e-3 <= abs(v) < 1e7:
        if point <= 0:
            body = "0." + "0" * (-point) + ds
        elif point >= len(ds):
            body = ds + "0" * (point - len(ds)) + ".0"
        else:
            body = ds[:point] + "." + ds[point:]
    else:
        n = point - 1
        frac = ds[1:] or "0"
        body = f"{ds[0]}.{frac}E{n}"
    return sign + body


# ---------------------------------------------------------------------------------------
# Raw HTTP


@dataclasses.dataclass
class RawResponse:
    status: int | None
    reason: str
    headers: dict
    body: bytes
    raw: bytes
    closed: bool  # the server closed the connection after it


def _read_response(sock: socket.socket, buf: bytes, deadline: float,
                   head: bool = False) -> tuple[RawResponse | None, bytes]:
    """Reads one response from sock (starting with already-read `buf`). Returns (response or
    None when the connection closed before any byte, remaining buffer)."""
    closed = False

    def more() -> bool:
        nonlocal buf, closed
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete response; got {buf[:300]!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            closed = True
            return False
        buf += chunk
        return True

    while b"\r\n\r\n" not in buf:
        if not more():
            if not buf:
                return None, b""
            raise AssertionError(f"connection closed mid-response: {buf[:300]!r}")
    head_bytes, _, rest = buf.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3}) ?(.*)$", lines[0])
    assert m, f"bad status line {lines[0]!r}"
    status, reason = int(m.group(1)), m.group(2)
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    buf = rest
    body = b""
    if head or status in (204, 304) or 100 <= status < 200:
        pass
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            while b"\r\n" not in buf:
                if not more():
                    raise AssertionError("closed inside chunked body")
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(buf) < size + 2:
                if not more():
                    raise AssertionError("closed inside chunk")
            body += buf[:size]
            buf = buf[size + 2:]
            if size == 0:
                break
    elif "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n:
            if not more():
                raise AssertionError("closed inside body")
        body, buf = buf[:n], buf[n:]
    else:
        while more():
            pass
        body, buf = buf, b""
    raw = head_bytes + b"\r\n\r\n" + body
    return RawResponse(status, reason, headers, body, raw, closed), buf


def raw_request(port: int, data: bytes, *, timeout: float = 5.0, head: bool = False,
                read_all: bool = False) -> RawResponse | None:
    """Sends raw bytes on a fresh connection and reads one response (None if the server
    closed without answering). With read_all, also waits for the server to close."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp, rest = _read_response(sock, b"", deadline, head=head)
        if resp is not None and read_all and not resp.closed:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                while sock.recv(65536):
                    pass
                resp.closed = True
            except (socket.timeout, TimeoutError):
                resp.closed = False
            except ConnectionResetError:
                resp.closed = True
        return resp


def status_class(status: int) -> str | None:
    if 200 <= status < 300:
        return "Requests2XX"
    if 400 <= status < 500:
        return "Requests4XX"
    if 500 <= status < 600:
        return "Requests5XX"
    return None


class Tally:
    """Counts the responses a test received, by class, to check Requests2XX/4XX/5XX."""

    def __init__(self, server: Server):
        self.server = server
        self.counts = collections.Counter({n: 0 for n in REQUEST_FAMILIES})
        self.log: list[str] = []

    def record(self, status: int | None, what: str = "") -> None:
        if status is None:
            return
        cls = status_class(status)
        if cls:
            self.counts[cls] += 1
        self.log.append(f"{status} {what}")

    def get(self, url: str, **kwargs) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def request(self, method: str, url: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        r = requests.request(method, url, **kwargs)
        self.record(r.status_code, f"{method} {url}")
        return r

    def expected(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.counts.items()}

    def assert_exact(self, timeout: float = 3.0) -> dict[str, float]:
        """Scrapes until the counters equal the tally (responses are counted once sent, so a
        scrape racing the last response may see one less); more than expected fails at once.
        Each scrape's own response is tallied after it."""
        deadline = time.monotonic() + timeout
        while True:
            expected = self.expected()
            r = self.server.metrics()
            assert r.status_code == 200, r.text
            self.record(r.status_code, "GET /metrics (tally)")
            seen = request_counters(r.text)
            if seen == expected:
                return seen
            too_many = any(seen[k] > expected[k] for k in expected)
            if too_many or time.monotonic() > deadline:
                raise AssertionError(
                    f"request counters: /metrics says {seen}, expected exactly {expected} "
                    f"from the responses received:\n  " + "\n  ".join(self.log[-60:]))
            time.sleep(0.05)


def require_tool(name: str) -> str:
    """Path of a tool the test needs; fails (never skips) with a clear message if missing."""
    import shutil

    path = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
    assert path, f"{name} is not installed: run scripts/install-deps.sh (the e2e suite needs it)"
    return path


# ---------------------------------------------------------------------------------------
# Models: the demo archives `make build` writes to build/model_store.

DEMO_STORE = pathlib.Path(os.environ.get("TSERVE_DEMO_STORE", REPO_ROOT / "build" / "model_store"))
ARCHIVER = pathlib.Path(os.environ.get("TSERVE_ARCHIVER", REPO_ROOT / "build" / "tserve-archiver"))


def demo_archive(name: str) -> pathlib.Path:
    path = DEMO_STORE / name
    if not path.exists():
        raise AssertionError(f"{path} missing: `make build` builds the demo models")
    return path


def store_with(workdir: pathlib.Path, *archives: str) -> pathlib.Path:
    """workdir/store holding copies of the named demo archives."""
    store = workdir / "store"
    store.mkdir(parents=True, exist_ok=True)
    for a in archives:
        shutil.copy(demo_archive(a), store / a)
    return store


EXAMPLE_PLUGIN = pathlib.Path(os.environ.get(
    "TSERVE_EXAMPLE_PLUGIN", REPO_ROOT / "build" / "examples" / "libexample_handler.so"))


def archive_example_plugin(store: pathlib.Path, name: str = "example",
                           version: str = "2.0") -> pathlib.Path:
    """Archives the example handler plugin (examples/custom_handler) into store/<name>.mar."""
    if not EXAMPLE_PLUGIN.exists():
        raise AssertionError(f"{EXAMPLE_PLUGIN} missing: `make build` builds the example plugin")
    store.mkdir(parents=True, exist_ok=True)
    staging = store.parent / f"{name}-plugin"
    staging.mkdir(exist_ok=True)
    shutil.copy(EXAMPLE_PLUGIN, staging / EXAMPLE_PLUGIN.name)
    subprocess.run([str(ARCHIVER), "--model-name", name, "--version", version,
                    "--handler", EXAMPLE_PLUGIN.name, "--extra-files",
                    str(staging / EXAMPLE_PLUGIN.name), "--export-path", str(store)],
                   check=True, timeout=60)
    return store / f"{name}.mar"


def archive_slow_noop(store: pathlib.Path, name: str = "slow", delay_ms: int = 50,
                      min_workers: int = 1, load_delay_ms: int = 0) -> pathlib.Path:
    """Archives the noop handler with model-config.yaml `delay_ms` (a stand-in for a slow
    model), `load_delay_ms` (a slow-loading one) and `min_workers` into store/<name>.mar."""
    store.mkdir(parents=True, exist_ok=True)
    staging = store.parent / f"{name}-config"
    staging.mkdir(exist_ok=True)
    cfg = staging / "model-config.yaml"
    cfg.write_text(f"minWorkers: {min_workers}\nmaxWorkers: {min_workers}\n"
                   f"delay_ms: {delay_ms}\nload_delay_ms: {load_delay_ms}\n")
    subprocess.run([str(ARCHIVER), "--model-name", name, "--version", "1.0",
                    "--handler", "noop", "--config-file", str(cfg),
                    "--export-path", str(store)], check=True, timeout=60)
    return store / f"{name}.mar"


def wait_healthy(server, timeout: float = 60.0) -> None:
    """Until /ping says Healthy (every model has its minimum of ready workers)."""
    def healthy():
        r = requests.get(f"{server.inference_url}/ping", timeout=5)
        return r.status_code == 200 and r.json() == {"status": "Healthy"}
    wait_for(healthy, timeout, "all models' workers ready (/ping Healthy)")


def metric_value(text: str, name: str, **labels) -> float | None:
    """The first sample named `name` whose labels include `labels`, or None."""
    for fam in parse_exposition(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def tally_from_now(server) -> "Tally":
    """A Tally that starts from the counters as they are (the /ping polls of wait_healthy
    were counted too); the baseline scrape itself is tallied."""
    tally = Tally(server)
    r = server.metrics()
    assert r.status_code == 200
    for k, v in request_counters(r.text).items():
        tally.counts[k] += int(v)
    tally.record(r.status_code, "GET /metrics (baseline)")
    return tally
