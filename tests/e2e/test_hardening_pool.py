"""Issue 7, worker pools and model lifecycle, end to end: worker ceilings (#3), exact
accounting of every inference request by outcome (#10), queued requests of clients that
have gone (#13), and the metric series of unregistered models.

Models: build/model_store's noop.mar, and noop archives made here with build/tserve-archiver
(override with TSERVE_ARCHIVER) whose model-config.yaml sets the noop handler's `delay_ms`,
so a worker stays busy long enough to queue requests behind it.
"""

from __future__ import annotations

import concurrent.futures
import pathlib
import socket
import subprocess
import threading
import time

import pytest
import requests

import e2e_util
from e2e_util import ARCHIVER, metric_value, parse_exposition, store_with, wait_for, wait_healthy

FAILURE_REASONS = ("queue_full", "no_worker", "timeout", "handler_error", "bad_input",
                   "unloaded", "client_disconnected")


# ---------------------------------------------------------------------------------------
# Helpers


def slow_noop(out_dir: pathlib.Path, name: str, delay_ms: int, *, version: str = "1.0",
              extra_config: str = "") -> pathlib.Path:
    """A noop archive named <name>.mar whose inference sleeps delay_ms per batch."""
    work = out_dir / f"{name}-{version}-src"
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "model-config.yaml"
    cfg.write_text(f"delay_ms: {delay_ms}\nbatchSize: 1\n{extra_config}")
    export = out_dir / f"{name}-{version}-out"
    export.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(ARCHIVER), "--model-name", name, "--version", version, "--handler",
                    "noop", "--config-file", str(cfg), "--export-path", str(export)],
                   check=True, timeout=60, capture_output=True)
    path = export / f"{name}.mar"
    assert path.is_file(), list(export.iterdir())
    return path


def mgmt(server, method: str, path: str, **kwargs) -> requests.Response:
    kwargs.setdefault("timeout", 30)
    return requests.request(method, f"{server.management_url}{path}", **kwargs)


def assert_error(r: requests.Response, code: int, etype: str) -> str:
    """TorchServe's error JSON: exactly code, type, message; returns the message."""
    assert r.status_code == code, f"expected {code}, got {r.status_code} {r.text}"
    body = r.json()
    assert set(body) == {"code", "type", "message"}, body
    assert body["code"] == code and body["type"] == etype, body
    return body["message"]


def predict(server, model: str, body: bytes = b"x", timeout: float = 30) -> requests.Response:
    return requests.post(f"{server.inference_url}/predictions/{model}", data=body,
                         headers={"Content-Type": "text/plain"}, timeout=timeout)


def model_counts(text: str, model: str) -> dict:
    """requests (both model_version labels), successes (ts_request_duration_seconds_count)
    and failures by reason, for one model, from an exposition text."""
    out = {"requests": 0.0, "successes": 0.0, "batches": 0.0,
           "failures": {r: 0.0 for r in FAILURE_REASONS}}
    for fam in parse_exposition(text):
        for s in fam.samples:
            if s.labels.get("model_name") != model:
                continue
            if s.name == "ts_inference_requests_total":
                out["requests"] += s.value
            elif s.name == "ts_request_duration_seconds_count":
                out["successes"] += s.value
            elif s.name == "ts_handler_duration_seconds_count":
                out["batches"] += s.value
            elif s.name == "ts_inference_failures_total":
                out["failures"][s.labels["reason"]] = out["failures"].get(
                    s.labels["reason"], 0.0) + s.value
    return out


def invariant_holds(counts: dict) -> bool:
    return counts["requests"] == counts["successes"] + sum(counts["failures"].values())


def wait_invariant(server, model: str, expected_requests: int, timeout: float = 30.0) -> dict:
    """Scrapes until the model's counters account for every request the clients sent."""
    last = {}

    def settled():
        nonlocal last
        last = model_counts(server.metrics().text, model)
        return last if (last["requests"] == expected_requests and invariant_holds(last)) else None
    try:
        return wait_for(settled, timeout, f"{model}: counters settle")
    except AssertionError:
        raise AssertionError(f"{model}: requests = successes + Σ failures does not hold for "
                             f"{expected_requests} requests sent: {last}") from None


def model_series(text: str, model: str) -> list[str]:
    """Every sample line labelled with this model (model_name or ModelName, or a worker)."""
    lines = []
    for fam in parse_exposition(text):
        for s in fam.samples:
            if (s.labels.get("model_name") == model or s.labels.get("ModelName") == model
                    or s.labels.get("WorkerName", "").endswith(f"-{model}_1.0")):
                lines.append(s.line)
    return lines


# ---------------------------------------------------------------------------------------
# #3: worker ceilings


@pytest.fixture(scope="module")
def noop_srv(module_tserve, tmp_path_factory):
    store = store_with(tmp_path_factory.mktemp("pool"), "noop.mar")
    server = module_tserve(name="pool", config={
        "model_store": str(store), "load_models": "noop.mar", "default_workers_per_model": 1,
    })
    wait_healthy(server)
    return server


@pytest.mark.parametrize("synchronous", ["false", "true"])
def test_min_worker_over_the_limit_is_400_naming_it(noop_srv, synchronous):
    """Before: accepted, then thread creation failed after a few hundred workers and the
    uncaught std::system_error terminated the process."""
    r = mgmt(noop_srv, "PUT", f"/models/noop?min_worker=1000000&synchronous={synchronous}")
    message = assert_error(r, 400, "BadRequestException")
    assert "1000000" in message and "max_workers_per_model" in message, message
    noop_srv.assert_alive()
    d = mgmt(noop_srv, "GET", "/models/noop").json()[0]
    assert (d["minWorkers"], d["maxWorkers"], len(d["workers"])) == (1, 1, 1), d
    r = predict(noop_srv, "noop", b"still here")
    assert r.status_code == 200 and r.content == b"still here", r.text


def test_max_worker_over_the_limit_is_400(noop_srv):
    r = mgmt(noop_srv, "PUT", "/models/noop?min_worker=1&max_worker=1000000")
    message = assert_error(r, 400, "BadRequestException")
    assert "max_worker 1000000" in message and "max_workers_per_model" in message, message
    noop_srv.assert_alive()


def test_configured_limits_per_model_and_in_total(tserve, tmp_path):
    store = store_with(tmp_path, "noop.mar")
    server = tserve(config={
        "model_store": str(store), "load_models": "noop.mar,other=noop.mar",
        "default_workers_per_model": 1, "enable_model_api": True,
        "max_workers_per_model": 3, "max_workers_total": 4,
    })
    wait_healthy(server)
    message = assert_error(mgmt(server, "PUT", "/models/noop?min_worker=4"), 400,
                           "BadRequestException")
    assert message == ("min_worker 4 exceeds the limit of 3 workers per model "
                       "(max_workers_per_model)"), message
    r = mgmt(server, "PUT", "/models/noop?min_worker=3&synchronous=true")
    assert r.status_code == 200, r.text
    # noop 3 + other 1 = 4: other may not grow.
    message = assert_error(mgmt(server, "PUT", "/models/other?min_worker=2"), 400,
                           "BadRequestException")
    assert "max_workers_total" in message and "limit of 4" in message, message
    # A registration whose workers do not fit is refused, and leaves nothing behind.
    r = mgmt(server, "POST", "/models?url=noop.mar&model_name=third&initial_workers=1")
    message = assert_error(r, 400, "BadRequestException")
    assert "max_workers_total" in message, message
    assert mgmt(server, "GET", "/models/third").status_code == 404
    r = mgmt(server, "POST", "/models?url=noop.mar&model_name=fourth&initial_workers=9")
    message = assert_error(r, 400, "BadRequestException")
    assert "initial_workers 9" in message and "max_workers_per_model" in message, message
    # Freeing workers makes room again.
    assert mgmt(server, "PUT", "/models/noop?min_worker=1&max_worker=1&synchronous=true"
                ).status_code == 200
    assert mgmt(server, "PUT", "/models/other?min_worker=2&synchronous=true").status_code == 200
    for name in ("noop", "other"):
        assert predict(server, name).status_code == 200


def sanitized(binary: pathlib.Path) -> bool:
    data = binary.read_bytes()
    return b"__asan_init" in data or b"__tsan_init" in data


def test_worker_threads_that_cannot_start_fail_the_request_not_the_server(
        tserve, tmp_path, monkeypatch):
    """With the limits raised and the address space capped (RLIMIT_AS, as a container's
    memory limit would), thread creation fails partway: 500 for that request, the shortfall
    in ts_workers{state="failed"}, the server and its workers go on. Before: terminate."""
    if sanitized(e2e_util.BINARY):
        pytest.skip("sanitizer runtimes need more address space than this test allows")
    wrapper = tmp_path / "tserve-capped"
    wrapper.write_text(f"#!/bin/sh\nulimit -v 4000000\nexec '{e2e_util.BINARY}' \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setattr(e2e_util, "BINARY", wrapper)
    store = store_with(tmp_path, "noop.mar")
    server = tserve(config={
        "model_store": str(store), "load_models": "noop.mar", "default_workers_per_model": 1,
        "max_workers_per_model": 100000, "max_workers_total": 100000,
    })
    wait_healthy(server)
    r = mgmt(server, "PUT", "/models/noop?min_worker=20000&synchronous=true", timeout=120)
    message = assert_error(r, 500, "InternalServerException")
    # TorchServe's message for a synchronous scale whose workers cannot start (issue 8 #1);
    # which worker failed is in the log
    assert message == "Failed to start workers for model noop version: null", message
    text = server.metrics().text
    states = {st: metric_value(text, "ts_workers", model_name="noop", state=st)
              for st in ("starting", "ready", "failed")}
    assert None not in states.values() and states["failed"] >= 1, states
    assert sum(states.values()) == 20000, states  # those that started, and the shortfall
    assert predict(server, "noop", b"alive").content == b"alive"
    r = mgmt(server, "PUT", "/models/noop?min_worker=1&max_worker=1&synchronous=true",
             timeout=120)
    assert r.status_code == 200, r.text
    text = server.metrics().text
    assert metric_value(text, "ts_workers", model_name="noop", state="failed") == 0.0, text
    server.assert_alive()


# ---------------------------------------------------------------------------------------
# #10: requests = successes + Σ failures by reason, for every model, under faults


def test_every_request_is_counted_once_while_scaling_to_zero_and_unloading(tserve, tmp_path):
    slow = slow_noop(tmp_path, "slow", 20)
    store = tmp_path / "store"
    store.mkdir()
    (store / "slow.mar").write_bytes(slow.read_bytes())
    (store / "churn.mar").write_bytes(slow.read_bytes())
    server = tserve(config={
        "model_store": str(store), "load_models": "slow.mar", "default_workers_per_model": 1,
        "job_queue_size": 4, "enable_model_api": True,
    })
    wait_healthy(server)
    sent = {"slow": 0, "churn": 0}
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def client(model: str):
        while not stop.is_set():
            try:
                r = predict(server, model, timeout=30)
                code = r.status_code
            except requests.RequestException:
                code = -1
            with lock:
                if code != 404:  # 404: churn not registered (not a model request)
                    sent[model] += 1
                statuses[code] = statuses.get(code, 0) + 1

    r = mgmt(server, "POST", "/models?url=churn.mar&model_name=churn&initial_workers=1&synchronous=true")
    assert r.status_code == 200, r.text
    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(client, "slow") for _ in range(8)]
        futures += [pool.submit(client, "churn") for _ in range(4)]
        for _ in range(3):
            time.sleep(0.3)
            assert mgmt(server, "PUT", "/models/slow?min_worker=0&max_worker=0&synchronous=true"
                        ).status_code == 200
            time.sleep(0.2)
            assert mgmt(server, "PUT", "/models/slow?min_worker=2&synchronous=true"
                        ).status_code == 200
        # Unregister churn under load (its queue holds requests), then its series go.
        assert mgmt(server, "DELETE", "/models/churn").status_code == 200
        time.sleep(0.3)
        stop.set()
        for f in futures:
            f.result()
    assert statuses.get(-1, 0) == 0, statuses
    assert statuses.get(200, 0) > 0 and statuses.get(503, 0) > 0, statuses
    counts = wait_invariant(server, "slow", sent["slow"])
    assert counts["failures"]["no_worker"] + counts["failures"]["queue_full"] > 0, counts
    wait_for(lambda: not model_series(server.metrics().text, "churn"), 10,
             "churn's series to leave /metrics")
    server.assert_alive()


# ---------------------------------------------------------------------------------------
# Series of an unregistered model


def test_unregistered_model_leaves_no_series(tserve, tmp_path):
    """Before: every model-labelled series stayed after unregistering (cardinality grew
    with model churn)."""
    store = store_with(tmp_path, "noop.mar")
    server = tserve(config={"model_store": str(store), "load_models": "noop.mar",
                            "default_workers_per_model": 1, "enable_model_api": True})
    wait_healthy(server)
    for cycle in range(3):
        r = mgmt(server, "POST", "/models?url=noop.mar&model_name=gone&initial_workers=1"
                                 "&synchronous=true")
        assert r.status_code == 200, r.text
        assert predict(server, "gone").status_code == 200
        assert requests.post(f"{server.inference_url}/predictions/gone/1.0", data=b"v",
                             timeout=30).status_code == 200
        text = server.metrics().text
        assert model_series(text, "gone"), text
        assert mgmt(server, "DELETE", "/models/gone").status_code == 200
        wait_for(lambda: not model_series(server.metrics().text, "gone"), 10,
                 f"cycle {cycle}: the series of model gone to leave /metrics")
    # The model that stays keeps its series, and host-level ones stay.
    text = server.metrics().text
    assert metric_value(text, "ts_workers", model_name="noop", state="ready") == 1.0, text
    assert predict(server, "noop").status_code == 200


# ---------------------------------------------------------------------------------------
# #13: queued requests of clients that have gone


def send_and_close(port: int, model: str, body: bytes) -> None:
    req = (f"POST /predictions/{model} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(req)
    s.close()


def test_queued_requests_of_gone_clients_are_dropped_and_counted(tserve, tmp_path):
    """Needs the transport to notice the close (helper A's part of #13). Before: every
    queued request ran, whether or not anyone was left to read the answer."""
    slow = slow_noop(tmp_path, "slow", 700)
    store = tmp_path / "store"
    store.mkdir()
    (store / "slow.mar").write_bytes(slow.read_bytes())
    # The five abandoned requests fill the queue: they must not keep the last one out.
    server = tserve(config={"model_store": str(store), "load_models": "slow.mar",
                            "default_workers_per_model": 1, "job_queue_size": 5})
    wait_healthy(server)
    port = server.ports["inference"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(predict, server, "slow", b"first")
        wait_for(lambda: metric_value(server.metrics().text, "ts_queue_depth",
                                      model_name="slow") == 0.0
                 and model_counts(server.metrics().text, "slow")["requests"] == 1, 10,
                 "the first request to be running")
        for i in range(5):
            send_and_close(port, "slow", f"gone{i}".encode())
        wait_for(lambda: model_counts(server.metrics().text, "slow")["requests"] == 6, 10,
                 "the abandoned requests to arrive")
        last = pool.submit(predict, server, "slow", b"last")
        assert first.result().content == b"first"
        r = last.result()
        assert r.status_code == 200 and r.content == b"last", r.text
    counts = wait_invariant(server, "slow", 7)
    assert counts["failures"]["client_disconnected"] == 5, counts
    assert counts["successes"] == 2 and counts["batches"] == 2, counts  # the handler ran 2
    server.assert_alive()
