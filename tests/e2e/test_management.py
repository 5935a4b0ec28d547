"""The management API end to end (SPEC §4, issue 4): scaling (the seed's form-body PUT,
synchronous and asynchronous paths, scaling down under load), pagination, register →
predict → set-default → unregister with two versions, every error path with TorchServe's
code and JSON shape, and OPTIONS / on the three listeners.

Models come from build/model_store (noop.mar echoes its input; linear.mar is the tensor
handler with batchSize 4). A second version of noop is made with build/tserve-archiver.
Downloads (http(s) URLs, allowed_urls) are not tested here.
"""

from __future__ import annotations

import concurrent.futures
import json
import pathlib
import re
import shutil
import subprocess
import threading
import time

import pytest
import requests

import e2e_util
from e2e_util import (ARCHIVER, METHOD_NOT_ALLOWED_BODY, NOT_FOUND_BODY, Tally, demo_archive,
                      metric_value, store_with, tally_from_now, wait_healthy)


NO_WORKERS_TAIL = (" registered with 0 initial workers. Use scale workers API to add workers "
                   "for the model.")
PROCESSING = {"status": "Processing worker updates..."}


# ---------------------------------------------------------------------------------------
# Helpers



@pytest.fixture(scope="module")
def noop_v2(tmp_path_factory) -> pathlib.Path:
    """noop.mar with version 2.0 (the archiver names it noop.mar: copy it as noop_v2.mar)."""
    out = tmp_path_factory.mktemp("noop_v2")
    subprocess.run([str(ARCHIVER), "--model-name", "noop", "--version", "2.0", "--handler",
                    "noop", "--export-path", str(out)], check=True, timeout=60,
                   capture_output=True)
    path = out / "noop.mar"
    assert path.is_file(), list(out.iterdir())
    return path


def mgmt(server, method: str, path: str, tally: Tally | None = None, **kwargs) -> requests.Response:
    kwargs.setdefault("timeout", 30)
    url = f"{server.management_url}{path}"
    if tally is not None:
        return tally.request(method, url, **kwargs)
    return requests.request(method, url, **kwargs)


def assert_status(r: requests.Response, code: int, status: str) -> None:
    assert r.status_code == code, f"{r.status_code} {r.text}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    assert r.json() == {"status": status}, r.text


def assert_error(r: requests.Response, code: int, etype: str, message: str | None = None) -> dict:
    """TorchServe's error JSON: exactly code, type, message."""
    assert r.status_code == code, f"expected {code}, got {r.status_code} {r.text}"
    body = r.json()
    assert set(body) == {"code", "type", "message"}, body
    assert body["code"] == code and body["type"] == etype, body
    assert isinstance(body["message"], str) and body["message"], body
    if message is not None:
        assert body["message"] == message, body
    return body


def describe(server, name: str, version: str | None = None,
             tally: Tally | None = None) -> list[dict]:
    path = f"/models/{name}" + (f"/{version}" if version else "")
    r = mgmt(server, "GET", path, tally)
    assert r.status_code == 200, r.text
    return r.json()


def wait_workers(server, name: str, n: int, timeout: float = 20.0) -> dict:
    """Polls describe until the model has exactly n workers, all READY."""
    def ready():
        d = describe(server, name)[0]
        ws = d["workers"]
        return d if len(ws) == n and all(w["status"] == "READY" for w in ws) else None
    return e2e_util.wait_for(ready, timeout, f"{name}: {n} READY workers")


def worker_load_names(text: str, model: str, version: str = "1.0") -> list[str]:
    """WorkerName labels of the WorkerLoadTime series of model_version."""
    fams = e2e_util.families_by_name(text)
    if "WorkerLoadTime" not in fams:
        return []
    out = []
    for s in fams["WorkerLoadTime"].samples:
        assert s.labels.keys() == {"WorkerName", "Level", "Hostname"}, s.line
        assert s.labels["Level"] == "Host" and s.labels["Hostname"] == e2e_util.HOSTNAME, s.line
        if re.fullmatch(rf"W-\d+-{re.escape(model)}_{re.escape(version)}", s.labels["WorkerName"]):
            out.append(s.labels["WorkerName"])
    return out



def wait_worker_series(server, model: str, version: str, expected: set[str],
                       timeout: float = 10.0) -> str:
    def match():
        text = server.metrics().text
        names = worker_load_names(text, model, version)
        return text if sorted(names) == sorted(expected) and len(names) == len(set(names)) else None
    try:
        return e2e_util.wait_for(match, timeout, "WorkerLoadTime series")
    except AssertionError:
        names = worker_load_names(server.metrics().text, model, version)
        raise AssertionError(f"WorkerLoadTime series for {model}_{version}: expected "
                             f"{sorted(expected)}, /metrics has {sorted(names)}") from None


def series_for(desc: dict) -> set[str]:
    return {f"W-{w['id']}-{desc['modelName']}_{desc['modelVersion']}" for w in desc["workers"]}




def api_server(tserve, workdir: pathlib.Path, *archives: str, extra: dict | None = None):
    """A tserve with enable_model_api=true and the given archives in its store, none loaded."""
    store = store_with(workdir, *archives)
    config = {"model_store": str(store), "enable_model_api": True}
    config.update(extra or {})
    return tserve(config=config), store


# ---------------------------------------------------------------------------------------
# Scaling (a shared server: enable_model_api off; each test scales its own model)


@pytest.fixture(scope="module")
def scale_srv(module_tserve, tmp_path_factory):
    store = store_with(tmp_path_factory.mktemp("scale"), "noop.mar", "linear.mar")
    server = module_tserve(name="scale", config={
        "model_store": str(store),
        "load_models": "noop.mar,linear.mar,busy=noop.mar,bounds=noop.mar",
        "default_workers_per_model": 1,
    })
    wait_healthy(server)
    for name in ("noop", "linear", "busy", "bounds"):
        wait_workers(server, name, 1)
    return server


def test_seed_put_form_body_with_curl(scale_srv):
    port = scale_srv.ports["management"]
    # The seed's command, verbatim.
    out = subprocess.run(
        f'curl -X PUT "http://localhost:{port}/models/noop" -d "min_worker=2&max_worker=4"',
        shell=True, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == PROCESSING, out.stdout

    desc = wait_workers(scale_srv, "noop", 2)
    assert desc["minWorkers"] == 2 and desc["maxWorkers"] == 4, desc
    ids = [w["id"] for w in desc["workers"]]
    assert len(set(ids)) == 2, ids
    for w in desc["workers"]:
        assert w["pid"] == scale_srv.pid and w["gpu"] is False, w
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", w["startTime"]), w
    text = wait_worker_series(scale_srv, "noop", "1.0", series_for(desc))
    assert len(worker_load_names(text, "noop")) == 2
    assert metric_value(text, "ts_workers", model_name="noop", model_version="1.0",
                        state="ready") == 2.0
    # the other models kept their single worker
    assert len(describe(scale_srv, "linear")[0]["workers"]) == 1


def test_scale_down_under_load_loses_no_request(scale_srv):
    srv = scale_srv
    r = mgmt(srv, "PUT", "/models/busy?min_worker=3&synchronous=true")
    assert_status(r, 200, "Workers scaled to 3 for model: busy")
    desc = describe(srv, "busy")[0]  # synchronous: all three are up when it answers
    assert len(desc["workers"]) == 3 and all(w["status"] == "READY" for w in desc["workers"]), desc
    wait_worker_series(srv, "busy", "1.0", series_for(desc))

    before = srv.metrics().text
    base = metric_value(before, "ts_inference_requests_total", model_name="busy",
                        model_version="default") or 0.0
    tally = tally_from_now(srv)
    n = 300
    url = f"{srv.inference_url}/predictions/busy"
    done = [0]
    lock = threading.Lock()
    midway = threading.Event()

    def call(i):
        payload = f"request {i}"
        r = requests.post(url, data=payload, timeout=60)
        with lock:
            done[0] += 1
            if done[0] >= n // 3:
                midway.set()
        return payload, r.status_code, r.text, time.monotonic()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(call, i) for i in range(n)]
        assert midway.wait(60), "the load never got a third of the way"
        put_sent = time.monotonic()
        scale = mgmt(srv, "PUT", "/models/busy?min_worker=1&synchronous=true", tally)
        results = [f.result() for f in futures]
    for _, code, _, _ in results:
        tally.record(code, "POST /predictions/busy")
    assert_status(scale, 200, "Workers scaled to 1 for model: busy")
    bad = [(p, code, text) for p, code, text, _ in results if code != 200 or text != p]
    assert not bad, f"{len(bad)} of {n} requests not answered 200 with their echo: {bad[:5]}"
    assert sum(1 for *_, t in results if t > put_sent) > 0, "no request ran after the scale began"
    tally.assert_exact()

    desc = describe(srv, "busy")[0]
    assert desc["minWorkers"] == 1 and desc["maxWorkers"] == 1, desc
    assert len(desc["workers"]) == 1 and desc["workers"][0]["status"] == "READY", desc
    text = wait_worker_series(srv, "busy", "1.0", series_for(desc))
    assert len(worker_load_names(text, "busy")) == 1
    assert metric_value(text, "ts_workers", model_name="busy", model_version="1.0",
                        state="ready") == 1.0
    assert metric_value(text, "ts_inference_requests_total", model_name="busy",
                        model_version="default") == base + n


def test_scale_synchronous_and_asynchronous_paths(scale_srv):
    srv = scale_srv
    # asynchronous (query string): 202 at once, the workers follow
    r = mgmt(srv, "PUT", "/models/linear?min_worker=2")
    assert_status(r, 202, "Processing worker updates...")
    desc = wait_workers(srv, "linear", 2)
    assert desc["minWorkers"] == 2 and desc["maxWorkers"] == 2, desc  # max defaults to min
    wait_worker_series(srv, "linear", "1.0", series_for(desc))

    # synchronous: 200 once the workers are ready
    r = mgmt(srv, "PUT", "/models/linear?min_worker=3&max_worker=5&synchronous=true")
    assert_status(r, 200, "Workers scaled to 3 for model: linear")
    desc = describe(srv, "linear")[0]
    assert desc["minWorkers"] == 3 and desc["maxWorkers"] == 5, desc
    assert [w["status"] for w in desc["workers"]] == ["READY"] * 3, desc
    wait_worker_series(srv, "linear", "1.0", series_for(desc))

    # synchronous with a version in the URL, min only: max follows min, scaled down
    r = mgmt(srv, "PUT", "/models/linear/1.0?min_worker=1&synchronous=true")
    assert_status(r, 200, "Workers scaled to 1 for model: linear, version: 1.0")
    desc = describe(srv, "linear", "1.0")[0]
    assert desc["minWorkers"] == 1 and desc["maxWorkers"] == 1, desc
    assert len(desc["workers"]) == 1, desc
    wait_worker_series(srv, "linear", "1.0", series_for(desc))

    # synchronous from a form body
    r = mgmt(srv, "PUT", "/models/linear", data="min_worker=2&max_worker=2&synchronous=true",
             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_status(r, 200, "Workers scaled to 2 for model: linear")
    assert len(describe(srv, "linear")[0]["workers"]) == 2

    # no parameters at all: min 1, max 1 (TorchServe's defaults)
    r = mgmt(srv, "PUT", "/models/linear?synchronous=true")
    assert_status(r, 200, "Workers scaled to 1 for model: linear")
    desc = describe(srv, "linear")[0]
    assert (desc["minWorkers"], desc["maxWorkers"], len(desc["workers"])) == (1, 1, 1), desc

    # the model still serves
    r = requests.post(f"{srv.inference_url}/predictions/linear", json=[1.0, 2.0, 3.0, 4.0],
                      timeout=30)
    assert r.status_code == 200, r.text


def test_sync_scale_within_bounds_keeps_workers_and_names_min(scale_srv):
    """Workers between min and max stay as they are. TorchServe's synchronous message names
    min_worker (ApiUtils.updateModelWorkers: "Workers scaled to " + minWorkers)."""
    srv = scale_srv
    r = mgmt(srv, "PUT", "/models/bounds?min_worker=2&synchronous=true")
    assert_status(r, 200, "Workers scaled to 2 for model: bounds")
    r = mgmt(srv, "PUT", "/models/bounds?min_worker=1&max_worker=4&synchronous=true")
    desc = describe(srv, "bounds")[0]
    assert (desc["minWorkers"], desc["maxWorkers"], len(desc["workers"])) == (1, 4, 2), desc
    assert_status(r, 200, "Workers scaled to 1 for model: bounds")


def test_scale_error_paths(scale_srv):
    srv = scale_srv
    before = describe(srv, "noop")[0]
    tally = tally_from_now(srv)
    for q in ("?min_worker=3&max_worker=2", "?min_worker=3&max_worker=2&synchronous=true"):
        r = mgmt(srv, "PUT", "/models/noop" + q, tally)
        assert_error(r, 400, "BadRequestException", "max_worker cannot be less than min_worker.")
    r = mgmt(srv, "PUT", "/models/noop", tally, data="min_worker=5&max_worker=1",
             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_error(r, 400, "BadRequestException", "max_worker cannot be less than min_worker.")

    for param, value in (("min_worker", "abc"), ("min_worker", "1.5"), ("min_worker", "-1"),
                         ("max_worker", "x1"), ("max_worker", "2x")):
        r = mgmt(srv, "PUT", f"/models/noop?{param}={value}", tally)
        body = assert_error(r, 400, "BadRequestException")
        assert param in body["message"], body
        r = mgmt(srv, "PUT", "/models/noop", tally, data=f"{param}={value}",
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        body = assert_error(r, 400, "BadRequestException")
        assert param in body["message"], body

    r = mgmt(srv, "PUT", "/models/nope?min_worker=1", tally)
    assert_error(r, 404, "ModelNotFoundException", "Model not found: nope")
    r = mgmt(srv, "PUT", "/models/nope?min_worker=1&synchronous=true", tally)
    assert_error(r, 404, "ModelNotFoundException", "Model not found: nope")
    r = mgmt(srv, "PUT", "/models/noop/9.9?min_worker=1", tally)
    assert r.status_code == 404, r.text
    assert r.json()["message"] == "Model version: 9.9 does not exist for model: noop"

    tally.assert_exact()
    after = describe(srv, "noop")[0]
    assert (after["minWorkers"], after["maxWorkers"], len(after["workers"])) == \
        (before["minWorkers"], before["maxWorkers"], len(before["workers"])), after


def test_register_and_unregister_are_405_when_model_api_disabled(scale_srv):
    srv = scale_srv
    tally = tally_from_now(srv)
    for method, path in (("POST", "/models?url=noop.mar&model_name=x1"),
                         ("POST", "/models"),
                         ("DELETE", "/models/noop"),
                         ("DELETE", "/models/noop/1.0"),
                         ("DELETE", "/models/nope")):
        r = mgmt(srv, method, path, tally)
        assert r.status_code == 405, f"{method} {path}: {r.status_code} {r.text}"
        assert r.json() == METHOD_NOT_ALLOWED_BODY, r.text
    names = [m["modelName"] for m in mgmt(srv, "GET", "/models", tally).json()["models"]]
    assert names == ["bounds", "busy", "linear", "noop"]
    r = requests.post(f"{srv.inference_url}/predictions/noop", data="still here", timeout=10)
    tally.record(r.status_code)
    assert r.status_code == 200 and r.text == "still here"
    tally.assert_exact()


def test_options_describes_each_listener(scale_srv):
    expected = {
        "inference": {"/ping": {"get"}, "/predictions/{model_name}": {"post"},
                      "/predictions/{model_name}/{model_version}": {"post"}},
        "management": {"/models": {"get", "post"},
                       "/models/{model_name}": {"get", "put", "delete"},
                       "/models/{model_name}/{model_version}": {"get", "put", "delete"},
                       "/models/{model_name}/{model_version}/set-default": {"put"}},
        "metrics": {"/metrics": {"get"}},
    }
    # (TorchServe lists /metrics in every listener's description: not checked here)
    others = {"inference": ("/models",), "management": ("/predictions", "/ping"),
              "metrics": ("/models", "/predictions", "/ping")}
    for listener, paths in expected.items():
        r = requests.options(f"{scale_srv.url(listener)}/", timeout=10)
        assert r.status_code == 200, f"{listener}: {r.status_code} {r.text}"
        assert r.headers["Content-Type"].startswith("application/json"), r.headers
        doc = r.json()
        assert doc["openapi"] == "3.0.1", doc
        assert isinstance(doc.get("info"), dict) and doc["info"].get("title"), doc
        got = {p: {m for m in ops if m in ("get", "put", "post", "delete", "options", "head")}
               for p, ops in doc["paths"].items()}
        for p, methods in paths.items():
            assert p in got, f"{listener}: {p} missing from {sorted(got)}"
            assert methods <= got[p], f"{listener}: {p} has {got[p]}, expected {methods}"
        for p in got:
            assert not p.startswith(others[listener]), f"{listener} documents {p}"


# ---------------------------------------------------------------------------------------
# Pagination


def test_pagination_over_150_models(tserve, tmp_path):
    srv, _ = api_server(tserve, tmp_path / "w", "noop.mar")
    names = [f"m{i:03d}" for i in range(150)]
    with requests.Session() as s:
        for name in reversed(names):  # registration order is not the listing order
            r = s.post(f"{srv.management_url}/models",
                       params={"url": "noop.mar", "model_name": name}, timeout=30)
            assert_status(r, 200, f'Model "{name}" Version: 1.0' + NO_WORKERS_TAIL)

        def page(**params):
            r = s.get(f"{srv.management_url}/models", params=params, timeout=10)
            assert r.status_code == 200, r.text
            body = r.json()
            assert set(body) <= {"models", "nextPageToken"}, body
            for m in body["models"]:
                assert m == {"modelName": m["modelName"], "modelUrl": "noop.mar"}, m
            return [m["modelName"] for m in body["models"]], body.get("nextPageToken")

        # default limit 100
        got, token = page()
        assert got == names[:100] and token == "100"
        got, token = page(limit=100)
        assert got == names[:100] and token == "100"
        got, token = page(limit=100, next_page_token=token)
        assert got == names[100:] and token is None
        # limit is capped at 100
        got, token = page(limit=500)
        assert got == names[:100] and token == "100"

        def walk(limit):
            seen, token, pages = [], None, 0
            while True:
                params = {"limit": limit}
                if token is not None:
                    params["next_page_token"] = token
                got, next_token = page(**params)
                pages += 1
                assert len(got) <= limit
                seen += got
                if next_token is None:
                    return seen, pages
                assert isinstance(next_token, str) and next_token == str(len(seen)), \
                    (next_token, len(seen))
                assert pages < 200, "pagination does not end"
                token = next_token

        seen, pages = walk(7)
        assert seen == names and pages == 22  # 21 full pages, then 3
        # exactly divisible: as TorchServe's ApiUtils.getModelList, the page that ends at the
        # last model still names the next offset, whose page is empty and has none
        seen, pages = walk(50)
        assert seen == names and pages == 4

        got, token = page(next_page_token=150)
        assert got == [] and token is None
        got, token = page(limit=10, next_page_token=145)
        assert got == names[145:] and token is None

    d = describe(srv, "m042")[0]
    assert d["modelName"] == "m042" and d["modelUrl"] == "noop.mar", d
    assert d["minWorkers"] == 0 and d["workers"] == [] and d["loadedAtStartup"] is False, d


# ---------------------------------------------------------------------------------------
# Register → predict → set-default → unregister


def test_register_predict_set_default_unregister(tserve, tmp_path, noop_v2):
    srv, store = api_server(tserve, tmp_path / "w", "noop.mar")
    shutil.copy(noop_v2, store / "noop_v2.mar")
    tally = tally_from_now(srv)
    inf = srv.inference_url

    r = mgmt(srv, "POST", "/models?url=noop.mar&initial_workers=1&synchronous=true", tally)
    assert_status(r, 200, 'Model "noop" Version: 1.0 registered with 1 initial workers')
    r = mgmt(srv, "POST", "/models?url=noop_v2.mar&initial_workers=1&synchronous=true", tally)
    assert_status(r, 200, 'Model "noop" Version: 2.0 registered with 1 initial workers')

    listing = mgmt(srv, "GET", "/models", tally).json()
    assert listing == {"models": [{"modelName": "noop", "modelUrl": "noop.mar"}]}
    both = mgmt(srv, "GET", "/models/noop/all", tally).json()
    assert sorted(d["modelVersion"] for d in both) == ["1.0", "2.0"], both
    for d in both:
        assert d["loadedAtStartup"] is False and len(d["workers"]) == 1, d
        assert d["workers"][0]["status"] == "READY", d
    assert [d["modelVersion"] for d in describe(srv, "noop", tally=tally)] == ["1.0"]  # first

    for path, payload in (("noop", "to the default"), ("noop/1.0", "to one"),
                          ("noop/2.0", "to two")):
        r = tally.request("POST", f"{inf}/predictions/{path}", data=payload)
        assert r.status_code == 200 and r.text == payload, (path, r.status_code, r.text)

    # the default version cannot go while another version exists
    for path in ("/models/noop/1.0", "/models/noop"):
        r = mgmt(srv, "DELETE", path, tally)
        assert_error(r, 403, "InvalidModelVersionException",
                     "Cannot remove default version for model noop")

    r = mgmt(srv, "PUT", "/models/noop/2.0/set-default", tally)
    assert_status(r, 200, 'Default version successfully updated for model "noop" to "2.0"')
    assert [d["modelVersion"] for d in describe(srv, "noop", tally=tally)] == ["2.0"]
    listing = mgmt(srv, "GET", "/models", tally).json()
    assert listing == {"models": [{"modelName": "noop", "modelUrl": "noop_v2.mar"}]}
    r = mgmt(srv, "DELETE", "/models/noop/2.0", tally)
    assert_error(r, 403, "InvalidModelVersionException",
                 "Cannot remove default version for model noop")

    r = mgmt(srv, "DELETE", "/models/noop/1.0", tally)
    assert_status(r, 200, 'Model "noop" unregistered')
    assert [d["modelVersion"] for d in mgmt(srv, "GET", "/models/noop/all", tally).json()] == \
        ["2.0"]
    r = tally.request("POST", f"{inf}/predictions/noop/1.0", data="x")
    assert r.status_code == 404, r.text
    assert r.json()["message"] == "Model version: 1.0 does not exist for model: noop"
    r = tally.request("POST", f"{inf}/predictions/noop", data="now two")
    assert r.status_code == 200 and r.text == "now two"

    # the only version left is the default, and may go
    r = mgmt(srv, "DELETE", "/models/noop", tally)
    assert_status(r, 200, 'Model "noop" unregistered')
    r = tally.request("POST", f"{inf}/predictions/noop", data="x")
    assert_error(r, 404, "ModelNotFoundException", "Model not found: noop")
    r = mgmt(srv, "GET", "/models/noop", tally)
    assert_error(r, 404, "ModelNotFoundException", "Model not found: noop")
    assert mgmt(srv, "GET", "/models", tally).json() == {"models": []}

    # registered again after it was removed: version 1.0 is free again
    r = mgmt(srv, "POST", "/models?url=noop.mar", tally)
    assert_status(r, 200, 'Model "noop" Version: 1.0' + NO_WORKERS_TAIL)
    tally.assert_exact()


def test_register_async_and_parameters(tserve, tmp_path):
    srv, _ = api_server(tserve, tmp_path / "w", "noop.mar", "linear.mar")
    # asynchronous only when asked (TorchServe's RegisterModelRequest defaults to true)
    r = mgmt(srv, "POST", "/models?url=linear.mar&model_name=lin&initial_workers=2"
                          "&batch_size=3&max_batch_delay=7&response_timeout=9&synchronous=false")
    assert_status(r, 202, "Processing worker updates...")
    d = wait_workers(srv, "lin", 2)
    assert {k: d[k] for k in ("modelName", "modelVersion", "modelUrl", "runtime", "minWorkers",
                              "maxWorkers", "batchSize", "maxBatchDelay", "responseTimeout",
                              "loadedAtStartup")} == {
        "modelName": "lin", "modelVersion": "1.0", "modelUrl": "linear.mar", "runtime": "python",
        "minWorkers": 2, "maxWorkers": 2, "batchSize": 3, "maxBatchDelay": 7,
        "responseTimeout": 9, "loadedAtStartup": False}
    assert d["jobQueueStatus"]["pendingRequests"] == 0, d
    wait_worker_series(srv, "lin", "1.0", series_for(d))
    r = requests.post(f"{srv.inference_url}/predictions/lin", json=[1.0, 2.0, 3.0, 4.0], timeout=30)
    assert r.status_code == 200, r.text

    # 0 workers (the default), then scaled up with the scale API
    r = mgmt(srv, "POST", "/models?url=noop.mar&model_name=later")
    assert_status(r, 200, 'Model "later" Version: 1.0' + NO_WORKERS_TAIL)
    assert describe(srv, "later")[0]["workers"] == []
    r = requests.post(f"{srv.inference_url}/predictions/later", data="x", timeout=10)
    assert r.status_code == 503, r.text
    r = mgmt(srv, "PUT", "/models/later?min_worker=1&synchronous=true")
    assert_status(r, 200, "Workers scaled to 1 for model: later")
    r = requests.post(f"{srv.inference_url}/predictions/later", data="x", timeout=10)
    assert r.status_code == 200 and r.text == "x"


def test_unregister_waits_for_queued_requests(tserve, tmp_path):
    srv, _ = api_server(tserve, tmp_path / "w", "linear.mar")
    # a batch that waits for its delay: the requests are queued when the DELETE comes
    r = mgmt(srv, "POST", "/models?url=linear.mar&initial_workers=1&synchronous=true"
                          "&batch_size=8&max_batch_delay=2000")
    assert_status(r, 200, 'Model "linear" Version: 1.0 registered with 1 initial workers')
    url = f"{srv.inference_url}/predictions/linear"

    def call(i):
        r = requests.post(url, json=[float(i), 1.0, 2.0, 3.0], timeout=30)
        return r, time.monotonic()

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(call, i) for i in range(3)]

        def arrived():  # requests are counted on arrival
            return metric_value(srv.metrics().text, "ts_inference_requests_total",
                                model_name="linear", model_version="default") == 3.0
        e2e_util.wait_for(arrived, 1.5, "the 3 requests to arrive", interval=0.01)
        delete_sent = time.monotonic()
        r = mgmt(srv, "DELETE", "/models/linear")
        results = [f.result() for f in futures]
    responses = [resp for resp, _ in results]
    assert all(done > delete_sent for _, done in results), \
        "the requests were answered before the DELETE: nothing was queued"
    assert_status(r, 200, 'Model "linear" unregistered')
    for resp in responses:
        assert resp.status_code == 200, resp.text
        assert isinstance(resp.json(), list) and len(resp.json()) == 2, resp.text
    r = requests.post(url, json=[1.0, 2.0, 3.0, 4.0], timeout=10)
    assert_error(r, 404, "ModelNotFoundException", "Model not found: linear")


def test_unregister_and_scale_down_remove_worker_series(tserve, tmp_path, noop_v2):
    """WorkerLoadTime has one series per running worker: a stopped worker's series goes."""
    srv, store = api_server(tserve, tmp_path / "w", "noop.mar")
    shutil.copy(noop_v2, store / "noop_v2.mar")
    for url in ("noop.mar", "noop_v2.mar"):
        r = mgmt(srv, "POST", f"/models?url={url}&initial_workers=2&synchronous=true")
        assert r.status_code == 200, r.text
    d1, d2 = describe(srv, "noop", "1.0")[0], describe(srv, "noop", "2.0")[0]
    wait_worker_series(srv, "noop", "1.0", series_for(d1))
    wait_worker_series(srv, "noop", "2.0", series_for(d2))
    r = mgmt(srv, "PUT", "/models/noop/2.0?min_worker=1&synchronous=true")
    assert r.status_code == 200, r.text
    wait_worker_series(srv, "noop", "2.0", series_for(describe(srv, "noop", "2.0")[0]))
    assert mgmt(srv, "PUT", "/models/noop/2.0/set-default").status_code == 200
    assert mgmt(srv, "DELETE", "/models/noop/1.0").status_code == 200
    text = wait_worker_series(srv, "noop", "1.0", set())
    assert (metric_value(text, "ts_workers", model_name="noop", model_version="1.0",
                         state="ready") or 0.0) == 0.0
    assert mgmt(srv, "DELETE", "/models/noop").status_code == 200
    wait_worker_series(srv, "noop", "2.0", set())


# ---------------------------------------------------------------------------------------
# Error paths


def test_register_outside_the_store_is_404(tserve, tmp_path):
    """Nothing outside the model store: a relative escape, an absolute path elsewhere, a
    symlink pointing out -- all ModelNotFoundException (404), as TorchServe answers a url
    with '..' or one not found in the store; nothing is registered or written."""
    work = tmp_path / "w"
    srv, store = api_server(tserve, work, "noop.mar")
    outside = work / "outside"
    outside.mkdir()
    shutil.copy(demo_archive("noop.mar"), outside / "ext.mar")
    (store / "link.mar").symlink_to(outside / "ext.mar")
    (store / "sub").mkdir()
    tally = tally_from_now(srv)
    problems = []
    for url in ("../outside/ext.mar", "sub/../../outside/ext.mar", "../outside/none.mar",
                str(outside / "ext.mar"), "link.mar"):
        r = mgmt(srv, "POST", "/models", tally, params={"url": url, "model_name": "escaped"})
        body = r.json()
        if r.status_code != 404 or body.get("type") != "ModelNotFoundException" \
                or body.get("code") != 404 or set(body) != {"code", "type", "message"}:
            problems.append(f"url={url}: {r.status_code} {body}")
    assert mgmt(srv, "GET", "/models", tally).json() == {"models": []}
    assert sorted(p.name for p in outside.iterdir()) == ["ext.mar"]
    assert sorted(p.name for p in store.iterdir()) == ["link.mar", "noop.mar", "sub"]
    tally.assert_exact()
    assert not problems, "\n".join(problems)


def test_register_error_paths(tserve, tmp_path):
    work = tmp_path / "w"
    srv, store = api_server(tserve, work, "noop.mar")
    tally = tally_from_now(srv)

    for path in ("/models", "/models?url=", "/models?model_name=x&initial_workers=1"):
        r = mgmt(srv, "POST", path, tally)
        assert_error(r, 400, "BadRequestException", "Parameter url is required.")

    r = mgmt(srv, "POST", "/models?url=missing.mar", tally)
    assert_error(r, 404, "ModelNotFoundException")
    for param in ("initial_workers", "batch_size", "max_batch_delay", "response_timeout"):
        r = mgmt(srv, "POST", "/models", tally, params={"url": "noop.mar", param: "many"})
        body = assert_error(r, 400, "BadRequestException")
        assert param in body["message"], body
    assert mgmt(srv, "GET", "/models", tally).json() == {"models": []}

    r = mgmt(srv, "POST", "/models?url=noop.mar", tally)
    assert r.status_code == 200, r.text
    for q in ("", "&model_name=noop", "&initial_workers=1&synchronous=true"):
        r = mgmt(srv, "POST", "/models?url=noop.mar" + q, tally)
        assert_error(r, 409, "ConflictStatusException",
                     "Model version 1.0 is already registered for model noop")

    # unknown models and versions everywhere
    for method, path in (("GET", "/models/nope"), ("GET", "/models/nope/1.0"),
                         ("GET", "/models/nope/all"), ("PUT", "/models/nope?min_worker=1"),
                         ("DELETE", "/models/nope"), ("DELETE", "/models/nope/1.0"),
                         ("PUT", "/models/nope/1.0/set-default")):
        r = mgmt(srv, method, path, tally)
        assert_error(r, 404, "ModelNotFoundException", "Model not found: nope")
    for method, path in (("GET", "/models/noop/9.9"), ("PUT", "/models/noop/9.9?min_worker=1"),
                         ("DELETE", "/models/noop/9.9")):
        r = mgmt(srv, method, path, tally)
        assert r.status_code == 404, f"{method} {path}: {r.status_code} {r.text}"
        assert r.json()["code"] == 404
        assert r.json()["message"] == "Model version: 9.9 does not exist for model: noop", r.text
    # set-default words it as TorchServe's ModelManager.setDefaultVersion (issue 8 #10)
    r = mgmt(srv, "PUT", "/models/noop/9.9/set-default", tally)
    assert_error(r, 404, "ModelVersionNotFoundException",
                 "Model version 9.9 does not exist for model noop")

    # unknown paths and wrong methods on the management listener
    for method, path in (("GET", "/nope"), ("GET", "/models/noop/1.0/set-default/x"),
                         ("GET", "/predictions/noop")):
        r = mgmt(srv, method, path, tally)
        assert r.status_code == 404 and r.json() == NOT_FOUND_BODY, f"{path}: {r.text}"
    for method, path in (("PATCH", "/models"), ("PUT", "/models"), ("DELETE", "/models"),
                         ("POST", "/models/noop")):
        r = mgmt(srv, method, path, tally)
        assert r.status_code == 405 and r.json() == METHOD_NOT_ALLOWED_BODY, \
            f"{method} {path}: {r.status_code} {r.text}"
    assert [m["modelName"] for m in mgmt(srv, "GET", "/models", tally).json()["models"]] == ["noop"]
    tally.assert_exact()


def test_unknown_version_error_type_is_torchserves(tserve, tmp_path):
    """TorchServe throws ModelVersionNotFoundException for "Model version: V does not exist
    for model: X" (ModelManager.getModel), and its error JSON names the class."""
    srv, _ = api_server(tserve, tmp_path / "w", "noop.mar")
    assert mgmt(srv, "POST", "/models?url=noop.mar").status_code == 200
    for method, path in (("GET", "/models/noop/9.9"), ("PUT", "/models/noop/9.9?min_worker=1"),
                         ("DELETE", "/models/noop/9.9")):
        r = mgmt(srv, method, path)
        assert_error(r, 404, "ModelVersionNotFoundException",
                     "Model version: 9.9 does not exist for model: noop")
    r = mgmt(srv, "PUT", "/models/noop/9.9/set-default")
    assert_error(r, 404, "ModelVersionNotFoundException",
                 "Model version 9.9 does not exist for model noop")
