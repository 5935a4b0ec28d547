"""Bad input and HTTP behaviour: malformed requests, size limits, odd name[] values, unknown
paths and methods on every listener, keep-alive, idle/read timeouts (slowloris), loopback
binding; and at the end, the request counters must equal exactly what was received.

The tests of this module share one server and one tally of received responses; the last
test compares the tally with Requests2XX/4XX/5XX."""

from __future__ import annotations

import http.client
import json
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from e2e_util import (BINARY, METHOD_NOT_ALLOWED_BODY, NOT_FOUND_BODY, Tally, _read_response,
                      base_env, family_names, format_properties, listening_sockets, raw_request,
                      require_tool, wait_for)

MAX_REQUEST = 1024
MAX_HEADER = 4096
READ_TIMEOUT = 2
IDLE_TIMEOUT = 2
LISTENERS = ("inference", "management", "metrics")


@pytest.fixture(scope="module")
def srv(module_tserve):
    return module_tserve(name="http", config={
        "max_request_size": MAX_REQUEST,
        "max_header_size": MAX_HEADER,
        "http_read_timeout": READ_TIMEOUT,
        "http_idle_timeout": IDLE_TIMEOUT,
    })


@pytest.fixture(scope="module")
def tally(srv):
    return Tally(srv)


def send(tally, srv, listener, data: bytes, what: str = "", **kw):
    resp = raw_request(srv.ports[listener], data, **kw)
    if resp is not None:
        tally.record(resp.status, what or data[:60].decode("latin-1"))
    return resp


def get_req(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


def alive(tally, srv):
    assert srv.alive(), srv.describe()
    r = tally.get(f"{srv.inference_url}/ping")
    assert r.status_code == 200
    assert r.json() == {"status": "Healthy"}


# ---------------------------------------------------------------------------------------
# Malformed requests


MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /ping HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    b"GET /ping HTTP/x.y\r\nHost: x\r\n\r\n",
    b"\x00\x01\x02\xff\xfe garbage\r\n\r\n",
    b"GET /ping HTTP/1.1\r\nBad Header Without Colon\r\n\r\n",
    b"GET /ping HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
]


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("payload", MALFORMED, ids=[f"m{i}" for i in range(len(MALFORMED))])
def test_malformed_request_gets_400(srv, tally, listener, payload):
    resp = send(tally, srv, listener, payload)
    assert resp is not None, f"server closed without a response to {payload!r}"
    assert resp.status == 400, f"{payload!r} -> {resp.status} {resp.body[:200]!r}"
    alive(tally, srv)


# ---------------------------------------------------------------------------------------
# Size limits


@pytest.mark.parametrize("listener", ["inference", "metrics"])
def test_oversized_header_gets_431(srv, tally, listener):
    big = "X-Big: " + "a" * (MAX_HEADER + 2000) + "\r\n"
    resp = send(tally, srv, listener, get_req("/ping", big), "oversized header")
    assert resp is not None, "closed without a response to an oversized header"
    assert resp.status == 431, resp.raw[:300]
    # Many small headers adding up over the limit.
    many = "".join(f"X-H{i}: {'b' * 50}\r\n" for i in range(MAX_HEADER // 50 + 10))
    resp = send(tally, srv, listener, get_req("/ping", many), "many headers")
    assert resp is not None and resp.status == 431
    alive(tally, srv)


def test_oversized_request_line_gets_431(srv, tally):
    resp = send(tally, srv, "metrics", get_req("/metrics?name[]=" + "A" * (MAX_HEADER + 100)),
                "long request line")
    assert resp is not None and resp.status == 431, resp and resp.raw[:300]
    alive(tally, srv)


def test_headers_under_the_limit_are_fine(srv, tally):
    ok = "X-Ok: " + "c" * (MAX_HEADER // 2) + "\r\n"
    resp = send(tally, srv, "inference", get_req("/ping", ok), "big-but-allowed header")
    assert resp is not None and resp.status == 200


def _post_with_length(srv, tally, length: int, body: bytes | None, what: str):
    """Sends the head first; sends the body only if the server has not answered yet."""
    head = (f"POST /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", srv.ports["inference"]), timeout=5) as s:
        s.sendall(head)
        s.settimeout(1.5)
        data = b""
        try:
            data = s.recv(65536)
        except (socket.timeout, TimeoutError):
            if body is not None:
                try:
                    s.sendall(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
        s.settimeout(5)
        deadline = time.monotonic() + 5
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1."), f"{what}: no response, got {data[:200]!r}"
    status = int(data.split(b" ", 2)[1])
    tally.record(status, what)
    return status


def test_body_over_max_request_size_gets_413(srv, tally):
    assert _post_with_length(srv, tally, MAX_REQUEST + 1, b"x" * (MAX_REQUEST + 1),
                             "body limit+1") == 413
    assert _post_with_length(srv, tally, 10**12, None, "Content-Length 1e12") == 413
    alive(tally, srv)


def test_chunked_body_over_max_request_size_gets_413(srv, tally):
    chunk = b"y" * (MAX_REQUEST + 500)
    data = (b"POST /ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\n\r\n")
    resp = send(tally, srv, "inference", data, "chunked over limit")
    assert resp is not None and resp.status == 413, resp and resp.raw[:200]
    alive(tally, srv)


def test_body_at_the_limit_is_accepted(srv, tally):
    # Exactly max_request_size: not 413 (POST /ping is then a wrong method: 405).
    body = b"z" * MAX_REQUEST
    data = (f"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    resp = send(tally, srv, "inference", data, "body at limit")
    assert resp is not None and resp.status == 405


# ---------------------------------------------------------------------------------------
# Odd name[] values

EMPTY_RESULT = [
    "name[]=",
    "name[]=" + "A" * 2000,
    "name[]=%C3%A9t%C3%A9",
    "name[]=%E2%9C%93Requests2XX",
    "name[]=%3B",
    "name[]=;",
    "name[]=Requests2XX%00",
    "name[]=%0D%0AX-Injected:%201",
    "name[]=Requests2XX%20",
    "name[]=..%2F..%2Fetc%2Fpasswd",
    "name[]=*",
    "name[]=.*",
    "name[]=Requests2XX_bucket",
    "&".join(f"name[]=nope{i}" for i in range(200)),
]


@pytest.mark.parametrize("query", EMPTY_RESULT, ids=[f"q{i}" for i in range(len(EMPTY_RESULT))])
def test_odd_name_values_give_empty_200(srv, tally, query):
    resp = send(tally, srv, "metrics", get_req("/metrics?" + query), query[:40])
    assert resp is not None
    assert resp.status == 200, (query[:80], resp.status, resp.body[:200])
    assert resp.body == b"", (query[:80], resp.body[:300])
    assert "x-injected" not in resp.headers


@pytest.mark.parametrize("query", ["name[]=%", "name[]=%zz", "name[]=%C3", "name[]=Requests2XX%"])
def test_invalid_percent_encoding(srv, tally, query):
    """Undecodable: 400, or 200 with nothing matched; never a 5xx or a crash."""
    resp = send(tally, srv, "metrics", get_req("/metrics?" + query), query)
    assert resp is not None
    assert resp.status in (200, 400), (query, resp.status)
    if resp.status == 200:
        assert resp.body == b"", (query, resp.body[:200])
    alive(tally, srv)


def test_raw_utf8_in_target(srv, tally):
    data = b"GET /metrics?name[]=\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n"
    resp = send(tally, srv, "metrics", data, "raw utf-8")
    assert resp is not None and resp.status in (200, 400)
    if resp.status == 200:
        assert resp.body == b""
    alive(tally, srv)


def test_semicolon_inside_value(srv, tally):
    resp = send(tally, srv, "metrics", get_req("/metrics?name[]=Requests2XX;x"), "semicolon")
    assert resp is not None and resp.status == 200
    assert family_names(resp.body.decode()) in ([], ["Requests2XX"])


def test_name_without_value(srv, tally):
    resp = send(tally, srv, "metrics", get_req("/metrics?name[]=Requests2XX&name[]"), "bare")
    assert resp is not None and resp.status == 200
    assert family_names(resp.body.decode()) == ["Requests2XX"]


# ---------------------------------------------------------------------------------------
# Unknown paths and methods, every listener

KNOWN_PATH = {"inference": "/ping", "management": "/models", "metrics": "/metrics"}


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("path", ["/nope", "/x/y/z", "/ping/extra/../..", "/%7Eabc"])
def test_unknown_path_404_json(srv, tally, listener, path):
    if listener == "inference" and path.startswith("/ping"):
        path = "/pingx"
    resp = send(tally, srv, listener, get_req(path), f"GET {path}")
    assert resp is not None and resp.status == 404, (path, resp and resp.raw[:300])
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    assert json.loads(resp.body) == NOT_FOUND_BODY


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_wrong_method_405_json(srv, tally, listener, method):
    path = KNOWN_PATH[listener]
    data = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode()
    resp = send(tally, srv, listener, data, f"{method} {path}")
    assert resp is not None and resp.status == 405, (method, path, resp and resp.raw[:300])
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    assert json.loads(resp.body) == METHOD_NOT_ALLOWED_BODY


def test_unregistered_method_token(srv, tally):
    data = b"BREW /ping HTTP/1.1\r\nHost: x\r\n\r\n"
    resp = send(tally, srv, "inference", data, "BREW")
    assert resp is not None and resp.status in (400, 405, 501), resp and resp.raw[:200]
    alive(tally, srv)


def test_ping_and_models_bodies(srv, tally):
    r = tally.get(f"{srv.inference_url}/ping")
    assert r.status_code == 200 and r.json() == {"status": "Healthy"}
    r = tally.get(f"{srv.management_url}/models")
    assert r.status_code == 200 and r.json() == {"models": []}


# ---------------------------------------------------------------------------------------
# Connections


def test_keep_alive_several_requests_one_connection(srv, tally):
    for listener, path in KNOWN_PATH.items():
        conn = http.client.HTTPConnection("127.0.0.1", srv.ports[listener], timeout=5)
        try:
            socks = set()
            for _ in range(5):
                conn.request("GET", path, headers={"Accept-Encoding": "identity"})
                resp = conn.getresponse()
                resp.read()
                tally.record(resp.status, f"keep-alive GET {path}")
                assert resp.status == 200
                assert (resp.getheader("Connection") or "").lower() != "close"
                socks.add(id(conn.sock))
            assert len(socks) == 1, f"{listener}: the connection was not reused"
        finally:
            conn.close()


def test_pipelined_requests(srv, tally):
    with socket.create_connection(("127.0.0.1", srv.ports["inference"]), timeout=5) as s:
        s.sendall(get_req("/ping") + get_req("/nope") + get_req("/ping"))
        buf = b""
        statuses = []
        for _ in range(3):
            resp, buf = _read_response(s, buf, time.monotonic() + 5)
            assert resp is not None
            tally.record(resp.status, "pipelined")
            statuses.append(resp.status)
    assert statuses == [200, 404, 200]


def test_connection_close_and_http10(srv, tally):
    resp = send(tally, srv, "inference", get_req("/ping", "Connection: close\r\n"),
                "Connection: close", read_all=True)
    assert resp is not None and resp.status == 200 and resp.closed
    resp = send(tally, srv, "inference", b"GET /ping HTTP/1.0\r\n\r\n", "HTTP/1.0",
                read_all=True)
    assert resp is not None and resp.status == 200 and resp.closed


def _wait_closed(sock: socket.socket, limit: float) -> tuple[float | None, bytes]:
    """Seconds until the peer closed (None if still open after `limit`), and bytes read."""
    start = time.monotonic()
    data = b""
    while time.monotonic() - start < limit:
        sock.settimeout(0.2)
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            continue
        except ConnectionResetError:
            return time.monotonic() - start, data
        if not chunk:
            return time.monotonic() - start, data
        data += chunk
    return None, data


def test_idle_keep_alive_connection_is_closed(srv, tally):
    with socket.create_connection(("127.0.0.1", srv.ports["metrics"]), timeout=5) as s:
        s.sendall(get_req("/metrics?name[]=nope"))
        resp, _ = _read_response(s, b"", time.monotonic() + 5)
        tally.record(resp.status, "idle test")
        assert resp.status == 200
        took, extra = _wait_closed(s, IDLE_TIMEOUT + 4)
        assert took is not None, f"idle connection still open after {IDLE_TIMEOUT + 4}s"
        assert took >= IDLE_TIMEOUT - 0.8, f"closed after {took:.1f}s, before the idle timeout"
        if extra.startswith(b"HTTP/1."):
            tally.record(int(extra.split(b" ", 2)[1]), "idle close response")


def test_slowloris_connections_are_closed_while_others_are_served(srv, tally):
    n_slow = 6
    results: list[tuple[float | None, bytes]] = [None] * (n_slow + 1)  # type: ignore

    def slow_client(i: int, trickle: bool):
        try:
            s = socket.create_connection(("127.0.0.1", srv.ports["inference"]), timeout=5)
        except OSError as exc:
            results[i] = (-1.0, repr(exc).encode())
            return
        with s:
            start = time.monotonic()
            data = b""
            s.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            limit = READ_TIMEOUT + 4
            k = 0
            while time.monotonic() - start < limit:
                s.settimeout(0.4)
                try:
                    chunk = s.recv(65536)
                    if not chunk:
                        results[i] = (time.monotonic() - start, data)
                        return
                    data += chunk
                    continue
                except (socket.timeout, TimeoutError):
                    pass
                except ConnectionResetError:
                    results[i] = (time.monotonic() - start, data)
                    return
                if trickle:
                    try:
                        s.sendall(f"X-Slow-{k}: a\r\n".encode())
                        k += 1
                    except (BrokenPipeError, ConnectionResetError):
                        pass
            results[i] = (None, data)

    threads = [threading.Thread(target=slow_client, args=(i, i < n_slow)) for i in range(n_slow + 1)]
    for t in threads:
        t.start()
    served = 0
    t0 = time.monotonic()
    while any(t.is_alive() for t in threads):
        r = tally.get(f"{srv.inference_url}/ping", timeout=2)
        assert r.status_code == 200
        served += 1
        time.sleep(0.2)
        assert time.monotonic() - t0 < READ_TIMEOUT + 10
    for t in threads:
        t.join()
    assert served >= 5
    for i, (took, data) in enumerate(results):
        kind = "trickling" if i < n_slow else "silent partial-header"
        assert took is not None, (f"{kind} connection {i} still open after {READ_TIMEOUT + 4}s "
                                  f"(http_read_timeout={READ_TIMEOUT})")
        assert took >= 0, data
        assert took >= READ_TIMEOUT - 0.8, f"{kind} connection closed early ({took:.1f}s)"
        if data.startswith(b"HTTP/1."):
            status = int(data.split(b" ", 2)[1])
            tally.record(status, f"slowloris close response {status}")
            assert 400 <= status < 500, data[:200]
    alive(tally, srv)


# ---------------------------------------------------------------------------------------
# Binding


def test_listeners_bind_loopback_only(srv):
    ports = set(srv.ports.values())
    found = [(fam, port, addr) for fam, port, addr in listening_sockets() if port in ports]
    assert {port for _, port, _ in found} == ports, f"not all listeners found: {found}"
    for fam, port, addr in found:
        assert fam == "tcp" and addr == "0100007F", \
            f"port {port} is bound on {fam} {addr}, expected 127.0.0.1 only"


_NETNS_LAUNCHER = r"""
import fcntl, os, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ifr = fcntl.ioctl(s, 0x8913, struct.pack("16sH14s", b"lo", 0, b""))  # SIOCGIFFLAGS
flags = struct.unpack("16sH14s", ifr)[1] | 0x1  # IFF_UP
fcntl.ioctl(s, 0x8914, struct.pack("16sH14s", b"lo", flags, b""))  # SIOCSIFFLAGS
s.close()
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_default_addresses_are_loopback(tmp_path):
    """With no *_address keys at all (the shipped defaults), in a fresh network namespace so
    the fixed ports 8080-8082 are free: every listener binds 127.0.0.1 only, and the seed's
    curl example works verbatim there."""
    unshare = require_tool("unshare")
    nsenter = require_tool("nsenter")
    curl = require_tool("curl")
    store = tmp_path / "store"
    store.mkdir()
    cfg = tmp_path / "config.properties"
    cfg.write_text(format_properties({"model_store": str(store)}))
    env = base_env(tmp_path, nvml="standin")
    err_path = tmp_path / "stderr.txt"
    with open(tmp_path / "stdout.txt", "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [unshare, "--net", sys.executable, "-c", _NETNS_LAUNCHER, str(BINARY), "--start",
             "--foreground", "--ts-config", str(cfg)],
            cwd=tmp_path, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    try:
        def listeners():
            assert proc.poll() is None, err_path.read_text()
            found = []
            for fam in ("tcp", "tcp6"):
                p = pathlib.Path(f"/proc/{proc.pid}/net/{fam}")
                for line in p.read_text().splitlines()[1:]:
                    f = line.split()
                    if f[3] == "0A":
                        addr, port = f[1].rsplit(":", 1)
                        found.append((fam, int(port, 16), addr))
            return found if {p for _, p, _ in found} >= {8080, 8081, 8082} else None
        found = wait_for(listeners, 20, "tserve listening on 8080-8082 in its namespace")
        for fam, port, addr in found:
            assert fam == "tcp" and addr == "0100007F", \
                f"default listener {port} bound on {fam} {addr}, expected 127.0.0.1"
        # The seed's first example, verbatim (port 8082), inside the namespace.
        cp = subprocess.run([nsenter, "-t", str(proc.pid), "-n", "sh", "-c",
                             f"{curl} http://127.0.0.1:8082/metrics"],
                            capture_output=True, text=True, timeout=20)
        assert cp.returncode == 0, cp.stderr
        assert "# TYPE Requests2XX counter" in cp.stdout
        assert "# TYPE CPUUtilization gauge" in cp.stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, err_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------
# The counters after all of the above (keep this test last in the module).


def test_zz_counters_exact_after_bad_input(srv, tally):
    alive(tally, srv)
    seen = tally.assert_exact()
    assert seen["Requests4XX"] > 0
