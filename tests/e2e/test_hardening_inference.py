"""Issue 7, the inference input path: what a client sends can fail only its own request,
and only with a bounded amount of the server's memory and time.

  #5  a 1 x 1,000,000 PNG to resnet18 (the resize used to target 256 x 256,000,000: 5 GB)
      and a 7,000 x 7,000 PNG (2 MB that decode to 147 MB of RGB): extra RSS under 50 MB
  #6  one bad tensor in a batch fails only itself (wrong shape; a ragged body claiming
      1.6e12 numbers)
  #7  max_response_size is enforced: a larger response is a 500, counted
  #14 a multipart boundary longer than RFC 2046's 70 characters is a 400
"""

from __future__ import annotations

import concurrent.futures
import struct
import zlib

import pytest
import requests

from e2e_util import REPO_ROOT, metric_value, store_with, tally_from_now, wait_healthy

KITTEN = REPO_ROOT / "examples" / "images" / "kitten.jpg"


def png(width: int, height: int, value: int = 77) -> bytes:
    """A grayscale 8-bit PNG, every pixel `value`."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    row = b"\0" + bytes([value]) * width
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height, 9))
            + chunk(b"IEND", b""))


def assert_error(r: requests.Response, code: int, *fragments: str) -> None:
    """TorchServe's error shape, {"code", "type", "message"}, with `code`."""
    assert r.status_code == code, r.text[:500]
    body = r.json()
    assert set(body) == {"code", "type", "message"}, body
    assert body["code"] == code
    for f in fragments:
        assert f in body["message"], body


def rss_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def failures(server, model: str, reason: str) -> float:
    return metric_value(server.metrics().text, "ts_inference_failures_total", model_name=model,
                        reason=reason) or 0.0


@pytest.fixture(scope="module")
def models_server(module_tserve, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("hardening_inference")
    store = store_with(workdir, "resnet18.mar", "noop.mar", "linear.mar")
    server = module_tserve(config={"model_store": str(store),
                                   "load_models": "resnet18=resnet18.mar,noop.mar,linear.mar"},
                           name="hardening_inference")
    wait_healthy(server)
    return server


# ---- #5 ------------------------------------------------------------------------------


def test_extreme_aspect_ratio_png_is_resized_in_bounded_memory(models_server):
    url = f"{models_server.inference_url}/predictions/resnet18"
    tall = png(1, 1_000_000)
    assert len(tall) < 10_000  # a few kilobytes that decode to a million rows
    peak_before = rss_kb(models_server.pid, "VmHWM")
    tally = tally_from_now(models_server)
    r = tally.request("POST", url, data=tall, timeout=60)
    # Resized in memory bounded by the 224 x 224 crop: an answer like any image's.
    assert r.status_code == 200, r.text
    assert len(r.json()) == 5
    r = tally.request("POST", url, data=png(1_000_000, 1), timeout=60)  # and wide
    assert r.status_code == 200, r.text
    # Sanity, generous: the old resize took ~5 GB here.
    grown_mb = (rss_kb(models_server.pid, "VmHWM") - peak_before) / 1024
    assert grown_mb < 200, f"peak RSS grew by {grown_mb:.0f} MB"
    with open(KITTEN, "rb") as f:
        r = tally.request("POST", url, data=f.read(), timeout=30)
    assert r.status_code == 200 and len(r.json()) == 5
    tally.assert_exact()


def test_decompression_bomb_header_is_refused(models_server):
    url = f"{models_server.inference_url}/predictions/resnet18"
    bomb = bytearray(png(1, 1))
    bomb[16:24] = struct.pack(">II", 100_000, 100_000)  # IHDR width, height
    bomb[29:33] = struct.pack(">I", zlib.crc32(bytes(bomb[12:29])) & 0xFFFFFFFF)
    before = failures(models_server, "resnet18", "bad_input")
    r = requests.post(url, data=bytes(bomb), timeout=30)
    assert_error(r, 400, "too large: 100000x100000 exceeds the limit of 50000000 pixels")
    assert failures(models_server, "resnet18", "bad_input") == before + 1


def rgb_png(width: int, height: int) -> bytes:
    """An 8-bit RGB PNG of diagonal ramps, compressed a row at a time (a few MB at most)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    period = bytes(range(256)) * 3  # 256 pixels of 3 bytes: the ramp repeats
    line = period * (width * 3 // len(period) + 2)
    compressor = zlib.compressobj(6)
    parts = []
    for y in range(height):
        shift = (y % 256) * 3
        parts.append(compressor.compress(b"\0" + line[shift:shift + width * 3]))
    parts.append(compressor.flush())
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", b"".join(parts))
            + chunk(b"IEND", b""))


def test_image_near_the_pixel_cap_is_preprocessed_in_bounded_memory(tserve, tmp_path):
    # Decoded row by row into the resize, keeping only the rows under the 224 x 224 crop
    # (about 4 MB): whole, this image is 147 MB of RGB. A server of its own, one worker,
    # so that the peak RSS before it is LibTorch's after warm-up, nothing else's.
    store = store_with(tmp_path, "resnet18.mar")
    server = tserve(config={"model_store": str(store), "load_models": "resnet18=resnet18.mar",
                            "default_workers_per_model": "1"})
    wait_healthy(server)
    url = f"{server.inference_url}/predictions/resnet18"
    big = rgb_png(7000, 7000)
    assert len(big) < 6_553_500  # max_request_size's default
    kitten = KITTEN.read_bytes()
    for _ in range(3):  # warm-up: LibTorch's own allocations are in the baseline
        r = requests.post(url, data=kitten, timeout=30)
        assert r.status_code == 200 and len(r.json()) == 5
    peak_before = rss_kb(server.pid, "VmHWM")
    tally = tally_from_now(server)
    r = tally.request("POST", url, data=big, timeout=120)
    assert r.status_code == 200, r.text
    assert len(r.json()) == 5
    grown_mb = (rss_kb(server.pid, "VmHWM") - peak_before) / 1024
    assert grown_mb < 50, f"peak RSS grew by {grown_mb:.1f} MB"
    r = tally.request("POST", url, data=kitten, timeout=30)
    assert r.status_code == 200 and len(r.json()) == 5
    tally.assert_exact()


# ---- #6 ------------------------------------------------------------------------------


def _post_linear(server, bodies: list[bytes]) -> list[requests.Response]:
    url = f"{server.inference_url}/predictions/linear"
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        futures = [pool.submit(requests.post, url, data=b,
                               headers={"Content-Type": "application/json"}, timeout=60)
                   for b in bodies]
        return [f.result() for f in futures]


def test_one_bad_shape_fails_only_itself(models_server):
    text = models_server.metrics().text
    requests_before = metric_value(text, "ts_inference_requests_total", model_name="linear",
                                   model_version="default") or 0
    bad_before = failures(models_server, "linear", "bad_input")
    handler_before = failures(models_server, "linear", "handler_error")
    for _ in range(3):  # batching depends on timing: whatever the batches, the same answers
        responses = _post_linear(models_server,
                                 [b"[1, 2, 3, 4]", b"[1, 2, 3, 4]", b"[1, 2, 3]", b"[1, 2, 3, 4]"])
        for i in (0, 1, 3):
            assert responses[i].status_code == 200, responses[i].text
            assert len(responses[i].json()) == 2
        assert_error(responses[2], 400, "shape [3]", "mat1 and mat2 shapes cannot be multiplied")
    text = models_server.metrics().text
    assert metric_value(text, "ts_inference_requests_total", model_name="linear",
                        model_version="default") == requests_before + 12
    assert failures(models_server, "linear", "bad_input") == bad_before + 3
    assert failures(models_server, "linear", "handler_error") == handler_before


def test_ragged_body_claiming_a_huge_shape_fails_only_itself(models_server):
    # 5.2 MB whose first elements claim [1600000, 1000000]: 1.6e12 numbers.
    ragged = b"[[" + b"0," * 999_999 + b"0]" + b",0" * 1_599_999 + b"]"
    assert len(ragged) > 5_000_000
    responses = _post_linear(models_server,
                             [b"[1, 2, 3, 4]", ragged, b"[0, 0, 0, 0]", b"[1, 2, 3, 4]"])
    assert_error(responses[1], 400, "ragged lists: expected a list of 1000000 at depth 1")
    for i in (0, 2, 3):
        assert responses[i].status_code == 200, responses[i].text
    assert responses[2].json() == pytest.approx(
        _post_linear(models_server, [b"[0, 0, 0, 0]"])[0].json())


# ---- #14 -----------------------------------------------------------------------------


def _multipart(boundary: str, data: bytes) -> tuple[bytes, dict]:
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n".encode()
            + data + f"\r\n--{boundary}--\r\n".encode())
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_multipart_boundary_longer_than_70_is_refused(models_server):
    url = f"{models_server.inference_url}/predictions/noop"
    body, headers = _multipart("b" * 70, b"hello")
    r = requests.post(url, data=body, headers=headers, timeout=10)
    assert r.status_code == 200 and r.content == b"hello"
    body, headers = _multipart("b" * 7901, b"x" * 6_000_000)
    r = requests.post(url, data=body, headers=headers, timeout=30)
    assert_error(r, 400, "multipart boundary of 7901 characters: at most 70")
    body, headers = _multipart("b" * 71, b"hello")
    assert_error(requests.post(url, data=body, headers=headers, timeout=10), 400, "RFC 2046")
    assert requests.get(f"{models_server.inference_url}/ping", timeout=5).status_code == 200


# ---- #7 ------------------------------------------------------------------------------


def test_max_response_size_is_enforced(tserve, tmp_path):
    store = store_with(tmp_path, "noop.mar")
    server = tserve(config={"model_store": str(store), "load_models": "noop.mar",
                            "max_response_size": "1000"})
    wait_healthy(server)
    url = f"{server.inference_url}/predictions/noop"
    tally = tally_from_now(server)
    r = tally.request("POST", url, data=b"a" * 1000)  # noop echoes: exactly the limit
    assert r.status_code == 200 and len(r.content) == 1000
    r = tally.request("POST", url, data=b"a" * 1001)
    assert_error(r, 500, "response of 1001 bytes is larger than max_response_size (1000 bytes)")
    assert r.json()["type"] == "InternalServerException"
    tally.assert_exact()  # the 500 is in Requests5XX
    text = server.metrics().text
    assert metric_value(text, "ts_inference_requests_total", model_name="noop",
                        model_version="default") == 2
    assert metric_value(text, "ts_inference_failures_total", model_name="noop",
                        reason="response_too_large") == 1
    assert (metric_value(text, "ts_inference_failures_total", model_name="noop",
                         reason="handler_error") or 0) == 0
    assert metric_value(text, "ts_request_duration_seconds_count", model_name="noop") == 1
