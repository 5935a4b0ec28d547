"""Serving real models end to end: archives from the model store, the inference API, the
model metrics of SPEC §2 with TorchServe's semantics, batching, failures.

The demo archives are built by `make build` (scripts/make_demo_models.py) into
build/model_store: resnet18.mar (image_classifier, seeded random weights), noop.mar,
linear.mar (the tensor handler, batchSize 4). The example plugin is
build/examples/libexample_handler.so.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import subprocess

import pytest
import requests

import e2e_util
from e2e_util import (ARCHIVER, HOSTNAME, REPO_ROOT, families_by_name, metric_value,
                      store_with, tally_from_now, wait_healthy)

EXAMPLE_METRICS = REPO_ROOT / "examples" / "custom_handler" / "metrics.yaml"
KITTEN = REPO_ROOT / "examples" / "images" / "kitten.jpg"







@pytest.fixture(scope="module")
def models_server(module_tserve, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("serving")
    store = store_with(workdir, "resnet18.mar", "noop.mar", "linear.mar")
    server = module_tserve(config={"model_store": str(store),
                                   "load_models": "resnet18=resnet18.mar,noop.mar,linear.mar"},
                           name="serving")
    wait_healthy(server)
    return server


def test_models_are_listed(models_server):
    r = requests.get(f"{models_server.management_url}/models", timeout=5)
    assert r.status_code == 200
    names = [m["modelName"] for m in r.json()["models"]]
    assert names == ["linear", "noop", "resnet18"]
    urls = {m["modelName"]: m["modelUrl"] for m in r.json()["models"]}
    assert urls["resnet18"] == "resnet18.mar"


def test_resnet18_top5_shape(models_server):
    with open(KITTEN, "rb") as f:
        r = requests.post(f"{models_server.inference_url}/predictions/resnet18", data=f,
                          timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, dict) and len(body) == 5
    probs = list(body.values())
    assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in probs)
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) <= 1.0 + 1e-6
    # TorchServe answers pretty-printed JSON.
    assert r.text.startswith("{\n  \"")


def test_curl_upload_like_the_readme(models_server):
    out = subprocess.run(["curl", "-s", "-T", str(KITTEN),
                          f"{models_server.inference_url}/predictions/resnet18"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert len(json.loads(out.stdout)) == 5


def test_multipart_data_field(models_server):
    with open(KITTEN, "rb") as f:
        r = requests.post(f"{models_server.inference_url}/predictions/resnet18",
                          files={"data": ("kitten.jpg", f, "image/jpeg")}, timeout=30)
    assert r.status_code == 200, r.text
    assert len(r.json()) == 5


def test_counters_and_histograms_are_exact(models_server):
    url = models_server.inference_url
    before = models_server.metrics().text
    base_total = metric_value(before, "ts_inference_requests_total", model_name="noop",
                              model_version="default") or 0.0
    base_count = metric_value(before, "ts_request_duration_seconds_count",
                              model_name="noop") or 0.0
    base_explicit = metric_value(before, "ts_inference_requests_total", model_name="noop",
                                 model_version="1.0") or 0.0
    n = 37
    for i in range(n):
        r = requests.post(f"{url}/predictions/noop", data=f"hello {i}", timeout=10)
        assert r.status_code == 200
        assert r.text == f"hello {i}"  # noop echoes
    for i in range(3):
        r = requests.put(f"{url}/predictions/noop/1.0", data="v", timeout=10)
        assert r.status_code == 200
    text = models_server.metrics().text
    assert metric_value(text, "ts_inference_requests_total", model_name="noop",
                        model_version="default") == base_total + n
    assert metric_value(text, "ts_inference_requests_total", model_name="noop",
                        model_version="1.0") == base_explicit + 3
    assert metric_value(text, "ts_request_duration_seconds_count", model_name="noop",
                        model_version="1.0") == base_count + n + 3
    assert metric_value(text, "ts_queue_duration_seconds_count", model_name="noop",
                        model_version="1.0") == base_count + n + 3
    lat = metric_value(text, "ts_inference_latency_microseconds", model_name="noop",
                       model_version="default")
    queue = metric_value(text, "ts_queue_latency_microseconds", model_name="noop",
                         model_version="default")
    assert lat is not None and lat > 0
    assert queue is not None and 0 <= queue <= lat
    # TorchServe's seed lines, with this host and model.
    assert re.search(r'^ts_inference_requests_total\{model_name="noop",model_version="default",'
                     rf'hostname="{re.escape(HOSTNAME)}",\}} \d+\.\d+$', text, re.M)


def test_model_gauges_and_worker_load_time(models_server):
    with open(KITTEN, "rb") as f:
        assert requests.post(f"{models_server.inference_url}/predictions/resnet18", data=f,
                             timeout=30).status_code == 200
    text = models_server.metrics().text
    for name in ("HandlerTime", "PredictionTime"):
        assert re.search(rf'^{name}\{{ModelName="resnet18",Level="Model",'
                         rf'Hostname="{re.escape(HOSTNAME)}",\}} \d+\.\d+', text, re.M), name
    assert re.search(r'^WorkerLoadTime\{WorkerName="W-\d+-resnet18_1\.0",Level="Host",'
                     r'Hostname=".+",\} \d+\.\d+', text, re.M)
    assert re.search(r'^QueueTime\{Level="Host",Hostname=".+",\} \d+\.\d+', text, re.M)
    assert re.search(r'^WorkerThreadTime\{Level="Host",Hostname=".+",\} \d+\.\d+', text, re.M)
    assert metric_value(text, "ts_workers", model_name="resnet18", state="ready") >= 1
    assert metric_value(text, "ts_queue_depth", model_name="resnet18") == 0


def test_batching_under_concurrent_load(models_server):
    url = f"{models_server.inference_url}/predictions/linear"
    before = models_server.metrics().text
    b_count = metric_value(before, "ts_batch_size_count", model_name="linear") or 0.0
    b_sum = metric_value(before, "ts_batch_size_sum", model_name="linear") or 0.0

    def call(i):
        r = requests.post(url, json=[float(i), 1.0, 2.0, 3.0], timeout=30)
        return r.status_code, r.json()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(48)))
    assert all(code == 200 for code, _ in results), results
    assert all(isinstance(out, list) and len(out) == 2 for _, out in results)
    text = models_server.metrics().text
    count = metric_value(text, "ts_batch_size_count", model_name="linear") - b_count
    total = metric_value(text, "ts_batch_size_sum", model_name="linear") - b_sum
    assert total == 48  # every request ran in exactly one batch
    assert count < 48, "no request was batched with another"
    # with batchSize 4, no batch is larger than 4
    fams = families_by_name(text)
    buckets = {s.labels["le"]: s.value for s in fams["ts_batch_size"].samples
               if s.name == "ts_batch_size_bucket" and s.labels["model_name"] == "linear"}
    assert buckets["4.0"] == buckets["+Inf"]


def test_wrong_shape_is_400_and_worker_goes_on(models_server):
    # The model refuses a tensor of the wrong shape: that request's own 400 (issue 7 #6),
    # not a 500 for a server fault.
    url = f"{models_server.inference_url}/predictions/linear"
    tally = tally_from_now(models_server)
    r = tally.request("POST", url, json=[1.0, 2.0, 3.0])
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["code"] == 400 and err["type"] == "BadRequestException"
    assert "shape [3]" in err["message"], err
    r = tally.request("POST", url, json=[1.0, 2.0, 3.0, 4.0])
    assert r.status_code == 200, r.text
    tally.assert_exact()


def test_errors_and_request_classes_are_exact(tserve, tmp_path):
    store = store_with(tmp_path / "w", "noop.mar")
    server = tserve(config={"model_store": str(store), "load_models": "noop.mar"})
    wait_healthy(server)
    tally = tally_from_now(server)
    tally.get(f"{server.inference_url}/ping")
    r = tally.request("POST", f"{server.inference_url}/predictions/nope", data="x")
    assert r.status_code == 404
    assert r.json() == {"code": 404, "type": "ModelNotFoundException",
                        "message": "Model not found: nope"}
    r = tally.request("POST", f"{server.inference_url}/predictions/noop/9.9", data="x")
    assert r.status_code == 404
    assert r.json()["message"] == "Model version: 9.9 does not exist for model: noop"
    # GET predicts, as TorchServe's handler never checks the method (issue 8 #7); DELETE
    # is not a prediction method
    r = tally.request("DELETE", f"{server.inference_url}/predictions/noop")
    assert r.status_code == 405
    for _ in range(5):
        assert tally.request("POST", f"{server.inference_url}/predictions/noop",
                             data="x").status_code == 200
    tally.assert_exact()


def test_queue_full_is_503_and_counted(tserve, tmp_path):
    store = store_with(tmp_path / "w", "resnet18.mar")
    server = tserve(config={"model_store": str(store), "load_models": "resnet18.mar",
                            "job_queue_size": 1})
    wait_healthy(server)
    tally = tally_from_now(server)
    image = KITTEN.read_bytes()

    def call(_):
        return tally.request("POST", f"{server.inference_url}/predictions/resnet18",
                             data=image, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(call, range(24)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503}, codes
    assert codes.count(503) > 0, "the queue of 1 never filled"
    busy = next(r for r in responses if r.status_code == 503).json()
    assert busy == {"code": 503, "type": "ServiceUnavailableException",
                    "message": 'Model "resnet18" has no worker to serve inference request. '
                               'Please use scale workers API to add workers.'}
    tally.assert_exact()
    text = server.metrics().text
    assert metric_value(text, "ts_inference_failures_total", model_name="resnet18",
                        reason="queue_full") == codes.count(503)
    # arrival counting: every request was counted, the refused ones too
    assert metric_value(text, "ts_inference_requests_total", model_name="resnet18",
                        model_version="default") == 24


def test_broken_archive_does_not_stop_the_others(tserve, tmp_path):
    store = store_with(tmp_path / "w", "noop.mar")
    (store / "broken.mar").write_bytes(b"this is not a zip file")
    server = tserve(config={"model_store": str(store), "load_models": "all"})
    wait_healthy(server)
    r = requests.get(f"{server.management_url}/models", timeout=5)
    assert [m["modelName"] for m in r.json()["models"]] == ["noop"]
    assert requests.post(f"{server.inference_url}/predictions/noop", data="x",
                         timeout=10).status_code == 200
    logs = server.stderr() + server.stdout()
    assert "broken.mar" in logs, logs


def test_custom_plugin_metric(tserve, tmp_path):
    store = tmp_path / "w" / "store"
    e2e_util.archive_example_plugin(store)
    server = tserve(config={"model_store": str(store), "load_models": "example.mar",
                            "metrics_config": str(EXAMPLE_METRICS)})
    wait_healthy(server)
    for text in ("one two three", "four"):
        r = requests.post(f"{server.inference_url}/predictions/example", data=text, timeout=10)
        assert r.status_code == 200, r.text
    text = server.metrics().text
    assert re.search(r'^ExampleRequests\{ModelName="example",Level="Model",'
                     rf'Hostname="{re.escape(HOSTNAME)}",\}} 2\.0$', text, re.M), text


def test_model_that_cannot_load_makes_ping_unhealthy(tserve, tmp_path):
    work = tmp_path / "w"
    store = store_with(work, "noop.mar")
    (work / "model.pt").write_bytes(b"not a TorchScript archive")
    subprocess.run([str(ARCHIVER), "--model-name", "broken", "--version", "1.0",
                    "--serialized-file", str(work / "model.pt"), "--handler", "image_classifier",
                    "--export-path", str(store)], check=True, timeout=60)
    server = tserve(config={"model_store": str(store), "load_models": "all"})

    def failed_worker_reported():
        text = server.metrics().text
        return (metric_value(text, "ts_workers", model_name="broken", state="failed") or 0) >= 1
    e2e_util.wait_for(failed_worker_reported, 30, "the broken model's worker reported failed")
    r = requests.get(f"{server.inference_url}/ping", timeout=5)
    assert r.status_code == 500
    assert r.json() == {"status": "Unhealthy"}
    # the other model serves all the same
    assert requests.post(f"{server.inference_url}/predictions/noop", data="x",
                         timeout=10).status_code == 200
    r = requests.post(f"{server.inference_url}/predictions/broken", data=b"x", timeout=10)
    # no worker can serve it: 503 at once, as TorchServe, not a wait for the timeout
    assert r.status_code == 503, r.text


def test_handler_exception_is_500_and_a_refused_request_is_its_own_400(tserve, tmp_path):
    store = tmp_path / "w" / "store"
    e2e_util.archive_example_plugin(store)
    server = tserve(config={"model_store": str(store), "load_models": "example.mar",
                            "metrics_config": str(EXAMPLE_METRICS)})
    wait_healthy(server)
    url = f"{server.inference_url}/predictions/example"
    tally = tally_from_now(server)
    r = tally.request("POST", url, data="raise")  # the handler throws: a server-side fault
    assert r.status_code == 500, r.text
    assert r.json() == {"code": 500, "type": "InternalServerException",
                        "message": "Prediction failed: example handler: asked to raise"}
    r = tally.request("POST", url, data=b"refuse")  # the handler refuses this one request
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "BadRequestException"
    r = tally.request("POST", url, data="still serving")
    assert r.status_code == 200 and r.json() == {"length": 13, "words": 2}
    tally.assert_exact()
    text = server.metrics().text
    assert metric_value(text, "ts_inference_failures_total", model_name="example",
                        reason="handler_error") == 1
    assert metric_value(text, "ts_inference_failures_total", model_name="example",
                        reason="bad_input") == 1
