#pragma once

// The built-in handlers that run TorchScript models through LibTorch. They live in the
// TorchScript backend module, libtserve_torch.so (torch_module.cc), which tserve loads the
// first time a model names one of them (torch_extensions.h, HandlerFactory); the tserve
// executable does not link LibTorch. LibTorch stays inside torchscript_handlers.cc: this
// header includes none of it.
//
// "image_classifier" (TorchServe's handler of that name):
//   Initialize  torch::jit::load(serialized_file) into this handler (one module per worker),
//               eval mode; reads index_to_name.json from the model folder when present
//               ({"0": ["n01440764", "tench"], ...}: the last element is the label, or
//               {"0": "tench"}, or {"object_type_names": [...]}, as TorchServe accepts);
//               then runs warm-up forwards on a zero [1, 3, 224, 224] input (TorchScript's
//               first two calls are several times slower): model-config.yaml's
//               warmupIterations, default 2, 0 for none.
//   Preprocess  each request's body is a JPEG or PNG image: decode, Resize(256),
//               CenterCrop(224), ToTensor, ImageNet Normalize (exactly PIL/torchvision's
//               pixels, see image.h), stacked into one [N, 3, 224, 224] float tensor.
//   Inference   forward under c10::InferenceMode; the output must be [N, classes].
//   Postprocess softmax, top 5 per request -> {"label": probability, ...} highest first,
//               as TorchServe answers: Python's json.dumps(indent=2) byte for byte (labels
//               are the class index as a string when there is no index_to_name.json or it
//               lacks the class).
//
// "image_segmenter" (TorchServe's handler of that name):
//   Initialize  as image_classifier, without labels; warm-up on a zero [1, 3, 224, 224].
//   Preprocess  as image_classifier: Resize(256), CenterCrop(224), ToTensor, ImageNet
//               Normalize, stacked into [N, 3, 224, 224].
//   Inference   forward under c10::InferenceMode; the output is a dict whose "out" is
//               [N, classes, H, W] (torchvision's segmentation models), or that tensor.
//   Postprocess softmax over the classes, then per pixel the top class and its probability:
//               each request answers [H][W][2] nested lists of [class (as a float, e.g.
//               3.0), probability], as TorchServe's torch.stack([indices.float(), values],
//               dim=3).tolist() with json.dumps(indent=2), byte for byte. (TorchServe
//               answers this rather than the [K][H][W] scores, which is too big.)
//
// "object_detector" (TorchServe's handler of that name):
//   Initialize  loads the module and index_to_name.json as image_classifier (labels
//               {"0": "background", ...} or {"object_type_names": [...]}); reads
//               model-config.yaml's detectionThreshold (a tserve key, 0..1; default 0.5,
//               TorchServe's fixed ObjectDetector.threshold); warm-up forwards on a list of
//               one zero [3, 224, 224] image (warmupIterations).
//   Preprocess  each body is a JPEG or PNG: decoded whole and ToTensor'd (p / 255 in
//               float, [3, H, W] at the image's own size: the model resizes and normalises
//               itself, as torchvision's detection models do). The decoded image and its
//               tensor are held (15 bytes a pixel), so images are limited to
//               kMaxObjectDetectorImagePixels (below; a larger one is its request's 400,
//               refused from the header before any pixel is decoded).
//   Inference   one forward on the List[Tensor] of the batch's images (images of different
//               sizes run together). The output is torchvision's: a list with one dict
//               {"boxes": [K, 4], "labels": [K], "scores": [K]} per image, or (losses,
//               that list) as scripted torchvision detection models return.
//   Postprocess per image, the detections whose score >= the threshold (compared in float,
//               as torch does), in the model's order, each
//               {"<label>": [x1, y1, x2, y2], "score": s}, as a list: json.dumps(indent=2)
//               of TorchServe's answer ("[]" when nothing reaches the threshold). The label
//               is index_to_name.json's name for the class, else the class index.
//
// "tensor" (generic): each request's body is JSON: nested lists of numbers (one sample), or
//   {"data": <nested lists>} (other members ignored). Each body is read and checked alone,
//   streaming (at most 4,194,304 numbers, 32 levels of nesting, nothing allocated from a
//   size the body only claims). Samples of equal shape are stacked along a new first
//   dimension and run as one forward, one forward per shape. A forward that raises is
//   charged to its requests, not the batch: a group of several is retried one request at a
//   time, and a request the model refuses alone answers 400 ("the model cannot take this
//   tensor (shape [3]): RuntimeError: mat1 and mat2 shapes cannot be multiplied ...").
//   Each request answers, as compact JSON, its slice of the output along the first
//   dimension: nested lists for a tensor output, a list of those for a tuple or list of
//   tensors. Floating outputs are written as the doubles of their values (what Python's
//   tensor.tolist() gives), integer and bool outputs as such.
//
// Per-request errors: a body that cannot be decoded (not an image; bad JSON, ragged lists,
// non-numbers) answers 400 with TorchServe's error shape,
//   {"code": 400, "type": "BadRequestException", "message": "..."}
// pretty-printed as TorchServe's Gson does, and is left out of the batch's tensor; the
// other requests of the batch are served. How the batch tracks that: Preprocess sizes
// batch.responses to one per request and fills the rejected requests' responses; the
// tensor's rows are mapped back to request indices in batch.data; Postprocess fills only
// the responses of requests that were run. A batch whose requests were all rejected runs no
// forward at all.
//
// Whole-batch errors: LibTorch exceptions (c10::Error, TorchScript errors; for the tensor
// handler only running out of memory, see above) and model outputs of an unexpected type
// or shape are rethrown from the phase as std::runtime_error with the
// handler's name and LibTorch's message (no C++ backtrace); the worker answers 500 for the
// batch. Initialize throws std::runtime_error for a missing or unloadable model file or a
// malformed index_to_name.json.
//
// Threads: Initialize and Inference set LibTorch's intra-op thread count to
// ModelContext::intra_op_threads (at least 1). at::set_num_threads is documented as
// process wide; with Debian's OpenMP build it sets a process-wide default (used by threads
// that have not yet run a parallel op) and the calling thread's OpenMP team size. So each
// worker thread ends up with its own model's setting, which is why Inference re-applies it
// (a no-op when already set) rather than trusting Initialize's thread. ModelContext::device
// is ignored: Debian's LibTorch is CPU only.
//
// Thread safety: as any Handler, one instance is used by one thread at a time; distinct
// instances (each with its own module) run concurrently.

#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>

#include "tserve/handler.h"

namespace tserve::backend {

// The most pixels an image sent to object_detector may have: it is held whole, decoded (3
// bytes a pixel) and as a float tensor (12), about 250 MB at this size (4096 x 4096; a
// 12-megapixel photo fits). The other image handlers stream (see image.h).
inline constexpr int64_t kMaxObjectDetectorImagePixels = int64_t{4096} * 4096;

// The handler of that name ("image_classifier", "image_segmenter", "object_detector",
// "tensor", "llm": torch_extensions.h's kTorchHandlerNames), or null for another name.
std::unique_ptr<Handler> MakeTorchHandler(std::string_view name);

// Held by every torch::jit::load of the module's handlers (this file's and llm_engine.h's):
// the first load initialises LibTorch's shared registries, and ThreadSanitizer saw two
// workers' loads race inside it.
std::mutex& TorchScriptLoadMutex();

// The makers of each (tests use them directly; "llm": llm_engine.h's MakeLlmHandler).
std::unique_ptr<Handler> MakeImageClassifierHandler();
std::unique_ptr<Handler> MakeImageSegmenterHandler();
std::unique_ptr<Handler> MakeObjectDetectorHandler();
std::unique_ptr<Handler> MakeTensorHandler();

}  // namespace tserve::backend
