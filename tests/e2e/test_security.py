"""Secure-by-default registration (SPEC §6, issue 4): enable_model_api, allowed_urls,
model-store confinement, size-capped downloads from a loopback HTTP server the test runs.
No traffic leaves 127.0.0.1."""

from __future__ import annotations

import http.server
import os
import shutil
import threading

import pytest
import requests

from e2e_util import DEMO_STORE



class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # tserve hangs up on oversized bodies
        pass


@pytest.fixture
def file_server(tmp_path):
    """A loopback HTTP server over a folder holding noop.mar and a large file."""
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(DEMO_STORE / "noop.mar", root / "noop.mar")
    shutil.copy(DEMO_STORE / "noop.mar", root / "echo.mar")
    (root / "big.mar").write_bytes(os.urandom(256 * 1024))
    handler = lambda *a, **k: _Files(*a, directory=str(root), **k)  # noqa: E731
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def start(tserve, tmp_path, **config):
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    cfg = {"model_store": str(store)}
    cfg.update(config)
    return tserve(config=cfg), store


def register(server, **params):
    return requests.post(f"{server.management_url}/models", params=params, timeout=30)


def test_register_and_unregister_are_405_unless_enabled(tserve, tmp_path):
    server, store = start(tserve, tmp_path)
    shutil.copy(DEMO_STORE / "noop.mar", store / "noop.mar")
    r = register(server, url="noop.mar")
    assert r.status_code == 405
    assert r.json() == {"code": 405, "type": "MethodNotAllowedException",
                        "message": "Requested method is not allowed, please refer to API "
                                   "document."}
    assert requests.delete(f"{server.management_url}/models/noop", timeout=5).status_code == 405


def test_download_from_allowed_url(tserve, tmp_path, file_server):
    # The file server is on loopback, which downloads may reach only when opted in (#16).
    server, store = start(tserve, tmp_path, enable_model_api=True, allow_loopback_model_urls=True)
    r = register(server, url=f"{file_server}/noop.mar", initial_workers=1, synchronous="true")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == 'Model "noop" Version: 1.0 registered with 1 initial workers'
    assert (store / "noop.mar").is_file()
    assert requests.post(f"{server.inference_url}/predictions/noop", data="hi",
                         timeout=10).text == "hi"
    # the same file name again is not overwritten: TorchServe's FileAlreadyExistsException
    # answer (issue 8 #2)
    r = register(server, url=f"{file_server}/noop.mar", model_name="other")
    assert r.status_code == 500, r.text
    assert r.json() == {"code": 500, "type": "InternalServerException",
                        "message": "Model file already exists noop.mar"}


def test_url_not_matching_allowed_urls_is_404(tserve, tmp_path, file_server):
    server, store = start(tserve, tmp_path, enable_model_api=True,
                          allowed_urls=r"https://models\.example\.com/.*")
    url = f"{file_server}/noop.mar"
    r = register(server, url=url)
    assert r.status_code == 404
    assert r.json() == {"code": 404, "type": "ModelNotFoundException",
                        "message": f"Given URL {url} does not match any allowed URL(s)"}
    assert not (store / "noop.mar").exists()


def test_oversized_download_is_refused_and_leaves_nothing(tserve, tmp_path, file_server):
    server, store = start(tserve, tmp_path, enable_model_api=True,
                          max_model_download_size=64 * 1024, allow_loopback_model_urls=True)
    r = register(server, url=f"{file_server}/big.mar")
    assert r.status_code == 400, r.text
    assert "exceeds the maximum download size" in r.json()["message"]
    assert list(store.iterdir()) == []


@pytest.mark.parametrize("url", ["../outside.mar", "/etc/passwd", "file:///etc/passwd",
                                 "sub/../../outside.mar", "file://%2e%2e/outside.mar"])
def test_paths_outside_the_store_are_rejected(tserve, tmp_path, url):
    server, store = start(tserve, tmp_path, enable_model_api=True)
    shutil.copy(DEMO_STORE / "noop.mar", tmp_path / "outside.mar")
    r = register(server, url=url)
    assert r.status_code in (400, 404), r.text
    assert r.json()["code"] == r.status_code
    assert requests.get(f"{server.management_url}/models", timeout=5).json() == {"models": []}


def test_symlink_escaping_the_store_is_rejected(tserve, tmp_path):
    server, store = start(tserve, tmp_path, enable_model_api=True)
    shutil.copy(DEMO_STORE / "noop.mar", tmp_path / "outside.mar")
    os.symlink(tmp_path / "outside.mar", store / "link.mar")
    r = register(server, url="link.mar")
    assert r.status_code in (400, 404), r.text
    assert requests.get(f"{server.management_url}/models", timeout=5).json() == {"models": []}


def test_file_url_inside_the_store_is_accepted(tserve, tmp_path):
    server, store = start(tserve, tmp_path, enable_model_api=True)
    shutil.copy(DEMO_STORE / "noop.mar", store / "noop.mar")
    r = register(server, url=f"file://{store}/noop.mar")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == ('Model "noop" Version: 1.0 registered with 0 initial workers. '
                                  'Use scale workers API to add workers for the model.')


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_tokens_required_beyond_loopback(tserve, tmp_path):
    """Inference bound to 0.0.0.0 (tests only ever connect through 127.0.0.1): keys are
    generated into key_file.json and required, as TorchServe's token authorization."""
    from e2e_util import free_ports
    port = free_ports(1)[0]
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(DEMO_STORE / "noop.mar", store / "noop.mar")
    key_file = tmp_path / "key_file.json"
    server = tserve(config={"model_store": str(store), "load_models": "noop.mar",
                            "inference_address": f"http://0.0.0.0:{port}",
                            "enable_token_authorization": "true",
                            "key_file": str(key_file)})
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    import json
    keys = json.loads(key_file.read_text())
    url = f"http://127.0.0.1:{port}/predictions/noop"
    r = requests.post(url, data="x", timeout=10)
    assert r.status_code == 400
    assert r.json() == {"code": 400, "type": "InvalidKeyException",
                        "message": "Token Authorization failed. Token either incorrect, "
                                   "expired, or not provided correctly"}
    assert requests.post(url, data="x", headers=bearer("wrong"), timeout=10).status_code == 400
    ok = requests.post(url, data="x", headers=bearer(keys["inference"]["key"]), timeout=10)
    assert ok.status_code == 200 and ok.text == "x"
    # the management key is not the inference key
    assert requests.post(url, data="x", headers=bearer(keys["management"]["key"]),
                         timeout=10).status_code == 400
    mgmt = f"{server.management_url}/models"
    assert requests.get(mgmt, timeout=5).status_code == 400
    assert requests.get(mgmt, headers=bearer(keys["management"]["key"]),
                        timeout=5).status_code == 200
    # rotation: GET /token with the API key; the old inference key stops working
    r = requests.get(f"{server.management_url}/token", params={"type": "inference"},
                     headers=bearer(keys["API"]["key"]), timeout=5)
    assert r.status_code == 200, r.text
    new_keys = json.loads(key_file.read_text())
    assert new_keys["inference"]["key"] != keys["inference"]["key"]
    assert requests.post(url, data="x", headers=bearer(keys["inference"]["key"]),
                         timeout=10).status_code == 400
    assert requests.post(url, data="x", headers=bearer(new_keys["inference"]["key"]),
                         timeout=10).status_code == 200


def test_reuse_key_file_lets_replicas_share_one_set_of_keys(tserve, tmp_path):
    """reuse_key_file=true: a second server started on the first one's key file (0600, its
    owner) accepts the same inference and management keys, as replicas behind one Service
    must; without it (TorchServe's behaviour) every start makes new keys. A key file anyone
    else may read is not trusted: new keys."""
    import json
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(DEMO_STORE / "noop.mar", store / "noop.mar")
    shared = tmp_path / "shared_key_file.json"
    common = {"model_store": str(store), "load_models": "noop.mar",
              "enable_token_authorization": "true", "key_file": str(shared)}
    first = tserve(config=common, name="first")
    keys = json.loads(shared.read_text())
    second = tserve(config={**common, "reuse_key_file": "true"}, name="second")
    assert json.loads(shared.read_text()) == keys
    for server in (first, second):
        r = requests.post(f"{server.inference_url}/predictions/noop", data="x", timeout=10,
                          headers=bearer(keys["inference"]["key"]))
        assert r.status_code == 200 and r.text == "x"
        assert requests.get(f"{server.management_url}/models", timeout=5,
                            headers=bearer(keys["management"]["key"])).status_code == 200
    # without the key: new keys, the old ones are refused
    third = tserve(config=common, name="third")
    assert json.loads(shared.read_text())["inference"]["key"] != keys["inference"]["key"]
    assert requests.post(f"{third.inference_url}/predictions/noop", data="x", timeout=10,
                         headers=bearer(keys["inference"]["key"])).status_code == 400
    # a group-readable file is not trusted even with the key
    reused = json.loads(shared.read_text())
    shared.chmod(0o640)
    fourth = tserve(config={**common, "reuse_key_file": "true"}, name="fourth")
    assert json.loads(shared.read_text())["inference"]["key"] != reused["inference"]["key"]
    assert "not trusted" in fourth.stderr() + fourth.stdout()  # said, not silent
    assert requests.post(f"{fourth.inference_url}/predictions/noop", data="x", timeout=10,
                         headers=bearer(reused["inference"]["key"])).status_code == 400


def test_no_token_needed_on_loopback_by_default(tserve, tmp_path):
    """No key needed on loopback; the key file is still written for TorchServe's scripts
    (issue 8 #9: test_compat_launcher checks that a key sent there must be valid)."""
    server, store = start(tserve, tmp_path)
    assert requests.get(f"{server.management_url}/models", timeout=5).status_code == 200
    assert (server.workdir / "key_file.json").exists()


def test_warning_for_listener_beyond_loopback_without_token(tserve, tmp_path):
    from e2e_util import free_ports
    port = free_ports(1)[0]
    server = tserve(config={"metrics_address": f"http://0.0.0.0:{port}"})
    server.ports["metrics"] = port
    logs = server.stderr() + server.stdout()
    assert "0.0.0.0" in logs and "metrics" in logs.lower(), logs


def test_metrics_token_accepts_the_same_authorization_forms_as_the_keys(tserve, tmp_path):
    """Issue 9 §4: /metrics had its own "Bearer " parser and refused a tab after the scheme
    that the inference and management listeners accept (TorchServe: ^Bearer\\s+(\\S+)$).
    One check now serves every listener: the same header form gets the same answer."""
    import json
    key_file = tmp_path / "key_file.json"
    token = "metrics-Token_1"
    server = tserve(config={"enable_token_authorization": "true", "key_file": str(key_file),
                            "metrics_token": token})
    management_key = json.loads(key_file.read_text())["management"]["key"]
    forms = ["Bearer {}", "Bearer\t{}", "bearer \t {}", "BEARER {}", "Bearer {}\t",
             "Bearer{}", "Bearer {} x", "Basic {}", "{}"]
    for form in forms:
        on_management = requests.get(f"{server.management_url}/models", timeout=5,
                                     headers={"Authorization": form.format(management_key)})
        on_metrics = requests.get(f"{server.metrics_url}/metrics", timeout=5,
                                  headers={"Authorization": form.format(token)})
        assert on_management.status_code in (200, 400), (form, on_management.text)
        assert on_metrics.status_code in (200, 401), (form, on_metrics.text)
        assert (on_management.status_code == 200) == (on_metrics.status_code == 200), \
            (form, on_management.status_code, on_metrics.status_code)
    # The tab form is accepted on both (it was refused on /metrics before).
    assert server.metrics(headers={"Authorization": f"Bearer\t{token}"}).status_code == 200
