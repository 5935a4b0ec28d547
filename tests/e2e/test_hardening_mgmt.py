"""Hardening of model registration and the management API's request parsing (issue 7
#1, #2, #8, #9, #15, #16): hostile bodies and URLs get 4xx in TorchServe's error shape and
the server goes on answering; failed registrations leave nothing behind; a slow download
blocks neither scaling nor shutdown; registration never reaches loopback, link-local or
private addresses unless the operator opts in. No traffic leaves 127.0.0.1."""

from __future__ import annotations

import http.server
import io
import threading
import zipfile

import pytest
import requests

from e2e_util import demo_archive, store_with, wait_for


def assert_error(r: requests.Response, code: int, *fragments: str) -> dict:
    """TorchServe's error shape with `code`, and each fragment in the message."""
    assert r.status_code == code, r.text
    body = r.json()
    assert set(body) == {"code", "type", "message"}, body
    assert body["code"] == code, body
    for f in fragments:
        assert f in body["message"], body
    return body


def register(server, timeout: float = 30, **params) -> requests.Response:
    """POST /models with the parameters in a form body (a long url does not fit a query)."""
    return requests.post(f"{server.management_url}/models", data=params, timeout=timeout)


def models(server) -> list:
    r = requests.get(f"{server.management_url}/models", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["models"]


def start(tserve, tmp_path, *archives: str, **config):
    store = store_with(tmp_path, *archives)
    cfg = {"model_store": str(store), "enable_model_api": True}
    cfg.update(config)
    return tserve(config=cfg), store


# ---------------------------------------------------------------------------------------
# A loopback HTTP server the tests control: fixed routes, and one that trickles its body.


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802 (http.server's naming)
        site = self.server.site
        site.seen.append(self.path)
        path = self.path.split("?")[0]
        if path == "/slow.mar":
            return self._trickle(site)
        body = site.routes.get(path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self, site):
        """Announces SLOW_BYTES bytes and sends one a second until told to stop."""
        self.send_response(200)
        self.send_header("Content-Length", str(Site.SLOW_BYTES))
        self.end_headers()
        self.wfile.flush()
        site.slow_started.set()
        try:
            for _ in range(Site.SLOW_BYTES):
                if site.stop.wait(1.0):
                    break
                self.wfile.write(b"x")
                self.wfile.flush()
            else:
                site.slow_finished.set()
        except OSError:  # tserve hung up: the download was aborted
            site.slow_aborted.set()


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


class Site:
    SLOW_BYTES = 600  # ten minutes at one byte a second

    def __init__(self):
        self.routes: dict[str, bytes] = {}
        self.seen: list[str] = []
        self.stop = threading.Event()
        self.slow_started = threading.Event()
        self.slow_finished = threading.Event()
        self.slow_aborted = threading.Event()
        self.httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self.httpd.site = self
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def site():
    s = Site()
    yield s
    s.close()


def zip_slip_archive() -> bytes:
    """noop.mar plus an entry that would land outside the extraction folder."""
    out = io.BytesIO()
    with zipfile.ZipFile(demo_archive("noop.mar")) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        dst.writestr("../evil.txt", b"outside")
    return out.getvalue()


# ---------------------------------------------------------------------------------------
# #1 JSON bodies nested too deep


DEEP = 150_000


def deep_body() -> str:
    return '{"limit":' + "[" * DEEP + "]" * DEEP + "}"


def test_deeply_nested_json_is_400_and_the_server_lives(tserve, tmp_path):
    server, _ = start(tserve, tmp_path, "noop.mar", load_models="noop.mar")
    headers = {"Content-Type": "application/json"}
    for method, path in (("GET", "/models"), ("PUT", "/models/noop")):
        r = requests.request(method, f"{server.management_url}{path}", data=deep_body(),
                             headers=headers, timeout=30)
        assert_error(r, 400, "nested deeper than 64")
        assert r.json()["type"] == "BadRequestException"
        server.assert_alive()
    # A body within the limit still works.
    r = requests.get(f"{server.management_url}/models", data='{"limit": 1}', headers=headers,
                     timeout=10)
    assert r.status_code == 200, r.text
    assert [m["modelName"] for m in r.json()["models"]] == ["noop"]


def test_json_at_the_depth_limit_is_parsed(tserve, tmp_path):
    server, _ = start(tserve, tmp_path, "noop.mar", load_models="noop.mar")
    headers = {"Content-Type": "application/json"}
    # The object is level 1: 63 arrays inside it make 64 levels, one more is refused.
    ok = '{"x":' + "[" * 63 + "]" * 63 + ', "limit": 1}'
    r = requests.get(f"{server.management_url}/models", data=ok, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    too_deep = '{"x":' + "[" * 64 + "]" * 64 + ', "limit": 1}'
    r = requests.get(f"{server.management_url}/models", data=too_deep, headers=headers,
                     timeout=10)
    assert_error(r, 400, "nested deeper than 64")


# ---------------------------------------------------------------------------------------
# #2 very long registration URLs


def test_very_long_url_is_400_and_the_server_lives(tserve, tmp_path):
    server, store = start(tserve, tmp_path)
    url = "http://models.example.com/" + "a" * 40_000 + ".mar"
    r = register(server, url=url)
    assert_error(r, 400, "8192")
    server.assert_alive()
    assert list(store.iterdir()) == []


def test_url_at_the_length_limit_is_matched(tserve, tmp_path):
    # 8,192 characters in all: not refused for its length (it is refused as unreachable).
    server, _ = start(tserve, tmp_path, allowed_urls=r"https://other\.example/.*")
    url = "http://models.example.com/" + "a" * (8192 - 30) + ".mar"
    url = url + "b" * (8192 - len(url))
    assert len(url) == 8192
    r = register(server, url=url)
    assert_error(r, 404, "does not match any allowed URL")


# ---------------------------------------------------------------------------------------
# #8 failed registrations leave nothing behind


def test_bad_download_leaves_nothing_and_a_retry_is_the_same(tserve, tmp_path, site):
    site.routes["/garbage.mar"] = b"this is not a zip archive"
    server, store = start(tserve, tmp_path, allow_loopback_model_urls=True)
    for _ in range(2):
        r = register(server, url=site.url("/garbage.mar"))
        assert_error(r, 400, "not a zip archive")
        assert list(store.iterdir()) == []
    assert site.seen == ["/garbage.mar", "/garbage.mar"]
    assert models(server) == []
    server.assert_alive()


def test_failed_load_after_download_leaves_nothing(tserve, tmp_path, site):
    site.routes["/copy.mar"] = demo_archive("noop.mar").read_bytes()
    server, store = start(tserve, tmp_path, "noop.mar", load_models="noop.mar",
                          allow_loopback_model_urls=True)
    # The model is registered already: the download succeeds, the registration does not.
    for _ in range(2):
        r = register(server, url=site.url("/copy.mar"))
        assert_error(r, 409, "already registered for model noop")
        assert sorted(p.name for p in store.iterdir()) == ["noop.mar"]
    assert site.seen == ["/copy.mar", "/copy.mar"]
    # Under another name it registers, and the downloaded file stays.
    r = register(server, url=site.url("/copy.mar"), model_name="copy")
    assert r.status_code == 200, r.text
    assert sorted(p.name for p in store.iterdir()) == ["copy.mar", "noop.mar"]


# ---------------------------------------------------------------------------------------
# #9 a slow download blocks neither scaling nor shutdown


def test_slow_download_blocks_neither_scaling_nor_sigterm(tserve, tmp_path, site):
    server, store = start(tserve, tmp_path, "noop.mar", load_models="noop.mar",
                          default_workers_per_model=1, allow_loopback_model_urls=True)
    answer: dict = {}

    def slow_register():
        try:
            answer["response"] = register(server, timeout=Site.SLOW_BYTES,
                                          url=site.url("/slow.mar"))
        except requests.RequestException as e:  # the server hung up without answering
            answer["error"] = e

    t = threading.Thread(target=slow_register, daemon=True)
    t.start()
    assert site.slow_started.wait(30), "the download never started"

    r = requests.put(f"{server.management_url}/models/noop",
                     params={"min_worker": 2, "synchronous": "true"}, timeout=Site.SLOW_BYTES)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "Workers scaled to 2 for model: noop"}
    assert not site.slow_finished.is_set() and t.is_alive()  # the scale did not wait

    rc = server.stop()  # SIGTERM; stop() fails if tserve is still running after 15 s
    assert rc == 0
    assert not site.slow_finished.is_set()
    t.join(30)
    assert "error" not in answer, answer  # the accepted request was answered
    assert_error(answer["response"], 503, "shutting down")
    assert [p.name for p in store.iterdir()] == ["noop.mar"]  # no partial download


def test_too_many_concurrent_downloads_are_refused(tserve, tmp_path, site):
    server, _ = start(tserve, tmp_path, allow_loopback_model_urls=True)
    results: list = []

    def slow_register(i):
        try:
            results.append(register(server, timeout=Site.SLOW_BYTES,
                                    url=site.url(f"/slow.mar?{i}")))
        except requests.RequestException as e:
            results.append(e)

    # Four run at once; each holds a download until shutdown.
    threads = [threading.Thread(target=slow_register, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(site.seen) == 4, 30, "four downloads in progress")
    r = register(server, url=site.url("/slow.mar?5"))
    assert_error(r, 503, "at most 4")
    server.assert_alive()
    assert server.stop() == 0
    for t in threads:
        t.join(30)
    assert len(results) == 4
    for res in results:
        assert isinstance(res, requests.Response), res
        assert_error(res, 503, "shutting down")


# ---------------------------------------------------------------------------------------
# #15 error bodies never reveal host paths


def test_bad_archive_errors_name_the_archive_not_the_store(tserve, tmp_path, site):
    server, store = start(tserve, tmp_path, allow_loopback_model_urls=True)
    (store / "slip.mar").write_bytes(zip_slip_archive())
    r = register(server, url="slip.mar")
    body = assert_error(r, 400, "slip.mar", "unsafe entry")
    assert str(store) not in r.text and str(store.resolve()) not in r.text, body
    assert str(tmp_path) not in r.text, body

    site.routes["/slip2.mar"] = zip_slip_archive()
    r = register(server, url=site.url("/slip2.mar"))
    body = assert_error(r, 400, site.url("/slip2.mar"), "unsafe entry")
    assert str(tmp_path) not in r.text, body
    assert sorted(p.name for p in store.iterdir()) == ["slip.mar"]


def test_a_missing_path_is_a_404_naming_only_the_url_whatever_it_says(tserve, tmp_path):
    # The refusal's kind, not its wording, decides the answer (issue 9 §2): a path whose name
    # reads like the allowed_urls refusal once passed through with the store's location.
    server, store = start(tserve, tmp_path)
    for url in ("missing.mar", "does not match any allowed URL.mar"):
        r = register(server, url=url)
        body = assert_error(r, 404)
        assert body == {"code": 404, "type": "ModelNotFoundException",
                        "message": f"Model not found in model store: {url}"}, body
        assert str(store) not in r.text and str(tmp_path) not in r.text, body
    # A URL allowed_urls refuses keeps TorchServe's message.
    r = register(server, url="ftp://h/a.mar")
    assert r.json() == {"code": 404, "type": "ModelNotFoundException",
                        "message": "Given URL ftp://h/a.mar does not match any allowed URL(s)"}


# ---------------------------------------------------------------------------------------
# #16 loopback, link-local, private addresses and tserve's own listeners


def test_own_metrics_listener_is_refused_by_default(tserve, tmp_path):
    server, store = start(tserve, tmp_path)
    url = f"http://127.0.0.1:{server.ports['metrics']}/metrics"
    r = register(server, url=url)
    assert_error(r, 400, "127.0.0.1", "loopback")
    assert list(store.iterdir()) == []
    server.assert_alive()


def test_loopback_server_is_never_contacted_by_default(tserve, tmp_path, site):
    site.routes["/noop.mar"] = demo_archive("noop.mar").read_bytes()
    server, store = start(tserve, tmp_path)
    for url in (site.url("/noop.mar"), f"http://localhost:{site.port}/noop.mar",
                f"http://[::ffff:127.0.0.1]:{site.port}/noop.mar",
                f"http://0x7f000001:{site.port}/noop.mar"):
        r = register(server, url=url)
        assert_error(r, 400, "allow_loopback_model_urls")
    assert site.seen == []
    assert list(store.iterdir()) == []


@pytest.mark.parametrize("host", ["169.254.169.254", "10.0.0.1", "192.168.1.1", "172.16.0.1",
                                  "100.64.0.1", "[fe80::1]", "[fd00::1]", "0.0.0.0"])
def test_metadata_and_private_addresses_are_refused(tserve, tmp_path, host):
    server, store = start(tserve, tmp_path)
    r = register(server, url=f"http://{host}/latest/model.mar")
    assert_error(r, 400, "refused")
    assert list(store.iterdir()) == []


def test_own_listener_stays_refused_with_loopback_allowed(tserve, tmp_path, site):
    site.routes["/noop.mar"] = demo_archive("noop.mar").read_bytes()
    server, store = start(tserve, tmp_path, allow_loopback_model_urls=True)
    r = register(server, url=f"http://127.0.0.1:{server.ports['management']}/models")
    assert_error(r, 400, "tserve's own")
    r = register(server, url=site.url("/noop.mar"))
    assert r.status_code == 200, r.text
