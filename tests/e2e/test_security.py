"""Secure-by-default registration (SPEC §6, issue 4): enable_model_api, allowed_urls,
model-store confinement, size-capped downloads from a loopback HTTP server the test runs.
No traffic leaves 127.0.0.1."""

from __future__ import annotations

import http.server
import os
import pathlib
import shutil
import threading

import pytest
import requests

from e2e_util import REPO_ROOT

DEMO_STORE = pathlib.Path(os.environ.get("TSERVE_DEMO_STORE", REPO_ROOT / "build" / "model_store"))


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
    server, store = start(tserve, tmp_path, enable_model_api=True)
    r = register(server, url=f"{file_server}/noop.mar", initial_workers=1, synchronous="true")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == 'Model "noop" Version: 1.0 registered with 1 initial workers'
    assert (store / "noop.mar").is_file()
    assert requests.post(f"{server.inference_url}/predictions/noop", data="hi",
                         timeout=10).text == "hi"
    # the same file name again is not overwritten
    r = register(server, url=f"{file_server}/noop.mar", model_name="other")
    assert r.status_code == 409, r.text


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
                          max_model_download_size=64 * 1024)
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
