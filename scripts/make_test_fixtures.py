#!/usr/bin/python3
"""Writes the small committed fixtures of the image and TorchScript handler unit tests, and
prints the values the tests expect, computed with PIL, torchvision and torch.

    /usr/bin/python3 scripts/make_test_fixtures.py [--out tests/fixtures] [--print-expected]

Files (all deterministic, a few KB each):
  images/kitten_small.jpg, images/kitten_small.png   a 64x48 synthetic pattern
  images/kitten_small_resize32.png     PIL's Resize(32) of the PNG (a downscale, antialiased)
  images/modes/*                       8x6 images in every PNG colour type / bit depth and
                                       grayscale and CMYK JPEGs (the RGB conversions)
  models/linear.pt                     TorchScript nn.Linear(4, 2) with fixed weights
  models/tiny_classifier/model.pt      a TorchScript [N,3,224,224] -> [N,10] classifier
  models/tiny_classifier/index_to_name.json   TorchServe's {"0": ["n00", "zero"], ...}

--print-expected prints the constants pasted into tests/unit/image_test.cc and
tests/unit/torchscript_handlers_test.cc. Needs python3-torch, python3-torchvision and
python3-pil (Debian 12); no network.
"""

import argparse
import json
import os
import struct
import sys
import zlib

import torch
import torchvision.transforms as T
from PIL import Image

# The ImageNet preprocessing of TorchServe's image_classifier handler.
PREPROCESS = T.Compose(
    [
        T.Resize(256),
        T.CenterCrop(224),
        T.ToTensor(),
        T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ]
)

LINEAR_WEIGHT = [[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0]]
LINEAR_BIAS = [0.5, -1.0]

LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def kitten_pattern():
    """A 64x48 RGB pattern with gradients, a disc and sharp edges (resampling has work)."""
    width, height = 64, 48
    img = Image.new("RGB", (width, height))
    px = img.load()
    for y in range(height):
        for x in range(width):
            r = (x * 4) % 256
            g = (y * 5) % 256
            b = (x * y) % 256
            if (x - 40) ** 2 + (y - 20) ** 2 < 100:
                r, g, b = 250, 200, 30
            if 8 <= x < 16 and 30 <= y < 44:
                r, g, b = 10, 20, 240
            px[x, y] = (r, g, b)
    return img


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]


def write_png(path, pixels, bit_depth, color_type, interlace=False):
    """A minimal PNG writer for what PIL cannot write (16-bit RGB, 4-bit gray, Adam7).
    pixels[y][x] is a tuple of samples."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    def pack_row(samples):
        if bit_depth == 16:
            return b"".join(struct.pack(">H", v) for v in samples)
        if bit_depth == 8:
            return bytes(samples)
        per_byte = 8 // bit_depth
        out = bytearray()
        for i in range(0, len(samples), per_byte):
            byte = 0
            for j, v in enumerate(samples[i : i + per_byte]):
                byte |= v << (8 - bit_depth * (j + 1))
            out.append(byte)
        return bytes(out)

    height, width = len(pixels), len(pixels[0])
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    raw = b""
    for x0, y0, dx, dy in passes:
        for y in range(y0, height, dy):
            samples = [v for x in range(x0, width, dx) for v in pixels[y][x]]
            if samples:
                raw += b"\0" + pack_row(samples)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, int(interlace))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
                chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


MODE_FIXTURES = [
    "gray8.png", "gray1.png", "gray4.png", "gray_alpha.png", "rgba.png", "palette.png",
    "palette4_trns.png", "interlaced.png", "rgb16.png", "gray16.png", "gray.jpg", "cmyk.jpg",
]


def write_mode_fixtures(directory):
    os.makedirs(directory, exist_ok=True)
    base = kitten_pattern().resize((8, 6), Image.NEAREST)
    path = lambda name: os.path.join(directory, name)
    px = base.load()
    grid = [[px[x, y] for x in range(8)] for y in range(6)]
    base.convert("L").save(path("gray8.png"))
    base.convert("1").save(path("gray1.png"))
    write_png(path("gray4.png"), [[(sum(p) // 48,) for p in row] for row in grid], 4, 0)
    base.convert("LA").save(path("gray_alpha.png"))
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((8, 6)))
    rgba.save(path("rgba.png"))
    base.convert("P", palette=Image.ADAPTIVE, colors=64).save(path("palette.png"))
    base.convert("P", palette=Image.ADAPTIVE, colors=16).save(
        path("palette4_trns.png"), bits=4, transparency=3)
    write_png(path("interlaced.png"), grid, 8, 2, interlace=True)
    write_png(path("rgb16.png"), [[tuple(v * 257 + x for v in p) for x, p in enumerate(row)]
                                  for row in grid], 16, 2)
    write_png(path("gray16.png"), [[(p[0] * 256 + 255,) for p in row] for row in grid], 16, 0)
    base.convert("L").save(path("gray.jpg"), quality=90)
    base.convert("CMYK").save(path("cmyk.jpg"), quality=90)


def expected_rgb(directory, name):
    """The RGB image tserve must decode a mode fixture to: PIL's convert("RGB")..."""
    img = Image.open(os.path.join(directory, name))
    if name == "gray16.png":
        # ...except for 16-bit gray, which PIL clips to 255; tserve keeps the high byte, as
        # for every other 16-bit PNG (and as PIL does for 16-bit RGB).
        high = [v >> 8 for v in img.getdata()]
        out = Image.new("L", img.size)
        out.putdata(high)
        return out.convert("RGB")
    return img.convert("RGB")


class TinyClassifier(torch.nn.Module):
    """Average-pools a 224x224 image to 4x4 and classifies 48 features into 10 classes."""

    def __init__(self):
        super().__init__()
        self.pool = torch.nn.AdaptiveAvgPool2d(4)
        self.fc = torch.nn.Linear(48, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(x), 1))


def save_scripted(module, path):
    scripted = torch.jit.script(module.eval())
    scripted.save(path)


def build(out):
    images = os.path.join(out, "images")
    models = os.path.join(out, "models")
    tiny = os.path.join(models, "tiny_classifier")
    for d in (images, models, tiny):
        os.makedirs(d, exist_ok=True)

    kitten = kitten_pattern()
    kitten.save(os.path.join(images, "kitten_small.jpg"), quality=90)
    kitten.save(os.path.join(images, "kitten_small.png"), optimize=True)
    jpeg = Image.open(os.path.join(images, "kitten_small.jpg")).convert("RGB")
    png = Image.open(os.path.join(images, "kitten_small.png")).convert("RGB")
    T.Resize(32)(png).save(os.path.join(images, "kitten_small_resize32.png"), optimize=True)

    write_mode_fixtures(os.path.join(images, "modes"))

    linear = torch.nn.Linear(4, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(LINEAR_WEIGHT))
        linear.bias.copy_(torch.tensor(LINEAR_BIAS))
    save_scripted(linear, os.path.join(models, "linear.pt"))

    torch.manual_seed(0)
    classifier = TinyClassifier()
    with torch.no_grad():
        classifier.fc.weight.mul_(2.0)  # spread the probabilities apart
    save_scripted(classifier, os.path.join(tiny, "model.pt"))
    with open(os.path.join(tiny, "index_to_name.json"), "w") as f:
        json.dump({str(i): ["n%02d" % i, name] for i, name in enumerate(LABELS)}, f, indent=2)
        f.write("\n")


def checksum(img):
    """sum(p) and sum(p * (i % 251 + 1)) over the RGB bytes in order, mod 2^32."""
    data = img.tobytes()
    weighted = sum(p * (i % 251 + 1) for i, p in enumerate(data)) % (1 << 32)
    return (sum(data), weighted)


def top5_body(model, tensor, labels):
    """TorchServe's image_classifier answer: softmax, top 5, json.dumps(indent=2)."""
    with torch.inference_mode():
        probs = torch.nn.functional.softmax(model(tensor.unsqueeze(0)), dim=1)
    p, c = torch.topk(probs, 5, dim=1)
    return json.dumps({labels[i]: v for i, v in zip(c[0].tolist(), p[0].tolist())}, indent=2)


def print_expected(out):
    images = os.path.join(out, "images")
    models = os.path.join(out, "models")
    jpeg = Image.open(os.path.join(images, "kitten_small.jpg")).convert("RGB")
    png = Image.open(os.path.join(images, "kitten_small.png")).convert("RGB")
    print("// image_test.cc: decoded pixels (x, y) -> RGB")
    for name, img in (("jpg", jpeg), ("png", png)):
        for xy in ((0, 0), (63, 47), (40, 20), (10, 35), (31, 17)):
            print(f"//   {name} {xy}: {img.getpixel(xy)}")
    print("// image_test.cc: checksums (Checksum() in the test) of PIL's pixels")
    print(f"//   decoded jpg: {checksum(jpeg)}")
    print(f"//   Resize(256) + CenterCrop(224) of the jpg: "
          f"{checksum(T.CenterCrop(224)(T.Resize(256)(jpeg)))}")
    print(f"//   Resize(256) of the png: {checksum(T.Resize(256)(png))}")
    print("// image_test.cc: checksums of the RGB conversions of images/modes/*")
    for name in MODE_FIXTURES:
        print(f'//   {{"{name}", {checksum(expected_rgb(os.path.join(images, "modes"), name))}}},')
    tensor = PREPROCESS(jpeg)
    print("// image_test.cc: PREPROCESS(jpeg)[c, y, x]")
    for c, y, x in ((0, 0, 0), (1, 100, 50), (2, 223, 223), (0, 112, 150)):
        print(f"//   [{c}][{y}][{x}] = {tensor[c, y, x].item()!r}")
    norm = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    print("// image_test.cc: Normalize(ToTensor(p)) for p = 0, 128, 255 per channel")
    for p in (0, 128, 255):
        t = norm(T.ToTensor()(Image.new("RGB", (1, 1), (p, p, p))))
        print(f"//   {p}: {[v for v in t.flatten().tolist()]}")

    linear = torch.jit.load(os.path.join(models, "linear.pt"))
    print("// torchscript_handlers_test.cc: linear outputs")
    for row in ([1, 2, 3, 4], [0, 0, 0, 0], [0.5, -1, 2, 0.25]):
        with torch.inference_mode():
            print(f"//   {row} -> {linear(torch.tensor([row], dtype=torch.float32))[0].tolist()}")

    tiny = torch.jit.load(os.path.join(models, "tiny_classifier", "model.pt"))
    labels = LABELS
    print("// torchscript_handlers_test.cc: tiny_classifier on kitten_small.jpg")
    print(top5_body(tiny, tensor, labels))
    print("// torchscript_handlers_test.cc: tiny_classifier on kitten_small.png")
    print(top5_body(tiny, PREPROCESS(png), labels))


def main():
    # TorchScript writes a module's constants in set order, which follows Python's string
    # hashing: fix the hash seed so that the .pt files come out byte-identical every run.
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--out", default=os.path.join(root, "tests", "fixtures"))
    parser.add_argument("--print-expected", action="store_true")
    args = parser.parse_args()
    if args.print_expected:
        print_expected(args.out)
    else:
        build(args.out)


if __name__ == "__main__":
    main()
