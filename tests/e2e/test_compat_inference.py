"""TorchServe's inference endpoints that a TorchServe user's clients call (issue 8 #7) and
request ids (issue 8 #8), written from TorchServe's documentation and its frontend's answers:

- inference_api.md: `POST /predictions/{model}` (TorchServe's handler predicts for any
  method: GET works too), `OPTIONS /predictions/{model}` (the model's OpenAPI), `GET
  /api-description` (the deprecated listing), and the SageMaker-style `POST /invocations`
  (`model_name` query parameter; the one startup model when none is given; else 400
  "Parameter model_name is required.") and `POST /models/{model}/invoke`.
- management_api.md: `OPTIONS /models/{model}`: the model's management OpenAPI.
- Every response carries `x-request-id` (TorchServe's NettyUtils sets it on every answer);
  a client's own id is echoed when it is a sane token, and the access log line of the
  request names the same id.
"""

from __future__ import annotations

import re
import socket

import pytest
import requests

from e2e_util import raw_request, store_with, wait_for, wait_healthy

ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@pytest.fixture(scope="module")
def one_model(module_tserve, tmp_path_factory):
    """noop loaded at startup: the only startup model."""
    store = store_with(tmp_path_factory.mktemp("one"), "noop.mar")
    server = module_tserve(name="one", config={"model_store": str(store),
                                               "load_models": "noop=noop.mar",
                                               "enable_model_api": "true"})
    wait_healthy(server)
    return server


@pytest.fixture(scope="module")
def two_models(module_tserve, tmp_path_factory):
    """Two models loaded at startup: /invocations must be told which."""
    store = store_with(tmp_path_factory.mktemp("two"), "noop.mar")
    (store / "other.mar").write_bytes((store / "noop.mar").read_bytes())
    server = module_tserve(name="two", config={"model_store": str(store),
                                               "load_models": "noop=noop.mar,other=other.mar"})
    wait_healthy(server)
    return server


def assert_error(r, code, type_, message):
    assert r.status_code == code, r.text
    assert r.json() == {"code": code, "type": type_, "message": message}


# ---- item 7: endpoints ----

def test_predictions_by_get_and_post(one_model):
    url = f"{one_model.inference_url}/predictions/noop"
    for method in ("POST", "PUT", "GET"):
        r = requests.request(method, url, data=b"hello", timeout=10)
        assert r.status_code == 200, (method, r.text)
        assert r.content == b"hello"
    r = requests.get(f"{one_model.inference_url}/predictions/noop/1.0", timeout=10)
    assert r.status_code == 200, r.text


def test_sagemaker_invoke(one_model):
    r = requests.post(f"{one_model.inference_url}/models/noop/invoke", data=b"x1", timeout=10)
    assert r.status_code == 200, r.text
    assert r.content == b"x1"
    r = requests.post(f"{one_model.inference_url}/models/nosuch/invoke", data=b"x", timeout=10)
    assert_error(r, 404, "ModelNotFoundException", "Model not found: nosuch")


def test_invocations_model_name_query_and_single_startup_model(one_model):
    base = one_model.inference_url
    r = requests.post(f"{base}/invocations?model_name=noop", data=b"q", timeout=10)
    assert r.status_code == 200 and r.content == b"q", r.text
    # No model_name: the one model loaded at startup serves it.
    r = requests.post(f"{base}/invocations", data=b"only", timeout=10)
    assert r.status_code == 200 and r.content == b"only", r.text
    r = requests.post(f"{base}/invocations?model_name=nosuch", data=b"q", timeout=10)
    assert_error(r, 404, "ModelNotFoundException", "Model not found: nosuch")


def test_invocations_needs_model_name_with_several_models(two_models):
    base = two_models.inference_url
    r = requests.post(f"{base}/invocations", data=b"q", timeout=10)
    assert_error(r, 400, "BadRequestException", "Parameter model_name is required.")
    r = requests.post(f"{base}/invocations?model_name=other", data=b"o", timeout=10)
    assert r.status_code == 200 and r.content == b"o", r.text
    r = requests.post(f"{base}/invocations", data=b"h", headers={"model_name": "other"},
                      timeout=10)
    assert r.status_code == 200 and r.content == b"h", r.text
    r = requests.post(f"{base}/invocations", files={"model_name": (None, "noop"),
                                                    "data": ("d", b"form")}, timeout=10)
    assert r.status_code == 200 and r.content == b"form", r.text


def test_options_prediction_is_the_models_openapi(one_model):
    r = requests.options(f"{one_model.inference_url}/predictions/noop", timeout=10)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["openapi"] == "3.0.1"
    assert doc["info"]["title"] == "RESTful API for: noop"
    assert any("noop" in p for p in doc["paths"])
    r = requests.options(f"{one_model.inference_url}/predictions/nosuch", timeout=10)
    assert_error(r, 404, "ModelNotFoundException", "Model not found: nosuch")
    r = requests.options(f"{one_model.inference_url}/predictions/noop/9.9", timeout=10)
    assert_error(r, 404, "ModelVersionNotFoundException",
                 "Model version: 9.9 does not exist for model: noop")


def test_options_model_is_the_models_management_openapi(one_model):
    r = requests.options(f"{one_model.management_url}/models/noop", timeout=10)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["info"]["title"] == "RESTful Management API for: noop"
    assert "/models/{model_name}" in doc["paths"]
    r = requests.options(f"{one_model.management_url}/models/nosuch", timeout=10)
    assert_error(r, 404, "ModelNotFoundException", "Model not found: nosuch")


def test_api_description(one_model):
    for listener in ("inference", "management"):
        r = requests.get(f"{one_model.url(listener)}/api-description", timeout=10)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["openapi"] == "3.0.1" and doc["paths"], listener
        assert doc == requests.options(one_model.url(listener), timeout=10).json()
    paths = requests.get(f"{one_model.inference_url}/api-description", timeout=10).json()["paths"]
    for p in ("/invocations", "/api-description"):
        assert p in paths


# ---- item 8: x-request-id ----

def access_lines(server) -> str:
    path = server.log_dir / "access_log.log"
    return path.read_text(errors="replace") if path.exists() else ""


def test_every_response_has_a_request_id(one_model):
    seen = set()
    for listener, path in (("inference", "/ping"), ("inference", "/nosuch"),
                           ("management", "/models"), ("metrics", "/metrics")):
        r = requests.get(f"{one_model.url(listener)}{path}", timeout=10)
        rid = r.headers.get("x-request-id")
        assert rid and ID_RE.match(rid), (listener, path, r.headers)
        seen.add(rid)
    assert len(seen) == 4  # fresh ids differ


def test_client_request_id_is_echoed_and_logged(one_model):
    rid = "client-Id_1.2"
    r = requests.post(f"{one_model.inference_url}/predictions/noop", data=b"z",
                      headers={"x-request-id": rid}, timeout=10)
    assert r.status_code == 200
    assert r.headers["x-request-id"] == rid
    wait_for(lambda: f"x-request-id={rid}" in access_lines(one_model), 10,
             "the access log line with the client's id")
    line = next(l for l in access_lines(one_model).splitlines() if f"x-request-id={rid}" in l)
    assert '"POST /predictions/noop HTTP/1.1" 200' in line


@pytest.mark.parametrize("hostile", ["a" * 129, "bad id", "x\x7fy", "evil\"quote", "ümlaut"])
def test_hostile_request_id_is_replaced(one_model, hostile):
    raw = (f"GET /ping HTTP/1.1\r\nHost: x\r\nx-request-id: {hostile}\r\n"
           f"Connection: close\r\n\r\n").encode("utf-8")
    resp = raw_request(one_model.ports["inference"], raw)
    # A control character is a malformed field (400) before any id is read; the rest: 200.
    assert resp is not None and resp.status in (200, 400)
    got = resp.headers.get("x-request-id")
    assert got and got != hostile and ID_RE.match(got), resp.headers
    wait_for(lambda: f"x-request-id={got}" in access_lines(one_model), 10, "the fresh id logged")
    assert hostile not in access_lines(one_model)


def test_http_layer_errors_carry_request_ids(module_tserve, tmp_path_factory):
    server = module_tserve(name="limits", config={"max_request_size": 64,
                                                  "max_header_size": 1024})
    port = server.ports["inference"]
    # 400 malformed
    resp = raw_request(port, b"NOT A REQUEST\r\n\r\n")
    assert resp is not None and resp.status == 400
    assert ID_RE.match(resp.headers.get("x-request-id", "")), resp.headers
    # 413 over the body limit: the client's id is echoed (its header fields were read)
    body = b"x" * 100
    resp = raw_request(port, b"POST /predictions/m HTTP/1.1\r\nHost: x\r\nx-request-id: big-1\r\n"
                       b"Content-Length: 100\r\n\r\n" + body)
    assert resp is not None and resp.status == 413
    assert resp.headers.get("x-request-id") == "big-1"
    # 431 header too large
    resp = raw_request(port, b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n")
    assert resp is not None and resp.status == 431
    assert ID_RE.match(resp.headers.get("x-request-id", "")), resp.headers
    wait_for(lambda: "x-request-id=big-1" in access_lines(server), 10, "413 in the access log")
    assert server.alive()
