"""End to end: TorchServe's other built-in vision handlers, image_segmenter and
object_detector, on the demo archives `make build` writes to build/model_store
(scripts/make_demo_models.py: torchvision architectures, seeded random weights):

  lraspp.mar   image_segmenter, lraspp_mobilenet_v3_large (21 classes), batchSize 2
  ssdlite.mar  object_detector, ssdlite320_mobilenet_v3_large (91 COCO classes, COCO names
               in index_to_name.json), batchSize 2, TorchServe's default threshold 0.5

The answers' shapes are TorchServe's (ts/torch_handler/image_segmenter.py, object_detector.py):
the segmenter answers [H][W][2] per image ([top class as a float, its probability] per pixel
of the 224 x 224 crop), the detector a list of {"<label>": [x1, y1, x2, y2], "score": s}.
Random weights give random scores (about 1/91 per class for the detector), so the detector's
boxes are checked through a copy of the archive whose model-config.yaml lowers
detectionThreshold (tserve's key; TorchServe's threshold is a fixed 0.5).
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import struct
import zipfile
import zlib

import pytest
import requests

from e2e_util import (REPO_ROOT, demo_archive, metric_value, store_with, tally_from_now,
                      wait_for, wait_healthy)

KITTEN = REPO_ROOT / "examples" / "images" / "kitten.jpg"
KITTEN_PNG = REPO_ROOT / "tests" / "fixtures" / "images" / "kitten_small.png"
LOW_THRESHOLD = 0.005


def kitten() -> bytes:
    return KITTEN.read_bytes()


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a baseline JPEG, from its SOF0/SOF2 marker."""
    i = 2
    while i < len(data):
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            return (int.from_bytes(data[i + 7:i + 9], "big"),
                    int.from_bytes(data[i + 5:i + 7], "big"))
        i += 2 + length
    raise AssertionError("no SOF marker")


def with_config(source, target, extra: str) -> None:
    """Copies a .mar, appending `extra` to its model-config.yaml."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "model-config.yaml":
                data += extra.encode()
            dst.writestr(item, data)


@pytest.fixture(scope="module")
def vision_server(module_tserve, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("vision")
    store = store_with(workdir, "lraspp.mar", "ssdlite.mar")
    with_config(store / "ssdlite.mar", store / "ssdlite_low.mar",
                f"detectionThreshold: {LOW_THRESHOLD}\n")
    server = module_tserve(config={"model_store": str(store),
                                   "load_models": "lraspp.mar,ssdlite.mar,"
                                                  "ssdlite_low=ssdlite_low.mar"},
                           name="vision")
    wait_healthy(server)
    return server


def post(server, model: str, data: bytes, tally=None) -> requests.Response:
    url = f"{server.inference_url}/predictions/{model}"
    if tally is not None:
        return tally.request("POST", url, data=data, timeout=60)
    return requests.post(url, data=data, timeout=60)


def assert_bad_request(r: requests.Response, fragment: str) -> None:
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["code"] == 400 and err["type"] == "BadRequestException", err
    assert fragment in err["message"], err


# ---- image_segmenter ---------------------------------------------------------------------


def check_segmentation(body) -> None:
    assert isinstance(body, list) and len(body) == 224  # rows of the 224 x 224 crop
    for row in body:
        assert isinstance(row, list) and len(row) == 224
        for pixel in row:
            assert isinstance(pixel, list) and len(pixel) == 2
            cls, prob = pixel
            # The top class as a float (TorchServe: indices.type(values.dtype)).
            assert isinstance(cls, float) and cls.is_integer() and 0 <= cls < 21
            # The top of 21 probabilities is at least 1/21.
            assert isinstance(prob, float) and 1 / 21 - 1e-6 <= prob <= 1.0


def test_segmenter_answers_a_class_map_per_pixel(vision_server):
    r = post(vision_server, "lraspp", kitten())
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    # json.dumps(indent=2), as TorchServe's frontend writes a list.
    assert r.text.startswith("[\n  [\n    [\n      "), r.text[:40]
    check_segmentation(r.json())


def test_segmenter_png_and_batch_with_a_bad_image(vision_server):
    # batchSize 2: sent together, requests share batches; each bad one fails alone.
    good, png = kitten(), KITTEN_PNG.read_bytes()
    bodies = [good, b"not an image", png, good[: len(good) // 2], good]
    tally = tally_from_now(vision_server)
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda b: post(vision_server, "lraspp", b, tally), bodies))
    for i in (0, 2, 4):
        assert responses[i].status_code == 200, responses[i].text
        check_segmentation(responses[i].json())
    assert responses[0].text == responses[4].text  # same image, same answer
    assert_bad_request(responses[1], "not a JPEG or PNG image")
    assert_bad_request(responses[3], "invalid JPEG image")
    tally.assert_exact()


def test_segmenter_metrics(vision_server):
    def count():
        return metric_value(vision_server.metrics().text, "ts_inference_requests_total",
                            model_name="lraspp", model_version="default") or 0.0

    before = count()
    for _ in range(2):
        assert post(vision_server, "lraspp", kitten()).status_code == 200
    assert post(vision_server, "lraspp", b"\xff\xd8\xff garbage").status_code == 400
    text = vision_server.metrics().text
    assert metric_value(text, "ts_inference_requests_total", model_name="lraspp",
                        model_version="default") == before + 3
    assert metric_value(text, "ts_workers", model_name="lraspp", state="ready") == 1
    assert metric_value(text, "ts_inference_latency_microseconds", model_name="lraspp",
                        model_version="default") > 0


# ---- object_detector ---------------------------------------------------------------------


def test_detector_default_threshold_finds_nothing_in_random_weights(vision_server):
    # TorchServe's threshold, 0.5: scores of random weights (about 1/91) never reach it.
    r = post(vision_server, "ssdlite", kitten())
    assert r.status_code == 200, r.text
    assert r.text == "[]"


def coco_names() -> set[str]:
    with zipfile.ZipFile(demo_archive("ssdlite.mar")) as mar:
        return set(json.loads(mar.read("index_to_name.json")).values())


def check_detections(body, width: int, height: int) -> None:
    names = coco_names()
    assert isinstance(body, list) and 1 <= len(body) <= 20  # detections_per_img=20
    for detection in body:
        assert isinstance(detection, dict) and len(detection) == 2, detection
        (label, box), (score_key, score) = detection.items()  # the label, then "score"
        assert score_key == "score", detection
        assert label in names, label
        assert isinstance(score, float) and LOW_THRESHOLD <= score <= 1.0
        assert len(box) == 4 and all(isinstance(v, float) for v in box)
        x1, y1, x2, y2 = box
        # Boxes are in the sent image's pixels (the model maps them back from its 320 x 320).
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height, box


def test_detector_boxes_labels_scores(vision_server):
    data = kitten()
    r = post(vision_server, "ssdlite_low", data)
    assert r.status_code == 200, r.text
    assert r.text.startswith("[\n  {\n    \""), r.text[:40]
    check_detections(r.json(), *image_size(data))
    # Deterministic: the same image answers the same bytes.
    assert post(vision_server, "ssdlite_low", data).text == r.text


def test_detector_batch_of_sizes_with_a_bad_image(vision_server):
    # Images of different sizes run in one forward; a bad one fails only itself.
    good = kitten()
    png = KITTEN_PNG.read_bytes()
    with io.BytesIO(png) as f:  # PNG IHDR: width and height at bytes 16..24
        f.seek(16)
        png_size = (int.from_bytes(f.read(4), "big"), int.from_bytes(f.read(4), "big"))
    bodies = [good, b"", png, b"GIF89a....", good]
    tally = tally_from_now(vision_server)
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda b: post(vision_server, "ssdlite_low", b, tally),
                                  bodies))
    for i, size in ((0, image_size(good)), (2, png_size), (4, image_size(good))):
        assert responses[i].status_code == 200, responses[i].text
        check_detections(responses[i].json(), *size)
    assert responses[0].text == responses[4].text
    assert_bad_request(responses[1], "not a JPEG or PNG image (empty body)")
    assert_bad_request(responses[3], "not a JPEG or PNG image")
    tally.assert_exact()


def test_detector_refuses_huge_images_from_the_header(vision_server):
    # A PNG header declaring 5000 x 5000 (25 megapixels, over the detector's 4096 x 4096):
    # refused before any pixel is decoded, the worker goes on.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 5000, 5000, 8, 2, 0,
                                                                0, 0))
           + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    r = post(vision_server, "ssdlite_low", png)
    assert_bad_request(r, "PNG image too large: 5000x5000 exceeds the limit of 16777216 pixels")
    assert post(vision_server, "ssdlite_low", kitten()).status_code == 200


def test_detector_metrics(vision_server):
    text = vision_server.metrics().text
    before = metric_value(text, "ts_inference_requests_total", model_name="ssdlite",
                          model_version="default") or 0.0
    for _ in range(3):
        assert post(vision_server, "ssdlite", kitten()).status_code == 200
    text = vision_server.metrics().text
    assert metric_value(text, "ts_inference_requests_total", model_name="ssdlite",
                        model_version="default") == before + 3
    assert metric_value(text, "ts_workers", model_name="ssdlite", state="ready") == 1
    assert metric_value(text, "ts_workers", model_name="ssdlite_low", state="ready") == 1


def test_detector_threshold_out_of_range_fails_the_worker(tserve, tmp_path):
    store = store_with(tmp_path / "w", "ssdlite.mar")
    with_config(store / "ssdlite.mar", store / "bad.mar", "detectionThreshold: 1.5\n")
    server = tserve(config={"model_store": str(store), "load_models": "bad.mar"})
    wait_for(lambda: "detectionThreshold must be 0..1" in server.logs_text(), 30,
             "the worker's load error in the log")


# ---- torchvision's operators (torch_extension_libraries) ----------------------------------

NMS_MODEL = r'''
import sys, torch, torchvision

class Nms(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for i in range(x.size(0)):
            b = x[i]
            keep = torchvision.ops.nms(b[:, :4], b[:, 4], 0.5)
            mask = torch.zeros(b.size(0))
            mask[keep] = 1.0
            outs.append(mask)
        return torch.stack(outs)

torch.jit.script(Nms()).save(sys.argv[1])
'''


def nms_archive(tmp_path):
    """A TorchScript model calling torchvision::nms, as every scripted torchvision detector
    does, served by the tensor handler."""
    import subprocess

    from e2e_util import ARCHIVER
    work = tmp_path / "nms"
    work.mkdir()
    script = work / "make_nms.py"  # TorchScript needs the source in a file
    script.write_text(NMS_MODEL)
    subprocess.run(["/usr/bin/python3", str(script), str(work / "model.pt")], check=True,
                   timeout=120)
    store = tmp_path / "store"
    store.mkdir()
    subprocess.run([str(ARCHIVER), "--model-name", "nms", "--version", "1.0", "--handler",
                    "tensor", "--serialized-file", str(work / "model.pt"), "--export-path",
                    str(store)], check=True, timeout=60)
    return store


BOXES = [[0, 0, 10, 10, 0.9], [1, 1, 10, 10, 0.8], [20, 20, 30, 30, 0.7]]


def test_models_calling_torchvision_operators_load_by_default(tserve, tmp_path):
    store = nms_archive(tmp_path)
    server = tserve(config={"model_store": str(store), "load_models": "nms.mar"})
    wait_healthy(server)
    r = requests.post(f"{server.inference_url}/predictions/nms", json=BOXES, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == [1.0, 0.0, 1.0]  # the second box overlaps the first: suppressed
    assert "TorchScript operators from" in server.logs_text()


def test_without_torchvision_operators_such_a_model_cannot_load(tserve, tmp_path):
    import e2e_util

    store = nms_archive(tmp_path)
    server = tserve(config={"model_store": str(store), "load_models": "nms.mar",
                            "torch_extension_libraries": "none"})

    def failed():
        text = server.metrics().text
        return (metric_value(text, "ts_workers", model_name="nms", state="failed") or 0) >= 1
    e2e_util.wait_for(failed, 60, "the nms model's worker reported failed")
    r = requests.post(f"{server.inference_url}/predictions/nms", json=BOXES, timeout=30)
    assert r.status_code == 503, r.text
    assert "torchvision::nms" in server.logs_text()


def test_a_torch_extension_library_that_cannot_load_is_a_startup_error(tmp_path):
    from e2e_util import run_expect_exit

    rc, _, err = run_expect_exit(tmp_path / "w", config={
        "torch_extension_libraries": str(tmp_path / "missing.so")})
    assert rc == 2, err
    assert "torch_extension_libraries: cannot load" in err and "missing.so" in err, err
