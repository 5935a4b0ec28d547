#!/usr/bin/python3
"""Builds the demo model archives that `make run` serves and the end-to-end tests use,
locally and without network access:

  resnet18.mar  image_classifier: torchvision's resnet18 with seeded random weights
                (torch.manual_seed(0), weights=None), TorchScript; index_to_name.json with
                the 1000 ImageNet class names bundled in torchvision ({"0": "tench", ...});
                minWorkers 1, maxWorkers 2, batchSize 1, maxBatchDelay 50, responseTimeout 120
  lraspp.mar    image_segmenter: torchvision's lraspp_mobilenet_v3_large (21 VOC classes)
                with seeded random weights (weights=None, weights_backbone=None),
                TorchScript (~13 MB); minWorkers 1, maxWorkers 1, batchSize 2,
                maxBatchDelay 50
  ssdlite.mar   object_detector: torchvision's ssdlite320_mobilenet_v3_large (91 COCO
                classes) with seeded random weights, TorchScript (~14 MB), built with
                score_thresh=0.001, topk_candidates=10 and detections_per_img=20 so that its random scores
                (about 1/91) still give a few boxes; index_to_name.json with the COCO names
                bundled in torchvision; NMS in plain TorchScript (Debian's LibTorch
                has no torchvision::nms op); the handler's detectionThreshold is TorchServe's
                default 0.5, so it answers [] until a test lowers it; batchSize 2
  noop.mar      the noop handler (echo), no model file; batchSize 1
  linear.mar    the tensor handler on a seeded TorchScript nn.Linear(4, 2);
                minWorkers 1, maxWorkers 1, batchSize 4, maxBatchDelay 50
  llm.mar       the llm handler (continuous batching, src/backend/llm_engine.h) on a tiny
                byte-level causal transformer with seeded random weights, TorchScript
                (~2.5 MB; scripts/demo_llm.py documents the model and its interface:
                allocate, prefill, decode); minWorkers 1, maxWorkers 1, batchSize 1,
                responseTimeout 120, and the engine's `llm:` section (LLM_CONFIG below)

    /usr/bin/python3 scripts/make_demo_models.py --out build/model_store \\
        --archiver build/tserve-archiver [--force]
    /usr/bin/python3 scripts/make_demo_models.py --llm-pt PATH   # the LLM's .pt alone

An archive that already exists is kept unless --force, or unless it is older than the
script that defines it (this file; for llm.mar also demo_llm.py). Needs Debian 12's python3-torch and
python3-torchvision. Takes about 15 s (resnet18.mar is ~45 MB, the others smaller).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from typing import List

RESNET18_CONFIG = """\
minWorkers: 1
maxWorkers: 2
batchSize: 1
maxBatchDelay: 50
responseTimeout: 120
"""

LRASPP_CONFIG = """\
minWorkers: 1
maxWorkers: 1
batchSize: 2
maxBatchDelay: 50
responseTimeout: 120
"""

SSDLITE_CONFIG = """\
minWorkers: 1
maxWorkers: 1
batchSize: 2
maxBatchDelay: 50
responseTimeout: 120
"""

NOOP_CONFIG = """\
batchSize: 1
"""

LINEAR_CONFIG = """\
minWorkers: 1
maxWorkers: 1
batchSize: 4
maxBatchDelay: 50
responseTimeout: 120
"""


# The llm handler's settings (src/backend/llm_engine.h): max_num_seqs sequences at once,
# max_model_len tokens each (prompt + generated), a KV cache of max_num_seqs * max_model_len
# positions handed out in blocks of block_size, max_tokens when a request gives none.
LLM_CONFIG = """\
minWorkers: 1
maxWorkers: 1
batchSize: 1
responseTimeout: 120
llm:
  max_num_seqs: 16
  max_model_len: 256
  block_size: 16
  max_tokens: 64
"""


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def archive(archiver, out, name, handler, work, serialized=None, extra=None):
    """Runs tserve-archiver with torch-model-archiver's flags."""
    cmd = [archiver, "--model-name", name, "--version", "1.0", "--handler", handler]
    if serialized:
        cmd += ["--serialized-file", os.path.join(work, serialized)]
    if extra:
        cmd += ["--extra-files", ",".join(os.path.join(work, e) for e in extra)]
    cmd += ["--config-file", os.path.join(work, "model-config.yaml"),
            "--export-path", out, "--force"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"make_demo_models: {' '.join(cmd)} failed ({result.returncode}):\n"
                 f"{result.stdout}{result.stderr}")


def build_resnet18(work):
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torch.jit.script(torchvision.models.resnet18(weights=None)).eval()
    model.save(os.path.join(work, "model.pt"))
    categories = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    # TorchServe's {"0": ["n01440764", "tench"]} needs the WordNet ids, which torchvision
    # does not ship; {"0": "tench"} is the other format TorchServe reads.
    labels = {str(i): name for i, name in enumerate(categories)}
    write(os.path.join(work, "index_to_name.json"), json.dumps(labels, indent=2) + "\n")
    write(os.path.join(work, "model-config.yaml"), RESNET18_CONFIG)
    return {"serialized": "model.pt", "extra": ["index_to_name.json"]}


def build_lraspp(work):
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None)
    torch.jit.script(model.eval()).save(os.path.join(work, "model.pt"))
    write(os.path.join(work, "model-config.yaml"), LRASPP_CONFIG)
    return {"serialized": "model.pt"}


def build_ssdlite(work):
    import torch
    import torchvision
    import torchvision.models.detection.ssd as ssd

    def batched_nms_torchscript(boxes, scores, idxs, iou_threshold: float):
        """torchvision.ops.batched_nms in plain TorchScript (greedy, highest score first, the
        same kept boxes in the same order): Debian's LibTorch has no torchvision::nms op, which
        torchvision's own batched_nms calls."""
        if boxes.numel() == 0:
            return torch.empty((0,), dtype=torch.int64)
        offsets = idxs.to(boxes) * (boxes.max() + 1)
        b = boxes + offsets[:, None]
        order = scores.argsort(descending=True)
        b = b[order]
        areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        suppressed = torch.zeros(order.numel(), dtype=torch.bool)
        keep: List[int] = []
        for i in range(order.numel()):
            if bool(suppressed[i]):
                continue
            keep.append(i)
            w = (torch.min(b[i, 2], b[:, 2]) - torch.max(b[i, 0], b[:, 0])).clamp(min=0)
            h = (torch.min(b[i, 3], b[:, 3]) - torch.max(b[i, 1], b[:, 1])).clamp(min=0)
            inter = w * h
            iou = inter / (areas[i] + areas - inter)
            suppressed = suppressed | (iou > iou_threshold)
        return order[torch.tensor(keep, dtype=torch.int64)]

    # torchvision's NMS is a custom op (torchvision::nms) that Debian's LibTorch lacks:
    # the model is scripted with batched_nms_torchscript instead (same result).
    ssd.box_ops.batched_nms = torch.jit.script(batched_nms_torchscript)
    # Scripted detection models always return (losses, detections): the handler knows.
    warnings.filterwarnings("ignore", message=r".*returns a \(Losses, Detections\) tuple")
    torch.manual_seed(0)
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, score_thresh=0.001, topk_candidates=10,
        detections_per_img=20)
    torch.jit.script(model.eval()).save(os.path.join(work, "model.pt"))
    weights = torchvision.models.detection.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1
    labels = {str(i): name for i, name in enumerate(weights.meta["categories"])}
    write(os.path.join(work, "index_to_name.json"), json.dumps(labels, indent=2) + "\n")
    write(os.path.join(work, "model-config.yaml"), SSDLITE_CONFIG)
    return {"serialized": "model.pt", "extra": ["index_to_name.json"]}


def build_noop(work):
    write(os.path.join(work, "model-config.yaml"), NOOP_CONFIG)
    return {}


def build_linear(work):
    import torch

    torch.manual_seed(0)
    model = torch.jit.script(torch.nn.Linear(4, 2)).eval()
    model.save(os.path.join(work, "model.pt"))
    write(os.path.join(work, "model-config.yaml"), LINEAR_CONFIG)
    return {"serialized": "model.pt"}


def import_demo_llm():
    """scripts/demo_llm.py (it imports torch), without writing a __pycache__ beside it."""
    sys.dont_write_bytecode = True
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import demo_llm

    return demo_llm


def build_llm(work):
    import_demo_llm().build(os.path.join(work, "model.pt"))
    write(os.path.join(work, "model-config.yaml"), LLM_CONFIG)
    return {"serialized": "model.pt"}


MODELS = [
    ("resnet18", "image_classifier", build_resnet18),
    ("lraspp", "image_segmenter", build_lraspp),
    ("ssdlite", "object_detector", build_ssdlite),
    ("noop", "noop", build_noop),
    ("linear", "tensor", build_linear),
    ("llm", "llm", build_llm),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="model store folder to write to")
    parser.add_argument("--archiver", help="the tserve-archiver binary")
    parser.add_argument("--force", action="store_true", help="rebuild existing archives")
    parser.add_argument("--llm-pt", metavar="PATH",
                        help="write only the demo LLM's TorchScript file to PATH (unit tests)")
    args = parser.parse_args()
    if args.llm_pt:
        os.makedirs(os.path.dirname(os.path.abspath(args.llm_pt)), exist_ok=True)
        import_demo_llm().build(args.llm_pt)
        return
    if not args.out or not args.archiver:
        parser.error("--out and --archiver are required (unless --llm-pt)")

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    def stale(name):
        # Missing, or older than the script that defines it (the demo LLM's interface lives
        # in demo_llm.py: an archive from an older script would not match the engine).
        mar = os.path.join(out, name + ".mar")
        if not os.path.exists(mar):
            return True
        here = os.path.dirname(os.path.abspath(__file__))
        sources = [os.path.abspath(__file__)]
        if name == "llm":
            sources.append(os.path.join(here, "demo_llm.py"))
        return any(os.path.getmtime(src) > os.path.getmtime(mar) for src in sources)

    todo = [m for m in MODELS if args.force or stale(m[0])]
    if not todo:
        print(f"make_demo_models: {', '.join(m[0] + '.mar' for m in MODELS)} present in {out}")
        return
    if not (os.path.isfile(args.archiver) and os.access(args.archiver, os.X_OK)):
        sys.exit(f"make_demo_models: archiver {args.archiver} not found or not executable")

    for name, handler, build in todo:
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"tserve-{name}-") as work:
            files = build(work)
            archive(args.archiver, out, name, handler, work, files.get("serialized"),
                    files.get("extra"))
        mar = os.path.join(out, name + ".mar")
        print(f"make_demo_models: {mar} ({os.path.getsize(mar) / 1e6:.1f} MB, "
              f"{time.monotonic() - start:.1f} s)")


if __name__ == "__main__":
    main()
