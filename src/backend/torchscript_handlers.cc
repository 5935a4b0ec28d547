#include "backend/torchscript_handlers.h"

#include <ATen/Parallel.h>
#include <torch/script.h>

#include <algorithm>
#include <any>
#include <array>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/image.h"
#include "backend/llm_engine.h"
#include "common/strings.h"

namespace tserve::backend {

namespace {

using nlohmann::json;
using nlohmann::ordered_json;

constexpr int kResizeSize = 256;
constexpr int kCropSize = 224;
constexpr int kTopK = 5;
constexpr int kMaxJsonDepth = 32;
// TorchServe's ObjectDetector.threshold; model-config.yaml's detectionThreshold overrides it.
constexpr float kDefaultDetectionThreshold = 0.5f;

// ---- helpers shared by both handlers ----------------------------------------------------

// TorchServe's error body, as its Gson pretty-printer writes it (the same bytes as
// api::JsonError: 2-space indent, HTML-safe escapes, invalid UTF-8 replaced, newline).
std::string GsonError(int code, std::string_view type, std::string_view message) {
  ordered_json j;
  j["code"] = code;
  j["type"] = type;
  j["message"] = message;
  std::string out = GsonHtmlSafe(j.dump(2, ' ', false, ordered_json::error_handler_t::replace));
  out.push_back('\n');
  return out;
}

InferenceResponse BadRequest(std::string_view message) {
  InferenceResponse r;
  r.status = 400;
  r.content_type = "application/json";
  r.body = GsonError(400, "BadRequestException", message);
  return r;
}

// Errors this file raises itself, with their message complete: not rewrapped.
class HandlerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// LibTorch's message without its noise: errors raised inside a TorchScript model come with
// the model's TorchScript tracebacks, and end with the exception itself
// ("RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x3 and 4x2)"), kept alone.
std::string ConciseTorchMessage(std::string_view message) {
  if (message.find("Traceback of TorchScript") == std::string_view::npos) {
    return std::string(message);
  }
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) {
    message.remove_suffix(1);
  }
  const size_t newline = message.rfind('\n');
  return std::string(newline == std::string_view::npos ? message : message.substr(newline + 1));
}

// Runs `f`, turning LibTorch's exceptions (and any other) into std::runtime_error naming the
// handler and phase, without LibTorch's C++ backtrace.
template <typename F>
void AtBorder(const char* handler, const char* phase, F&& f) {
  try {
    f();
  } catch (const HandlerError&) {
    throw;
  } catch (const c10::Error& e) {
    throw std::runtime_error(std::string(handler) + " " + phase + ": " +
                             ConciseTorchMessage(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string(handler) + " " + phase + ": " +
                             ConciseTorchMessage(e.what()));
  }
}

// See the header: re-applied per call because OpenMP keeps the team size per thread.
void ApplyIntraOpThreads(int threads) {
  if (at::get_num_threads() != threads) at::set_num_threads(threads);
}

torch::jit::Module LoadModule(const char* handler, const ModelContext& context) {
  if (context.serialized_file.empty()) {
    throw HandlerError(std::string(handler) + ": model \"" + context.model_name +
                       "\" has no serialized file (a TorchScript .pt) in its manifest");
  }
  torch::jit::Module module;
  try {
    // One load at a time, process-wide: torch::jit::load initialises LibTorch's shared
    // registries on first use and ThreadSanitizer saw two workers' loads race inside it.
    // Loading is rare (worker start) and bound by the CPU anyway.
    std::lock_guard<std::mutex> lock(TorchScriptLoadMutex());
    module = torch::jit::load(context.serialized_file);
  } catch (const c10::Error& e) {
    throw HandlerError(std::string(handler) + ": cannot load TorchScript model " +
                       context.serialized_file + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw HandlerError(std::string(handler) + ": cannot load TorchScript model " +
                       context.serialized_file + ": " + e.what());
  }
  module.eval();
  return module;
}

// The tensor a model returned, or (for a tuple or list) its first element, as TorchServe's
// handlers would index it.
at::Tensor FirstTensor(const char* handler, const c10::IValue& output) {
  if (output.isTensor()) return output.toTensor();
  if (output.isTuple() && !output.toTupleRef().elements().empty() &&
      output.toTupleRef().elements()[0].isTensor()) {
    return output.toTupleRef().elements()[0].toTensor();
  }
  if (output.isTensorList() && output.toTensorList().size() > 0) {
    return output.toTensorList().get(0);
  }
  throw HandlerError(std::string(handler) + ": the model returned " + output.tagKind() +
                     ", expected a tensor");
}

// ---- image_classifier -------------------------------------------------------------------

// What image_classifier's Preprocess hands on in Batch::data.
struct ImageBatch {
  at::Tensor input;          // [rows.size(), 3, 224, 224]; undefined when rows is empty
  std::vector<size_t> rows;  // rows[r]: the index in batch.requests of tensor row r
  at::Tensor output;         // the model's output for the rows, set by Inference
};

// index_to_name.json as TorchServe's load_label_mapping reads it.
std::map<std::string, std::string> LoadLabels(const char* handler,
                                              const std::filesystem::path& path) {
  std::map<std::string, std::string> labels;
  std::ifstream in(path);
  if (!in) throw HandlerError(std::string(handler) + ": cannot read " + path.string());
  json mapping;
  try {
    mapping = json::parse(in);
  } catch (const json::exception& e) {
    throw HandlerError(std::string(handler) + ": " + path.string() +
                       " is not valid JSON: " + e.what());
  }
  if (!mapping.is_object()) {
    throw HandlerError(std::string(handler) + ": " + path.string() +
                       ": index->name mapping should be in \"class\": \"label\" format");
  }
  const auto names = mapping.find("object_type_names");
  if (names != mapping.end() && names->is_array()) {
    for (size_t i = 0; i < names->size(); ++i) {
      if (!(*names)[i].is_string()) {
        throw HandlerError(std::string(handler) + ": " + path.string() +
                           ": object_type_names must hold strings");
      }
      labels[std::to_string(i)] = (*names)[i].get<std::string>();
    }
    return labels;
  }
  for (const auto& [key, value] : mapping.items()) {
    const json* label = &value;
    if (value.is_array() && !value.empty()) label = &value.back();
    if (!label->is_string()) {
      throw HandlerError(std::string(handler) + ": " + path.string() +
                         ": labels in index->name mapping must be either str or "
                         "List[str] (key \"" +
                         key + "\")");
    }
    labels[key] = label->get<std::string>();
  }
  return labels;
}

// The model folder's index_to_name.json if it has one, else no labels.
std::map<std::string, std::string> LoadLabelsIfPresent(const char* handler,
                                                       const ModelContext& context) {
  const std::filesystem::path labels =
      std::filesystem::path(context.model_dir) / "index_to_name.json";
  std::error_code ec;
  if (context.model_dir.empty() || !std::filesystem::exists(labels, ec)) return {};
  return LoadLabels(handler, labels);
}

// The label TorchServe's handlers answer for a class index: its name in index_to_name.json,
// else the index as a string.
std::string LabelOf(const std::map<std::string, std::string>& labels, int64_t index) {
  std::string key = std::to_string(index);
  const auto label = labels.find(key);
  return label != labels.end() ? label->second : key;
}

// TorchScript's profiling executor makes a module's first two calls slow (resnet18 on
// this machine: ~420 ms and ~100 ms, then ~40 ms): pay that at load time rather than in
// the first requests' latency. model-config.yaml's warmupIterations sets the count
// (default 2, 0 disables). A model that cannot take `inputs` fails to load here.
void Warmup(const char* handler, torch::jit::Module& module, const ModelContext& context,
            const std::vector<c10::IValue>& inputs) {
  int64_t iterations = 2;
  if (const auto it = context.config.find("warmupIterations"); it != context.config.end()) {
    const std::optional<int64_t> parsed = ParseInt64(it->second);
    if (!parsed || *parsed < 0 || *parsed > 100) {
      throw HandlerError(std::string(handler) + ": warmupIterations must be 0..100, got \"" +
                         it->second + "\"");
    }
    iterations = *parsed;
  }
  if (iterations == 0) return;
  c10::InferenceMode guard;
  for (int64_t i = 0; i < iterations; ++i) module.forward(inputs);
}

// TorchServe's image_classifier and image_segmenter preprocessing for each request of the
// batch: Resize(256), CenterCrop(224), ToTensor, ImageNet Normalize, stacked. Sizes
// batch.responses to one per request; a request whose body is not an image answers 400
// there and is left out of the tensor.
ImageBatch PreprocessImageNetCrops(Batch& batch) {
  const size_t n = batch.requests.size();
  batch.responses.assign(n, InferenceResponse{});
  ImageBatch state;
  constexpr int64_t kSample = int64_t{3} * kCropSize * kCropSize;
  at::Tensor input = at::empty({static_cast<int64_t>(n), 3, kCropSize, kCropSize},
                               at::TensorOptions().dtype(at::kFloat));
  float* data = input.data_ptr<float>();
  for (size_t i = 0; i < n; ++i) {
    // Decoded row by row into the resize: memory bounded by the crop, not the image.
    StatusOr<RgbImage> crop =
        DecodeResizeAndCenterCrop(batch.requests[i].body, kResizeSize, kCropSize, kCropSize);
    if (!crop.ok()) {
      batch.responses[i] = BadRequest(crop.status().message());
      continue;
    }
    ToNormalizedChw(*crop, kImageNetMean, kImageNetStd,
                    data + static_cast<int64_t>(state.rows.size()) * kSample);
    state.rows.push_back(i);
  }
  if (!state.rows.empty()) {
    state.input = input.narrow(0, 0, static_cast<int64_t>(state.rows.size()));
  }
  return state;
}

// The skeleton image_classifier and image_segmenter share: one module loaded and warmed
// up on a zero [1, 3, 224, 224], ImageNet crops in (PreprocessImageNetCrops), one forward
// for the batch's images, one JSON answer per image (json.dumps(indent=2)). A subclass says
// what else it loads, how the model's output is checked, and what each image answers.
class ImageNetCropHandler : public Handler {
 public:
  void Initialize(const ModelContext& context) final {
    threads_ = std::max(1, context.intra_op_threads);
    AtBorder(name_, "initialize", [&] {
      ApplyIntraOpThreads(threads_);
      module_ = LoadModule(name_, context);
      LoadExtras(context);
      Warmup(name_, module_, context, {at::zeros({1, 3, kCropSize, kCropSize})});
    });
  }

  void Preprocess(Batch& batch) final {
    AtBorder(name_, "preprocess", [&] { batch.data = PreprocessImageNetCrops(batch); });
  }

  void Inference(Batch& batch) final {
    AtBorder(name_, "inference", [&] {
      auto& state = std::any_cast<ImageBatch&>(batch.data);
      if (state.rows.empty()) return;
      ApplyIntraOpThreads(threads_);
      c10::InferenceMode guard;
      std::vector<c10::IValue> inputs{state.input};
      state.output =
          CheckedOutput(module_.forward(inputs), static_cast<int64_t>(state.rows.size()));
    });
  }

  void Postprocess(Batch& batch) final {
    AtBorder(name_, "postprocess", [&] {
      auto& state = std::any_cast<ImageBatch&>(batch.data);
      if (state.rows.empty()) return;
      c10::InferenceMode guard;
      std::vector<ordered_json> answers = Answers(state.output);
      for (size_t r = 0; r < state.rows.size(); ++r) {
        InferenceResponse& response = batch.responses[state.rows[r]];
        response.status = 200;
        response.content_type = "application/json";
        // json.dumps(indent=2): ASCII only, ", " -> ",\n", ": " between key and value.
        response.body = answers[r].dump(2, ' ', true, ordered_json::error_handler_t::replace);
      }
    });
  }

 protected:
  explicit ImageNetCropHandler(const char* name) : name_(name) {}

  // Reads what the handler needs from the model folder besides the module (after it loads).
  virtual void LoadExtras(const ModelContext&) {}
  // The model's output for a batch of `rows` images, checked (HandlerError if unexpected).
  virtual at::Tensor CheckedOutput(const c10::IValue& output, int64_t rows) const = 0;
  // Each image's answer, from the checked output (one per row, in order).
  virtual std::vector<ordered_json> Answers(const at::Tensor& output) const = 0;

  // The error for a model output of the wrong shape; `expected` as "[N, classes]".
  HandlerError ShapeError(const at::Tensor& output, const std::string& expected) const {
    return HandlerError(std::string(name_) + ": the model returned a tensor of shape " +
                        c10::str(output.sizes()) + ", expected " + expected);
  }

  const char* const name_;

 private:
  int threads_ = 1;
  torch::jit::Module module_;
};

class ImageClassifierHandler final : public ImageNetCropHandler {
 public:
  ImageClassifierHandler() : ImageNetCropHandler("image_classifier") {}

 private:
  void LoadExtras(const ModelContext& context) override {
    labels_ = LoadLabelsIfPresent(name_, context);
  }

  at::Tensor CheckedOutput(const c10::IValue& model_output, int64_t rows) const override {
    at::Tensor output = FirstTensor(name_, model_output);
    if (output.dim() != 2 || output.size(0) != rows) {
      throw ShapeError(output, "[" + std::to_string(rows) + ", classes]");
    }
    return output;
  }

  // Softmax, top 5: {"label": probability, ...} highest first.
  std::vector<ordered_json> Answers(const at::Tensor& output) const override {
    const at::Tensor probabilities = at::softmax(output, 1);
    const int64_t k = std::min<int64_t>(kTopK, probabilities.size(1));
    auto [values, indices] = at::topk(probabilities, k, 1);
    values = values.to(at::kDouble).contiguous();
    indices = indices.to(at::kLong).contiguous();
    const double* v = values.data_ptr<double>();
    const int64_t* c = indices.data_ptr<int64_t>();
    std::vector<ordered_json> answers;
    for (int64_t r = 0; r < output.size(0); ++r) {
      // An ordered object: highest first; a label seen twice keeps its first place and
      // takes the later value, as a Python dict comprehension does.
      ordered_json body = ordered_json::object();
      for (int64_t j = 0; j < k; ++j) body[LabelOf(labels_, c[r * k + j])] = v[r * k + j];
      answers.push_back(std::move(body));
    }
    return answers;
  }

  std::map<std::string, std::string> labels_;  // class index (as a string) -> label
};

// ---- image_segmenter --------------------------------------------------------------------

class ImageSegmenterHandler final : public ImageNetCropHandler {
 public:
  ImageSegmenterHandler() : ImageNetCropHandler("image_segmenter") {}

 private:
  // TorchServe's segmenter reads the model's output["out"] (torchvision's segmentation
  // models return {"out": ..., "aux": ...}); a model returning the tensor itself is taken
  // as is.
  at::Tensor CheckedOutput(const c10::IValue& model_output, int64_t rows) const override {
    at::Tensor output;
    if (model_output.isGenericDict()) {
      const c10::Dict<c10::IValue, c10::IValue> dict = model_output.toGenericDict();
      const auto out = dict.find(c10::IValue(std::string("out")));
      if (out == dict.end() || !out->value().isTensor()) {
        throw HandlerError(std::string(name_) +
                           ": the model returned a dict without a tensor \"out\"");
      }
      output = out->value().toTensor();
    } else {
      output = FirstTensor(name_, model_output);
    }
    if (output.dim() != 4 || output.size(0) != rows || output.size(1) == 0) {
      throw ShapeError(output, "[" + std::to_string(rows) + ", classes, height, width]");
    }
    return output;
  }

  // TorchServe's postprocess: softmax over the classes, then per pixel the top class (as a
  // float) and its probability: [H][W][2] per image.
  std::vector<ordered_json> Answers(const at::Tensor& output) const override {
    const at::Tensor probabilities = at::softmax(output, 1);
    auto [values, indices] = at::max(probabilities, 1);
    const at::Tensor map =
        at::stack({indices.to(values.scalar_type()), values}, 3).to(at::kDouble).contiguous();
    const int64_t height = map.size(1);
    const int64_t width = map.size(2);
    const double* m = map.data_ptr<double>();
    std::vector<ordered_json> answers;
    for (int64_t r = 0; r < output.size(0); ++r) {
      ordered_json body = ordered_json::array();
      for (int64_t y = 0; y < height; ++y) {
        ordered_json row = ordered_json::array();
        for (int64_t x = 0; x < width; ++x, m += 2) row.push_back({m[0], m[1]});
        body.push_back(std::move(row));
      }
      answers.push_back(std::move(body));
    }
    return answers;
  }
};

// ---- object_detector --------------------------------------------------------------------

// What object_detector's Preprocess hands on in Batch::data.
struct DetectionBatch {
  std::vector<at::Tensor> images;       // [3, H, W] each, in [0, 1]
  std::vector<size_t> rows;             // rows[r]: the index in batch.requests of images[r]
  std::vector<c10::IValue> detections;  // one dict per image, set by Inference
};

// A detection model's answer for one image: torchvision's {"boxes": [K, 4], "labels": [K],
// "scores": [K]}.
struct Detections {
  at::Tensor boxes;
  at::Tensor labels;
  at::Tensor scores;
};

class ObjectDetectorHandler final : public Handler {
 public:
  void Initialize(const ModelContext& context) override {
    threads_ = std::max(1, context.intra_op_threads);
    AtBorder(kName, "initialize", [&] {
      if (const auto it = context.config.find("detectionThreshold"); it != context.config.end()) {
        const std::optional<double> parsed = ParseDouble(it->second);
        if (!parsed || !(*parsed >= 0.0 && *parsed <= 1.0)) {
          throw HandlerError(std::string(kName) + ": detectionThreshold must be 0..1, got \"" +
                             it->second + "\"");
        }
        threshold_ = static_cast<float>(*parsed);
      }
      ApplyIntraOpThreads(threads_);
      module_ = LoadModule(kName, context);
      labels_ = LoadLabelsIfPresent(kName, context);
      c10::List<at::Tensor> images;
      images.push_back(at::zeros({3, kCropSize, kCropSize}));
      Warmup(kName, module_, context, {images});
    });
  }

  // TorchServe's object_detector: ToTensor only (the model resizes and normalises itself),
  // each image at its own size.
  void Preprocess(Batch& batch) override {
    AtBorder(kName, "preprocess", [&] {
      const size_t n = batch.requests.size();
      batch.responses.assign(n, InferenceResponse{});
      DetectionBatch state;
      static constexpr std::array<float, 3> kZero = {0.0f, 0.0f, 0.0f};
      static constexpr std::array<float, 3> kOne = {1.0f, 1.0f, 1.0f};
      for (size_t i = 0; i < n; ++i) {
        StatusOr<RgbImage> image =
            DecodeImage(batch.requests[i].body, kMaxObjectDetectorImagePixels);
        if (!image.ok()) {
          batch.responses[i] = BadRequest(image.status().message());
          continue;
        }
        at::Tensor tensor = at::empty({3, image->height, image->width}, at::kFloat);
        // (p / 255 - 0) / 1: exactly ToTensor's p / 255 in float.
        ToNormalizedChw(*image, kZero, kOne, tensor.data_ptr<float>());
        state.images.push_back(std::move(tensor));
        state.rows.push_back(i);
      }
      batch.data = std::move(state);
    });
  }

  void Inference(Batch& batch) override {
    AtBorder(kName, "inference", [&] {
      auto& state = std::any_cast<DetectionBatch&>(batch.data);
      if (state.rows.empty()) return;
      ApplyIntraOpThreads(threads_);
      c10::InferenceMode guard;
      c10::List<at::Tensor> images;
      for (const at::Tensor& image : state.images) images.push_back(image);
      std::vector<c10::IValue> inputs{images};
      state.detections = DetectionList(module_.forward(inputs), state.rows.size());
      state.images.clear();
    });
  }

  // TorchServe's postprocess: per image, the detections scoring at least the threshold, in
  // the model's order, each {"<label>": [x1, y1, x2, y2], "score": s}; json.dumps(indent=2).
  void Postprocess(Batch& batch) override {
    AtBorder(kName, "postprocess", [&] {
      auto& state = std::any_cast<DetectionBatch&>(batch.data);
      c10::InferenceMode guard;
      for (size_t r = 0; r < state.rows.size(); ++r) {
        const Detections d = ReadDetections(state.detections[r]);
        const at::Tensor keep = d.scores.ge(threshold_);
        const at::Tensor boxes = d.boxes.index({keep}).to(at::kDouble).contiguous();
        const at::Tensor labels = d.labels.index({keep}).to(at::kLong).contiguous();
        const at::Tensor scores = d.scores.index({keep}).to(at::kDouble).contiguous();
        const double* b = boxes.data_ptr<double>();
        const int64_t* l = labels.data_ptr<int64_t>();
        const double* s = scores.data_ptr<double>();
        ordered_json body = ordered_json::array();
        for (int64_t k = 0; k < scores.size(0); ++k) {
          ordered_json detection = ordered_json::object();
          detection[LabelOf(labels_, l[k])] = {b[4 * k], b[4 * k + 1], b[4 * k + 2], b[4 * k + 3]};
          detection["score"] = s[k];
          body.push_back(std::move(detection));
        }
        InferenceResponse& response = batch.responses[state.rows[r]];
        response.status = 200;
        response.content_type = "application/json";
        response.body = body.dump(2, ' ', true, ordered_json::error_handler_t::replace);
      }
    });
  }

 private:
  static constexpr const char* kName = "object_detector";

  // The per-image list of a detection model's output: torchvision's scripted detection
  // models return (losses, detections), eager ones the detections alone.
  static std::vector<c10::IValue> DetectionList(const c10::IValue& output, size_t images) {
    c10::IValue list = output;
    if (output.isTuple() && output.toTupleRef().elements().size() == 2) {
      list = output.toTupleRef().elements()[1];
    }
    if (!list.isList()) {
      throw HandlerError(std::string(kName) + ": the model returned " + output.tagKind() +
                         ", expected a list of detections (one dict per image) or "
                         "(losses, detections)");
    }
    std::vector<c10::IValue> detections = list.toList().vec();
    if (detections.size() != images) {
      throw HandlerError(std::string(kName) + ": the model returned " +
                         std::to_string(detections.size()) + " detections for " +
                         std::to_string(images) + " images");
    }
    return detections;
  }

  static Detections ReadDetections(const c10::IValue& value) {
    if (!value.isGenericDict()) {
      throw HandlerError(std::string(kName) + ": a detection is " + value.tagKind() +
                         ", expected a dict with \"boxes\", \"labels\" and \"scores\"");
    }
    const c10::Dict<c10::IValue, c10::IValue> dict = value.toGenericDict();
    auto get = [&](const char* key) {
      const auto it = dict.find(c10::IValue(std::string(key)));
      if (it == dict.end() || !it->value().isTensor()) {
        throw HandlerError(std::string(kName) + ": a detection has no tensor \"" + key + "\"");
      }
      return it->value().toTensor();
    };
    Detections d{get("boxes"), get("labels"), get("scores")};
    const int64_t k = d.scores.dim() == 1 ? d.scores.size(0) : -1;
    if (k < 0 || d.labels.dim() != 1 || d.labels.size(0) != k || d.boxes.dim() != 2 ||
        d.boxes.size(0) != k || d.boxes.size(1) != 4 || !d.scores.is_floating_point()) {
      throw HandlerError(std::string(kName) + ": detections of shapes boxes " +
                         c10::str(d.boxes.sizes()) + ", labels " + c10::str(d.labels.sizes()) +
                         ", scores " + c10::str(d.scores.sizes()) +
                         ", expected [K, 4], [K] and [K] (floating scores)");
    }
    d.scores = d.scores.to(at::kFloat);
    return d;
  }

  int threads_ = 1;
  float threshold_ = kDefaultDetectionThreshold;
  torch::jit::Module module_;
  std::map<std::string, std::string> labels_;  // class index (as a string) -> label
};

// ---- tensor -----------------------------------------------------------------------------

// One request's sample: its shape and values (row major).
struct Sample {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// The most numbers one request's tensor may hold (16 MiB of floats): checked while parsing,
// before anything of that size is allocated. (The default max_request_size, 6553500 bytes,
// admits at most ~3.3 million.)
constexpr size_t kMaxTensorElements = size_t{1} << 22;

// Reads one request's tensor straight from its JSON text with nlohmann's SAX parser (which
// is iterative: no recursion, whatever the nesting): nested lists of numbers, or an object
// whose "data" member holds them (its other members are skipped). The shape follows the
// first elements down and every list must then match it. Memory is bounded by the values
// themselves (4 bytes each, at most kMaxTensorElements); nesting is limited to
// kMaxJsonDepth; nothing is allocated from a size the body merely claims.
class SampleReader {
 public:
  using binary_t = json::binary_t;

  explicit SampleReader(Sample* sample) : sample_(sample) {}

  // "" or what is wrong (the request's 400 message).
  std::string Read(std::string_view text) {
    const bool parsed = json::sax_parse(text, this);
    if (!error_.empty()) return error_;
    if (!parsed) return "invalid JSON";
    if (!have_tensor_) return kExpected;
    sample_->shape.assign(shape_.begin(), shape_.begin() + leaf_);
    return "";
  }

  bool null() { return Scalar("null"); }
  bool boolean(bool) { return Scalar("boolean"); }
  bool string(std::string&) { return Scalar("string"); }
  bool binary(binary_t&) { return Scalar("binary"); }
  bool number_integer(int64_t v) { return Number(static_cast<float>(v)); }
  bool number_unsigned(uint64_t v) { return Number(static_cast<float>(v)); }
  bool number_float(double v, const std::string&) { return Number(static_cast<float>(v)); }

  bool start_object(size_t) {
    if (skipping_ > 0 || InSkippedValue()) return Skip(+1);
    if (at_top_) {
      at_top_ = false;
      in_wrapper_ = true;
      return true;
    }
    if (!EnterValue()) return false;
    return NotANumber("object");
  }
  bool key(std::string& k) {
    if (skipping_ > 0) return true;
    if (k != "data") {
      next_ = Next::kSkip;
      return true;
    }
    if (have_tensor_ || in_tensor_) return Fail("\"data\" given twice");
    next_ = Next::kTensor;
    return true;
  }
  bool end_object() {
    if (skipping_ > 0) return Skip(-1);
    in_wrapper_ = false;  // the top-level object: done
    return true;
  }
  bool start_array(size_t) {
    if (skipping_ > 0 || InSkippedValue()) return Skip(+1);
    if (!EnterValue()) return false;
    const size_t d = counts_.size();  // the new list's depth in the tensor
    if (leaf_ >= 0 && static_cast<int>(d) >= leaf_) return NotANumber("array");
    if (d >= static_cast<size_t>(kMaxJsonDepth)) {
      return Fail("lists nested deeper than " + std::to_string(kMaxJsonDepth));
    }
    if (d > 0) ++counts_.back();
    counts_.push_back(0);
    if (shape_.size() <= d) shape_.push_back(-1);  // only along the first elements
    return true;
  }
  bool end_array() {
    if (skipping_ > 0) return Skip(-1);
    const size_t d = counts_.size() - 1;
    const int64_t count = counts_.back();
    counts_.pop_back();
    if (shape_[d] < 0) {
      // The first list of this depth to close is the one along the first elements.
      shape_[d] = count;
      if (count == 0 && leaf_ < 0) leaf_ = static_cast<int>(d) + 1;
    } else if (count != shape_[d]) {
      return Fail("ragged lists: expected a list of " + std::to_string(shape_[d]) + " at depth " +
                  std::to_string(d) + ", got a list of " + std::to_string(count));
    }
    if (counts_.empty()) Finish();
    return true;
  }
  bool parse_error(size_t, const std::string&, const nlohmann::detail::exception& e) {
    return Fail(std::string("invalid JSON: ") + e.what());
  }

 private:
  enum class Next { kNone, kTensor, kSkip };
  static constexpr const char* kExpected =
      "expected nested lists of numbers or {\"data\": <nested lists>}";

  bool Fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }
  // Inside the wrapper object, the value of a member other than "data" starts here.
  bool InSkippedValue() const { return in_wrapper_ && !in_tensor_ && next_ == Next::kSkip; }
  // Counts the containers of a skipped member's value, nesting limited as the tensor's.
  bool Skip(int delta) {
    skipping_ += delta;
    if (skipping_ > kMaxJsonDepth) {
      return Fail("JSON nested deeper than " + std::to_string(kMaxJsonDepth));
    }
    if (skipping_ == 0) next_ = Next::kNone;
    return true;
  }
  // A value of the tensor starts (a list or a scalar): the tensor's root if none is open.
  // False (with the error set) when the value cannot be part of a tensor here.
  bool EnterValue() {
    if (in_tensor_) return true;
    if (at_top_ || (in_wrapper_ && next_ == Next::kTensor)) {
      at_top_ = false;
      next_ = Next::kNone;
      in_tensor_ = true;
      return true;
    }
    return Fail(kExpected);
  }
  void Finish() {
    in_tensor_ = false;
    have_tensor_ = true;
    if (leaf_ < 0) leaf_ = static_cast<int>(shape_.size());
  }
  // A scalar that is not a number: skipped in a skipped member, else an error.
  bool Scalar(const char* type) {
    if (skipping_ > 0) return true;
    if (InSkippedValue()) {
      next_ = Next::kNone;
      return true;
    }
    if (!EnterValue()) return false;
    return NotANumber(type);
  }
  // A value of type `type` at the current depth of the tensor, where a number or a list is
  // expected.
  bool NotANumber(const char* type) {
    const size_t d = counts_.size();
    if (leaf_ >= 0 && static_cast<int>(d) < leaf_ && shape_[d] >= 0) {
      return Fail("ragged lists: expected a list of " + std::to_string(shape_[d]) + " at depth " +
                  std::to_string(d) + ", got " + type);
    }
    return Fail(std::string("expected a number, got ") + type + " at depth " + std::to_string(d));
  }
  bool Number(float v) {
    if (skipping_ > 0) return true;
    if (InSkippedValue()) {
      next_ = Next::kNone;
      return true;
    }
    if (!EnterValue()) return false;
    const size_t d = counts_.size();
    if (leaf_ < 0) leaf_ = static_cast<int>(d);  // the first number fixes the depth
    if (static_cast<int>(d) < leaf_) return NotANumber("number");
    if (sample_->values.size() == kMaxTensorElements) {
      return Fail("more than " + std::to_string(kMaxTensorElements) + " numbers");
    }
    sample_->values.push_back(v);
    if (d > 0) {
      ++counts_.back();
    } else {
      Finish();  // a scalar tensor
    }
    return true;
  }

  Sample* sample_;
  std::string error_;
  bool at_top_ = true;       // nothing read yet
  bool in_wrapper_ = false;  // inside the top-level {"data": ...} object
  Next next_ = Next::kNone;  // what the wrapper's next value is
  int skipping_ = 0;         // open containers of a skipped member's value
  bool in_tensor_ = false;
  bool have_tensor_ = false;
  std::vector<int64_t> shape_;   // -1 until the first list of that depth closes
  std::vector<int64_t> counts_;  // elements so far of each open list
  int leaf_ = -1;                // the depth of the numbers, once known
};

// Reads a request body into `sample`. Returns "" or what is wrong (the 400's message).
std::string ParseSample(std::string_view body, Sample* sample) {
  SampleReader reader(sample);
  std::string error = reader.Read(body);
  if (error.empty() || error.rfind("invalid JSON", 0) == 0 ||
      error.rfind("expected nested", 0) == 0) {
    return error;
  }
  return "invalid tensor: " + error;
}

// Requests of one batch whose tensors have the same shape: stacked along a new first
// dimension and run as one forward.
struct TensorGroup {
  std::vector<int64_t> shape;  // of one sample
  std::vector<size_t> rows;    // rows[r]: the request index of row r of `input`
  at::Tensor input;            // [rows.size(), shape...]
  c10::IValue output;          // set by Inference; none if the group failed
};

// What the tensor handler's Preprocess hands on in Batch::data.
struct TensorBatch {
  std::vector<TensorGroup> groups;
};

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

// Writes `t` (contiguous, of dtype double, long or bool) as nested JSON lists.
template <typename T>
json NestedList(const T* data, const std::vector<int64_t>& shape, size_t d, int64_t* offset) {
  if (d == shape.size()) return json(data[(*offset)++]);
  json list = json::array();
  for (int64_t i = 0; i < shape[d]; ++i) list.push_back(NestedList(data, shape, d + 1, offset));
  return list;
}

json TensorToJson(const at::Tensor& tensor) {
  at::Tensor t = tensor.detach().to(at::kCPU);
  const std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
  int64_t offset = 0;
  if (t.is_floating_point()) {
    t = t.to(at::kDouble).contiguous();
    return NestedList(t.data_ptr<double>(), shape, 0, &offset);
  }
  if (t.scalar_type() == at::kBool) {
    t = t.contiguous();
    return NestedList(t.data_ptr<bool>(), shape, 0, &offset);
  }
  if (t.is_complex()) throw HandlerError("tensor: complex outputs are not supported");
  t = t.to(at::kLong).contiguous();
  return NestedList(t.data_ptr<int64_t>(), shape, 0, &offset);
}

// The tensors of a model's output: a tensor, or a tuple or list of tensors.
std::vector<at::Tensor> OutputTensors(const c10::IValue& output) {
  if (output.isTensor()) return {output.toTensor()};
  std::vector<at::Tensor> tensors;
  if (output.isTuple()) {
    for (const c10::IValue& e : output.toTupleRef().elements()) {
      if (!e.isTensor()) {
        throw HandlerError(std::string("tensor: the model returned a tuple holding ") +
                           e.tagKind() + ", expected tensors");
      }
      tensors.push_back(e.toTensor());
    }
    return tensors;
  }
  if (output.isTensorList()) return output.toTensorVector();
  throw HandlerError(std::string("tensor: the model returned ") + output.tagKind() +
                     ", expected a tensor or a tuple of tensors");
}

class TensorHandler final : public Handler {
 public:
  void Initialize(const ModelContext& context) override {
    threads_ = std::max(1, context.intra_op_threads);
    AtBorder(kName, "initialize", [&] {
      ApplyIntraOpThreads(threads_);
      module_ = LoadModule(kName, context);
    });
  }

  void Preprocess(Batch& batch) override {
    AtBorder(kName, "preprocess", [&] {
      const size_t n = batch.requests.size();
      batch.responses.assign(n, InferenceResponse{});
      TensorBatch state;
      // Each request is read and checked alone; one that fails answers 400 and the others
      // go on. Requests of equal shape share a group (one forward).
      std::vector<std::vector<Sample>> samples;  // per group
      for (size_t i = 0; i < n; ++i) {
        Sample sample;
        if (std::string error = ParseSample(batch.requests[i].body, &sample); !error.empty()) {
          batch.responses[i] = BadRequest(error);
          continue;
        }
        size_t g = 0;
        while (g < state.groups.size() && state.groups[g].shape != sample.shape) ++g;
        if (g == state.groups.size()) {
          state.groups.push_back(TensorGroup{sample.shape, {}, {}, {}});
          samples.emplace_back();
        }
        state.groups[g].rows.push_back(i);
        samples[g].push_back(std::move(sample));
      }
      const auto options = at::TensorOptions().dtype(at::kFloat);
      for (size_t g = 0; g < state.groups.size(); ++g) {
        TensorGroup& group = state.groups[g];
        std::vector<int64_t> shape{static_cast<int64_t>(group.rows.size())};
        shape.insert(shape.end(), group.shape.begin(), group.shape.end());
        group.input = at::empty(shape, options);
        float* out = group.input.data_ptr<float>();
        for (const Sample& s : samples[g]) {
          std::copy(s.values.begin(), s.values.end(), out);
          out += s.values.size();
        }
      }
      batch.data = std::move(state);
    });
  }

  // One forward per group. The tensor is a request's only input, so a model that raises on
  // it refused that request's data (a wrong shape, a value out of range): the request
  // answers 400 with the model's message, and the other groups go on. A failing group of
  // several requests is retried one request at a time so that only the requests the model
  // refuses alone fail. Running out of memory is the batch's failure (rethrown: 500).
  void Inference(Batch& batch) override {
    AtBorder(kName, "inference", [&] {
      auto& state = std::any_cast<TensorBatch&>(batch.data);
      if (state.groups.empty()) return;
      ApplyIntraOpThreads(threads_);
      c10::InferenceMode guard;
      for (size_t g = 0; g < state.groups.size(); ++g) {
        std::string error;
        try {
          std::vector<c10::IValue> inputs{state.groups[g].input};
          state.groups[g].output = module_.forward(inputs);
          continue;
        } catch (const c10::OutOfMemoryError&) {
          throw;
        } catch (const std::bad_alloc&) {
          throw;
        } catch (const c10::Error& e) {
          error = ConciseTorchMessage(e.what_without_backtrace());
        } catch (const std::exception& e) {
          error = ConciseTorchMessage(e.what());
        }
        TensorGroup failed = std::move(state.groups[g]);
        state.groups[g].rows.clear();
        if (failed.rows.size() > 1) {
          for (size_t r = 0; r < failed.rows.size(); ++r) {
            state.groups.push_back(TensorGroup{failed.shape,
                                               {failed.rows[r]},
                                               failed.input.narrow(0, static_cast<int64_t>(r), 1),
                                               {}});
          }
          continue;
        }
        batch.responses[failed.rows[0]] = BadRequest("the model cannot take this tensor (shape " +
                                                     ShapeString(failed.shape) + "): " + error);
      }
    });
  }

  void Postprocess(Batch& batch) override {
    AtBorder(kName, "postprocess", [&] {
      auto& state = std::any_cast<TensorBatch&>(batch.data);
      c10::InferenceMode guard;
      for (const TensorGroup& group : state.groups) {
        if (group.rows.empty()) continue;  // failed, or split into groups of one
        const std::vector<at::Tensor> tensors = OutputTensors(group.output);
        const auto expected = static_cast<int64_t>(group.rows.size());
        for (const at::Tensor& t : tensors) {
          if (t.dim() == 0 || t.size(0) != expected) {
            throw HandlerError(std::string(kName) + ": the model returned a tensor of shape " +
                               c10::str(t.sizes()) + ", expected a first dimension of " +
                               std::to_string(expected) + " (the batch)");
          }
        }
        for (size_t r = 0; r < group.rows.size(); ++r) {
          const auto index = static_cast<int64_t>(r);
          json body;
          if (group.output.isTensor()) {
            body = TensorToJson(tensors[0][index]);
          } else {
            body = json::array();
            for (const at::Tensor& t : tensors) body.push_back(TensorToJson(t[index]));
          }
          InferenceResponse& response = batch.responses[group.rows[r]];
          response.status = 200;
          response.content_type = "application/json";
          response.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
        }
      }
    });
  }

 private:
  static constexpr const char* kName = "tensor";
  int threads_ = 1;
  torch::jit::Module module_;
};

}  // namespace

std::mutex& TorchScriptLoadMutex() {
  static std::mutex mu;
  return mu;
}

std::unique_ptr<Handler> MakeImageClassifierHandler() {
  return std::make_unique<ImageClassifierHandler>();
}

std::unique_ptr<Handler> MakeImageSegmenterHandler() {
  return std::make_unique<ImageSegmenterHandler>();
}

std::unique_ptr<Handler> MakeObjectDetectorHandler() {
  return std::make_unique<ObjectDetectorHandler>();
}

std::unique_ptr<Handler> MakeTensorHandler() { return std::make_unique<TensorHandler>(); }

std::unique_ptr<Handler> MakeTorchHandler(std::string_view name) {
  if (name == "image_classifier") return MakeImageClassifierHandler();
  if (name == "image_segmenter") return MakeImageSegmenterHandler();
  if (name == "object_detector") return MakeObjectDetectorHandler();
  if (name == "tensor") return MakeTensorHandler();
  if (name == "llm") return MakeLlmHandler();
  return nullptr;
}

}  // namespace tserve::backend
