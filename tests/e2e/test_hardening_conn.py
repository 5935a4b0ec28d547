"""Hardening of the process around the APIs (issue 7 #4, #5, #11, #12): idle sockets on the
inference port cannot lock out the management and metrics listeners; the model extraction
root and the pid file live in private directories and no planted symbolic link redirects a
write; a second SIGTERM during the drain stops at once. No traffic leaves 127.0.0.1."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import stat
import subprocess
import time

import requests

from e2e_util import (BINARY, _read_response, base_env, format_properties, free_ports, launch,
                      raw_request, store_with, tally_from_now, wait_for, wait_healthy)

PING = b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n"


def launch_unprobed(workdir: pathlib.Path, **kwargs):
    """launch() that waits for the "ready" log line instead of probing the ports, so no
    probe connection still holds a slot when the test counts them."""
    server = launch(workdir, wait=False, **kwargs)
    wait_for(lambda: server.proc.poll() is not None or "tserve is ready" in server.logs_text(),
             20, "tserve to be ready")
    assert server.proc.poll() is None, server.describe()
    return server


def caps_from_log(server) -> dict:
    """The connection caps tserve logged at startup."""
    m = wait_for(lambda: re.search(r"Connection caps: inference (\d+), management (\d+), "
                                   r"metrics (\d+)", server.logs_text()),
                 10, "the connection caps log line")
    return {"inference": int(m.group(1)), "management": int(m.group(2)),
            "metrics": int(m.group(3))}


def read_one(sock: socket.socket, timeout: float = 10.0):
    resp, _ = _read_response(sock, b"", time.monotonic() + timeout)
    return resp


def assert_refused(resp, listener: str = "Inference") -> None:
    """A 503 in TorchServe's error shape, and the connection closed after it."""
    assert resp is not None, "closed without an answer"
    assert resp.status == 503, resp.raw[:300]
    body = json.loads(resp.body)
    assert body["code"] == 503 and body["type"] == "ServiceUnavailableException", body
    assert f"Too many connections to the {listener} API" in body["message"], body
    assert resp.headers.get("connection") == "close", resp.headers


def open_idle(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        socks.append(s)
    return socks


# ---- issue 7 #4: connection caps ----------------------------------------------------------


def test_idle_inference_sockets_do_not_lock_out_other_listeners(tmp_path):
    """With RLIMIT_NOFILE at 256, 300 idle inference sockets used to exhaust every
    descriptor: /metrics and the management API timed out until they closed."""
    server = launch_unprobed(tmp_path / "s", fd_limit=256)
    sockets: list[socket.socket] = []
    try:
        tally = tally_from_now(server)
        sockets = open_idle(server.ports["inference"], 300)
        # The other listeners still answer while the inference one is full.
        r = tally.get(f"{server.management_url}/models")
        assert r.status_code == 200 and r.json() == {"models": []}, r.text
        r = server.metrics()
        tally.record(r.status_code, "GET /metrics")
        assert r.status_code == 200 and "Requests5XX" in r.text
        # Every connection over the cap is answered 503 and closed at once; the first
        # `cap` ones are held open, idle.
        caps = caps_from_log(server)
        assert 0 < caps["inference"] < 256, caps
        for s in sockets[caps["inference"]:]:
            resp = read_one(s)
            assert_refused(resp)
            tally.record(resp.status, "refused idle socket")
        # A new inference connection is refused too, with a request of its own.
        resp = raw_request(server.ports["inference"], PING, read_all=True)
        assert_refused(resp)
        assert resp.closed
        tally.record(resp.status, "refused /ping")
        # The held connections still work.
        sockets[0].sendall(PING)
        resp = read_one(sockets[0])
        assert resp.status == 200, resp.raw
        tally.record(resp.status, "held /ping")
        # Once the idle sockets go, inference answers again.
        for s in sockets:
            s.close()
        sockets = []

        def ping_ok():
            r = requests.get(f"{server.inference_url}/ping", timeout=5)
            tally.record(r.status_code, "GET /ping after close")
            return r.status_code == 200

        wait_for(ping_ok, 10, "/ping to answer 200 after the idle sockets closed")
        tally.assert_exact()
        server.assert_alive()
    finally:
        for s in sockets:
            s.close()
        assert server.stop() == 0, server.describe()


def test_max_connections_key_caps_the_inference_listener(tmp_path):
    server = launch_unprobed(tmp_path / "s", config={"max_connections": 3})
    sockets: list[socket.socket] = []
    try:
        caps = caps_from_log(server)
        assert caps["inference"] == 3, caps
        tally = tally_from_now(server)
        sockets = open_idle(server.ports["inference"], 3)
        for s in sockets:  # all three are served: they hold the slots
            s.sendall(PING)
            resp = read_one(s)
            assert resp.status == 200
            tally.record(resp.status)
        resp = raw_request(server.ports["inference"], PING, read_all=True)
        assert_refused(resp)
        tally.record(resp.status)
        # Management and metrics have caps of their own and are not affected.
        assert tally.get(f"{server.management_url}/models").status_code == 200
        tally.assert_exact()
    finally:
        for s in sockets:
            s.close()
        assert server.stop() == 0, server.describe()


def test_accept_out_of_descriptors_refuses_instead_of_hanging(tmp_path):
    """A max_connections above what RLIMIT_NOFILE allows is warned about; accept then runs
    out of descriptors, and the pending connections are refused (503) rather than left in
    the backlog, and the server recovers once descriptors are free."""
    server = launch_unprobed(tmp_path / "s", config={"max_connections": 100000}, fd_limit=128)
    sockets: list[socket.socket] = []
    try:
        assert "is more than the file-descriptor limit" in server.logs_text()
        sockets = open_idle(server.ports["inference"], 200)
        # The last ones cannot have a descriptor: each gets an answer, not silence.
        refused = 0
        for s in sockets[150:]:
            resp = read_one(s)
            assert_refused(resp)
            refused += 1
        assert refused == 50
        for s in sockets:
            s.close()
        sockets = []
        wait_for(lambda: requests.get(f"{server.inference_url}/ping", timeout=5).status_code
                 == 200, 10, "/ping after the descriptors came back")
        assert requests.get(f"{server.metrics_url}/metrics", timeout=5).status_code == 200
        assert requests.get(f"{server.management_url}/models", timeout=5).status_code == 200
    finally:
        for s in sockets:
            s.close()
        assert server.stop() == 0, server.describe()


# ---- issue 7 #12: the pid file ------------------------------------------------------------


def stop_with_cli(server, workdir: pathlib.Path, env: dict) -> tuple[int, str]:
    """`tserve --stop` with `env`; returns (server's exit code, what --stop said). The server
    is our child: it is reaped here, or --stop would wait on a zombie."""
    stop = subprocess.Popen([str(BINARY), "--stop"], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        rc = server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        stop.kill()
        raise AssertionError("tserve --stop did not stop the server: "
                             + stop.communicate()[0] + server.describe())
    out, _ = stop.communicate(timeout=30)
    assert stop.returncode == 0, out
    return rc, out


def test_pid_file_is_not_written_through_a_symlink(tmp_path):
    """A symbolic link planted at the pid file's path used to be followed: tserve wrote its
    pid into whatever the link pointed to."""
    workdir = tmp_path / "s"
    workdir.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    pid_path = workdir / "tserve.pid"  # base_env's TSERVE_PID_FILE
    pid_path.symlink_to(victim)
    server = launch_unprobed(workdir)
    try:
        assert victim.read_text() == "precious\n"
        assert not pid_path.is_symlink()
        assert int(pid_path.read_text().strip()) == server.pid
        assert stat.S_IMODE(pid_path.lstat().st_mode) & 0o022 == 0
        rc, said = stop_with_cli(server, workdir, server.env)
        assert rc == 0 and "tserve has stopped" in said, said
        assert not pid_path.exists()
        assert victim.read_text() == "precious\n"
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def private_env(workdir: pathlib.Path) -> dict:
    """base_env without TSERVE_PID_FILE or XDG_RUNTIME_DIR, TMPDIR inside workdir."""
    env = base_env(workdir)
    env["TSERVE_PID_FILE"] = ""  # empty counts as unset (launch() would set it again)
    env["XDG_RUNTIME_DIR"] = ""
    tmp = workdir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env["TMPDIR"] = str(tmp)
    return env


def test_default_pid_file_is_in_a_private_runtime_dir(tmp_path):
    workdir = tmp_path / "s"
    workdir.mkdir()
    env = private_env(workdir)
    server = launch(workdir, env=env)
    runtime = pathlib.Path(env["TMPDIR"]) / f"tserve-{os.geteuid()}"
    pid_path = runtime / "tserve.pid"
    try:
        wait_for(lambda: pid_path.exists() and pid_path.read_text().strip(), 10,
                 f"the pid file at {pid_path}")
        st = runtime.lstat()
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
        assert int(pid_path.read_text().strip()) == server.pid
        assert not (pathlib.Path(env["TMPDIR"]) / ".tserve.pid").exists()
        rc, said = stop_with_cli(server, workdir, server.env)
        assert rc == 0 and "tserve has stopped" in said, said
        assert not pid_path.exists()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def test_xdg_runtime_dir_holds_the_pid_file(tmp_path):
    workdir = tmp_path / "s"
    workdir.mkdir()
    env = private_env(workdir)
    xdg = workdir / "run"
    xdg.mkdir(mode=0o700)
    env["XDG_RUNTIME_DIR"] = str(xdg)
    server = launch(workdir, env=env)
    pid_path = xdg / "tserve" / "tserve.pid"
    try:
        wait_for(lambda: pid_path.exists() and pid_path.read_text().strip(), 10,
                 f"the pid file at {pid_path}")
        rc, said = stop_with_cli(server, workdir, server.env)
        assert rc == 0 and "tserve has stopped" in said, said
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def test_runtime_dir_others_can_write_is_refused(tmp_path):
    """A pre-created runtime dir that is a symlink or writable by others is not used."""
    workdir = tmp_path / "s"
    workdir.mkdir()
    env = private_env(workdir)
    runtime = pathlib.Path(env["TMPDIR"]) / f"tserve-{os.geteuid()}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    runtime.symlink_to(elsewhere)
    ports = free_ports(3)
    cfg = {"inference_address": f"http://127.0.0.1:{ports[0]}",
           "management_address": f"http://127.0.0.1:{ports[1]}",
           "metrics_address": f"http://127.0.0.1:{ports[2]}"}
    (workdir / "config.properties").write_text(format_properties(cfg))
    cmd = [str(BINARY), "--start", "--foreground", "--ts-config",
           str(workdir / "config.properties")]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    assert f"{runtime} is a symbolic link" in proc.stderr, proc.stderr
    assert list(elsewhere.iterdir()) == []

    runtime.unlink()
    runtime.mkdir()
    runtime.chmod(0o777)
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    assert "is writable by other users" in proc.stderr, proc.stderr
    assert list(runtime.iterdir()) == []


# ---- issue 7 #11: the extraction root -----------------------------------------------------


def test_extraction_root_is_a_private_unpredictable_dir(tmp_path):
    """The .mar extraction root used to be $TMPDIR/tserve-models-<pid>, mode 0755, reused
    if someone had created it first."""
    workdir = tmp_path / "s"
    workdir.mkdir()
    store = store_with(workdir, "noop.mar")
    env = private_env(workdir)
    env["TSERVE_PID_FILE"] = str(workdir / "tserve.pid")
    tmp = pathlib.Path(env["TMPDIR"])
    server = launch(workdir, env=env, config={"model_store": str(store),
                                              "load_models": "noop.mar"})
    try:
        wait_healthy(server)
        roots = [p for p in tmp.iterdir() if p.name.startswith("tserve-models-")]
        assert len(roots) == 1, roots
        root = roots[0]
        assert root.name != f"tserve-models-{server.pid}"
        st = root.lstat()
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
        assert st.st_uid == os.geteuid()
        assert any(root.iterdir()), "noop.mar is extracted below the root"
        r = requests.post(f"{server.inference_url}/predictions/noop", data=b"hi", timeout=10)
        assert r.status_code == 200 and r.content == b"hi"
        assert server.stop() == 0, server.describe()
        assert not root.exists(), "the private extraction root is removed at exit"
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


# ---- issue 7 #5: a second SIGTERM stops at once -------------------------------------------


def test_second_sigterm_during_drain_stops_at_once(tmp_path):
    """The first SIGTERM drains (a response still being written holds it up to the 30 s
    grace); a second one used to be ignored. Now it exits at once."""
    workdir = tmp_path / "s"
    workdir.mkdir()
    store = store_with(workdir, "noop.mar")
    env = {}
    if "TSAN_OPTIONS" in os.environ:
        # Stopping at once leaves threads unjoined on purpose: not a leak to report here.
        env["TSAN_OPTIONS"] = os.environ["TSAN_OPTIONS"] + " report_thread_leaks=0"
    server = launch(workdir, config={"model_store": str(store), "load_models": "noop.mar"},
                    env=env)
    client = None
    try:
        wait_healthy(server)
        # A 6 MB echo to a client that never reads: the answer cannot be written out.
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", server.ports["inference"]))
        body = b"x" * 6_000_000
        client.sendall(b"POST /predictions/noop HTTP/1.1\r\nHost: t\r\n"
                       b"Content-Type: application/octet-stream\r\n"
                       + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.5)  # let the echo start being written
        server.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "Shutting down" in server.logs_text(), 10, "the drain to begin")
        assert server.proc.poll() is None, "the first SIGTERM drains; it does not exit at once"
        server.proc.send_signal(signal.SIGTERM)
        try:
            rc = server.proc.wait(timeout=10)  # well inside the 30 s grace
        except subprocess.TimeoutExpired:
            raise AssertionError("a second SIGTERM during the drain did not stop tserve\n"
                                 + server.describe())
        assert rc == 128 + signal.SIGTERM, rc
        wait_for(lambda: "again" in server.logs_text(), 5, "the log line of the second signal")
        assert not (workdir / "tserve.pid").exists()
    finally:
        if client is not None:
            client.close()
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
