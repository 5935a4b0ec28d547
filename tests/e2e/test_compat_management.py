"""Drop-in compatibility of the management API's semantics (issue 8 #1, #2, #5, #6, #10),
each test written from TorchServe's documentation and the answers its code gives
(docs/management_api.md; RegisterModelRequest, ApiUtils.getModelList/updateModelWorkers,
ModelArchive/ArchiveUtils.downloadArchive, Manifest.RuntimeType). No traffic leaves
127.0.0.1: downloads come from a loopback HTTP server the test runs."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading

import pytest
import requests

import e2e_util

from e2e_util import ARCHIVER, demo_archive, store_with


def start(tserve, tmp_path, *archives: str, **config):
    store = store_with(tmp_path / "w", *archives)
    cfg = {"model_store": str(store), "enable_model_api": True}
    cfg.update(config)
    return tserve(config=cfg), store


def mgmt(server, method: str, path: str, **kwargs) -> requests.Response:
    kwargs.setdefault("timeout", 60)
    return requests.request(method, f"{server.management_url}{path}", **kwargs)


def assert_error(r: requests.Response, code: int, etype: str, message: str) -> None:
    assert r.status_code == code, f"{r.status_code} {r.text}"
    assert r.json() == {"code": code, "type": etype, "message": message}, r.text


def assert_status(r: requests.Response, code: int, status: str) -> None:
    assert r.status_code == code, f"{r.status_code} {r.text}"
    assert r.json() == {"status": status}, r.text


def models(server) -> list[str]:
    r = mgmt(server, "GET", "/models")
    assert r.status_code == 200, r.text
    return [m["modelName"] for m in r.json()["models"]]


def archive_with_missing_handler(store, name: str = "broken"):
    """An archive whose handler does not exist: its workers cannot load (TorchServe's
    "init-error" model in its own API tests)."""
    subprocess.run([str(ARCHIVER), "--model-name", name, "--version", "1.0", "--handler",
                    "no_such_handler", "--export-path", str(store)], check=True, timeout=60,
                   capture_output=True)
    return store / f"{name}.mar"


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def file_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(demo_archive("noop.mar"), root / "noop.mar")
    handler = lambda *a, **k: _Files(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------------------------------
# #1 synchronous registration and scaling tell the truth


def test_register_is_synchronous_by_default(tserve, tmp_path):
    """RegisterModelRequest: synchronous defaults to true; 200 once the workers are up."""
    srv, _ = start(tserve, tmp_path, "noop.mar")
    r = mgmt(srv, "POST", "/models?url=noop.mar&initial_workers=1")
    assert_status(r, 200, 'Model "noop" Version: 1.0 registered with 1 initial workers')
    workers = mgmt(srv, "GET", "/models/noop").json()[0]["workers"]
    assert [w["status"] for w in workers] == ["READY"]
    # asked for explicitly, asynchronous is still 202
    r = mgmt(srv, "POST", "/models?url=noop.mar&model_name=later&initial_workers=1"
                          "&synchronous=false")
    assert_status(r, 202, "Processing worker updates...")


def test_register_whose_worker_cannot_start_is_500_and_leaves_nothing(tserve, tmp_path):
    """ApiUtils.updateModelWorkers: 500 InternalServerException "Failed to start workers for
    model X version: V", and the registration is taken back (onError unregisters)."""
    srv, store = start(tserve, tmp_path)
    archive_with_missing_handler(store)
    for _ in range(2):  # a retry answers the same, never 409
        r = mgmt(srv, "POST", "/models?url=broken.mar&initial_workers=1")
        assert_error(r, 500, "InternalServerException",
                     "Failed to start workers for model broken version: 1.0")
        assert models(srv) == []
    assert sorted(p.name for p in store.iterdir()) == ["broken.mar"]  # a store file stays
    srv.assert_alive()


def test_synchronous_scale_whose_worker_cannot_start_is_500(tserve, tmp_path):
    """TorchServe's testScaleModelFailure: the message names version null when the request
    names none; the model stays registered."""
    srv, store = start(tserve, tmp_path)
    archive_with_missing_handler(store)
    r = mgmt(srv, "POST", "/models?url=broken.mar")
    assert r.status_code == 200, r.text
    r = mgmt(srv, "PUT", "/models/broken?min_worker=1&synchronous=true")
    assert_error(r, 500, "InternalServerException",
                 "Failed to start workers for model broken version: null")
    r = mgmt(srv, "PUT", "/models/broken/1.0?min_worker=1&synchronous=true")
    assert_error(r, 500, "InternalServerException",
                 "Failed to start workers for model broken version: 1.0")
    assert models(srv) == ["broken"]
    assert requests.get(f"{srv.inference_url}/ping", timeout=10).status_code == 500


def test_startup_timeout_is_read(tserve, tmp_path):
    srv, _ = start(tserve, tmp_path, "noop.mar")
    r = mgmt(srv, "POST", "/models?url=noop.mar&initial_workers=1&startup_timeout=30")
    assert_status(r, 200, 'Model "noop" Version: 1.0 registered with 1 initial workers')
    for bad in ("x", "0"):
        r = mgmt(srv, "POST", f"/models?url=noop.mar&model_name=n2&startup_timeout={bad}")
        assert r.status_code == 400 and "startup_timeout" in r.json()["message"], r.text
    assert models(srv) == ["noop"]


def test_register_that_outlives_its_startup_timeout_is_500_and_leaves_nothing(tserve, tmp_path):
    """A synchronous register waits for its workers at most startup_timeout seconds
    (TorchServe's startup_timeout): past it, the 500 and no half-registered model."""
    srv, store = start(tserve, tmp_path)
    e2e_util.archive_slow_noop(store, "slowload", delay_ms=0, load_delay_ms=5000)
    r = mgmt(srv, "POST", "/models?url=slowload.mar&initial_workers=1&startup_timeout=1")
    assert_error(r, 500, "InternalServerException",
                 "Failed to start workers for model slowload version: 1.0")
    assert models(srv) == []
    # given the time, the same registration succeeds
    r = mgmt(srv, "POST", "/models?url=slowload.mar&initial_workers=1&startup_timeout=60")
    assert_status(r, 200, 'Model "slowload" Version: 1.0 registered with 1 initial workers')
    assert models(srv) == ["slowload"]


# ---------------------------------------------------------------------------------------
# #2 downloaded archives go with their model


def test_unregister_deletes_the_downloaded_archive_and_the_url_registers_again(
        tserve, tmp_path, file_server):
    srv, store = start(tserve, tmp_path, allow_loopback_model_urls=True)
    url = f"{file_server}/noop.mar"
    r = mgmt(srv, "POST", "/models", params={"url": url, "initial_workers": 1})
    assert_status(r, 200, 'Model "noop" Version: 1.0 registered with 1 initial workers')
    assert (store / "noop.mar").is_file()
    # modelUrl is the URL it was registered from, in the list and the description
    r = mgmt(srv, "GET", "/models")
    assert r.json()["models"] == [{"modelName": "noop", "modelUrl": url}], r.text
    assert mgmt(srv, "GET", "/models/noop").json()[0]["modelUrl"] == url
    # the file is in the store: TorchServe's FileAlreadyExistsException answer
    r = mgmt(srv, "POST", "/models", params={"url": url, "model_name": "other"})
    assert_error(r, 500, "InternalServerException", "Model file already exists noop.mar")
    assert_status(mgmt(srv, "DELETE", "/models/noop"), 200, 'Model "noop" unregistered')
    assert list(store.iterdir()) == []
    r = mgmt(srv, "POST", "/models", params={"url": url, "initial_workers": 1})
    assert_status(r, 200, 'Model "noop" Version: 1.0 registered with 1 initial workers')
    assert requests.post(f"{srv.inference_url}/predictions/noop", data="hi",
                         timeout=10).text == "hi"


def test_unregister_keeps_archives_that_were_not_downloaded(tserve, tmp_path):
    srv, store = start(tserve, tmp_path, "noop.mar")
    assert mgmt(srv, "POST", "/models?url=noop.mar").status_code == 200
    assert mgmt(srv, "DELETE", "/models/noop").status_code == 200
    assert [p.name for p in store.iterdir()] == ["noop.mar"]


# ---------------------------------------------------------------------------------------
# #5 registration parameters are read


def test_handler_parameter_overrides_the_archive(tserve, tmp_path):
    srv, _ = start(tserve, tmp_path, "noop.mar")
    r = mgmt(srv, "POST", "/models?url=noop.mar&handler=no_such_handler&initial_workers=1")
    assert_error(r, 500, "InternalServerException",
                 "Failed to start workers for model noop version: 1.0")
    assert models(srv) == []
    r = mgmt(srv, "POST", "/models?url=noop.mar&handler=noop&initial_workers=1")
    assert r.status_code == 200, r.text


def test_runtime_parameter_is_validated(tserve, tmp_path):
    """TorchServe's testRegisterModelInvalidRuntime, checked before the url."""
    srv, _ = start(tserve, tmp_path, "noop.mar")
    r = mgmt(srv, "POST", "/models?url=InvalidUrl&runtime=InvalidRuntime")
    assert_error(r, 400, "BadRequestException", "Invalid RuntimeType value: InvalidRuntime")
    r = mgmt(srv, "POST", "/models?url=noop.mar&runtime=python3&response_timeout=7")
    assert r.status_code == 200, r.text
    d = mgmt(srv, "GET", "/models/noop").json()[0]
    assert d["runtime"] == "python3" and d["responseTimeout"] == 7, d


# ---------------------------------------------------------------------------------------
# #6 empty values mean the default; limit and token clamped as TorchServe


def test_empty_query_values_mean_default(tserve, tmp_path):
    srv, _ = start(tserve, tmp_path, "noop.mar")
    r = mgmt(srv, "POST", "/models?url=noop.mar&initial_workers=&batch_size=&synchronous="
                          "&response_timeout=&startup_timeout=&runtime=&handler=")
    assert r.status_code == 200, r.text
    r = mgmt(srv, "GET", "/models?limit=&next_page_token=")
    assert r.status_code == 200 and r.json() == {
        "models": [{"modelName": "noop", "modelUrl": "noop.mar"}]}, r.text
    r = mgmt(srv, "PUT", "/models/noop?min_worker=&max_worker=&synchronous=")
    assert r.status_code == 202, r.text


def test_list_limit_and_token_as_torchserve(tserve, tmp_path):
    """ApiUtils.getModelList: limit < 0 or > 100 is 100; a negative token is 0; a page that
    ends at the last model still names the next offset."""
    srv, store = start(tserve, tmp_path, "noop.mar")
    for name in ("a", "b"):
        assert mgmt(srv, "POST", f"/models?url=noop.mar&model_name={name}").status_code == 200

    def page(**params):
        r = mgmt(srv, "GET", "/models", params=params)
        assert r.status_code == 200, r.text
        return [m["modelName"] for m in r.json()["models"]], r.json().get("nextPageToken")

    assert page(limit=-1) == (["a", "b"], None)
    assert page(limit=500) == (["a", "b"], None)
    assert page(limit=1, next_page_token=-3) == (["a"], "1")
    assert page(limit=2) == (["a", "b"], "2")
    assert page(limit=1, next_page_token=1) == (["b"], "2")
    assert page(next_page_token=2) == ([], None)


# ---------------------------------------------------------------------------------------
# #10 TorchServe's words


def test_download_failure_is_torchserves_400(tserve, tmp_path, file_server):
    srv, store = start(tserve, tmp_path, allow_loopback_model_urls=True)
    url = f"{file_server}/missing.mar"
    r = mgmt(srv, "POST", "/models", params={"url": url})
    assert_error(r, 400, "DownloadArchiveException", f"Failed to download archive from: {url}")
    assert list(store.iterdir()) == []


def test_relative_path_is_torchserves_404(tserve, tmp_path):
    srv, _ = start(tserve, tmp_path, "noop.mar")
    for url in ("../noop.mar", "sub/../../noop.mar"):
        r = mgmt(srv, "POST", "/models", params={"url": url})
        assert_error(r, 404, "ModelNotFoundException",
                     f"Relative path is not allowed in url: {url}")


def test_set_default_unknown_version_is_torchserves_message(tserve, tmp_path):
    srv, _ = start(tserve, tmp_path, "noop.mar")
    assert mgmt(srv, "POST", "/models?url=noop.mar").status_code == 200
    r = mgmt(srv, "PUT", "/models/noop/9.9/set-default")
    assert_error(r, 404, "ModelVersionNotFoundException",
                 "Model version 9.9 does not exist for model noop")
