#include "backend/torchscript_handlers.h"

#include <ATen/Parallel.h>
#include <torch/script.h>

#include <algorithm>
#include <any>
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
#include "common/strings.h"

namespace tserve::backend {

namespace {

using nlohmann::json;
using nlohmann::ordered_json;

constexpr int kResizeSize = 256;
constexpr int kCropSize = 224;
constexpr int kTopK = 5;
constexpr int kMaxJsonDepth = 32;

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
    static std::mutex load_mu;
    std::lock_guard<std::mutex> lock(load_mu);
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
  at::Tensor output;         // [rows.size(), classes], set by Inference
};

// index_to_name.json as TorchServe's load_label_mapping reads it.
std::map<std::string, std::string> LoadLabels(const std::filesystem::path& path) {
  std::map<std::string, std::string> labels;
  std::ifstream in(path);
  if (!in) throw HandlerError("image_classifier: cannot read " + path.string());
  json mapping;
  try {
    mapping = json::parse(in);
  } catch (const json::exception& e) {
    throw HandlerError("image_classifier: " + path.string() + " is not valid JSON: " + e.what());
  }
  if (!mapping.is_object()) {
    throw HandlerError("image_classifier: " + path.string() +
                       ": index->name mapping should be in \"class\": \"label\" format");
  }
  const auto names = mapping.find("object_type_names");
  if (names != mapping.end() && names->is_array()) {
    for (size_t i = 0; i < names->size(); ++i) {
      if (!(*names)[i].is_string()) {
        throw HandlerError("image_classifier: " + path.string() +
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
      throw HandlerError("image_classifier: " + path.string() +
                         ": labels in index->name mapping must be either str or "
                         "List[str] (key \"" +
                         key + "\")");
    }
    labels[key] = label->get<std::string>();
  }
  return labels;
}

class ImageClassifierHandler final : public Handler {
 public:
  void Initialize(const ModelContext& context) override {
    threads_ = std::max(1, context.intra_op_threads);
    AtBorder(kName, "initialize", [&] {
      ApplyIntraOpThreads(threads_);
      module_ = LoadModule(kName, context);
      const std::filesystem::path labels =
          std::filesystem::path(context.model_dir) / "index_to_name.json";
      std::error_code ec;
      if (!context.model_dir.empty() && std::filesystem::exists(labels, ec)) {
        labels_ = LoadLabels(labels);
      }
      Warmup(context);
    });
  }

  void Preprocess(Batch& batch) override {
    AtBorder(kName, "preprocess", [&] {
      const size_t n = batch.requests.size();
      batch.responses.assign(n, InferenceResponse{});
      ImageBatch state;
      constexpr int64_t kSample = int64_t{3} * kCropSize * kCropSize;
      at::Tensor input = at::empty({static_cast<int64_t>(n), 3, kCropSize, kCropSize},
                                   at::TensorOptions().dtype(at::kFloat));
      float* data = input.data_ptr<float>();
      for (size_t i = 0; i < n; ++i) {
        StatusOr<RgbImage> image = DecodeImage(batch.requests[i].body);
        if (!image.ok()) {
          batch.responses[i] = BadRequest(image.status().message());
          continue;
        }
        const RgbImage crop =
            ResizeShorterSideAndCenterCrop(*image, kResizeSize, kCropSize, kCropSize);
        ToNormalizedChw(crop, kImageNetMean, kImageNetStd,
                        data + static_cast<int64_t>(state.rows.size()) * kSample);
        state.rows.push_back(i);
      }
      if (!state.rows.empty()) {
        state.input = input.narrow(0, 0, static_cast<int64_t>(state.rows.size()));
      }
      batch.data = std::move(state);
    });
  }

  void Inference(Batch& batch) override {
    AtBorder(kName, "inference", [&] {
      auto& state = std::any_cast<ImageBatch&>(batch.data);
      if (state.rows.empty()) return;
      ApplyIntraOpThreads(threads_);
      c10::InferenceMode guard;
      std::vector<c10::IValue> inputs{state.input};
      at::Tensor output = FirstTensor(kName, module_.forward(inputs));
      const auto rows = static_cast<int64_t>(state.rows.size());
      if (output.dim() != 2 || output.size(0) != rows) {
        throw HandlerError(std::string(kName) + ": the model returned a tensor of shape " +
                           c10::str(output.sizes()) + ", expected [" + std::to_string(rows) +
                           ", classes]");
      }
      state.output = std::move(output);
    });
  }

  void Postprocess(Batch& batch) override {
    AtBorder(kName, "postprocess", [&] {
      auto& state = std::any_cast<ImageBatch&>(batch.data);
      if (state.rows.empty()) return;
      c10::InferenceMode guard;
      const at::Tensor probabilities = at::softmax(state.output, 1);
      const int64_t k = std::min<int64_t>(kTopK, probabilities.size(1));
      auto [values, indices] = at::topk(probabilities, k, 1);
      values = values.to(at::kDouble).contiguous();
      indices = indices.to(at::kLong).contiguous();
      const double* v = values.data_ptr<double>();
      const int64_t* c = indices.data_ptr<int64_t>();
      for (size_t r = 0; r < state.rows.size(); ++r) {
        // An ordered object: highest first; a label seen twice keeps its first place and
        // takes the later value, as a Python dict comprehension does.
        ordered_json body = ordered_json::object();
        for (int64_t j = 0; j < k; ++j) {
          const std::string index = std::to_string(c[static_cast<int64_t>(r) * k + j]);
          const auto label = labels_.find(index);
          body[label != labels_.end() ? label->second : index] = v[static_cast<int64_t>(r) * k + j];
        }
        InferenceResponse& response = batch.responses[state.rows[r]];
        response.status = 200;
        response.content_type = "application/json";
        // json.dumps(indent=2): ASCII only, ", " -> ",\n", ": " between key and value.
        response.body = body.dump(2, ' ', true, ordered_json::error_handler_t::replace);
      }
    });
  }

 private:
  static constexpr const char* kName = "image_classifier";

  // TorchScript's profiling executor makes a module's first two calls slow (resnet18 on
  // this machine: ~420 ms and ~100 ms, then ~40 ms): pay that at load time rather than in
  // the first requests' latency. model-config.yaml's warmupIterations sets the count
  // (default 2, 0 disables). A model that cannot take [1, 3, 224, 224] fails to load here.
  void Warmup(const ModelContext& context) {
    int64_t iterations = 2;
    if (const auto it = context.config.find("warmupIterations"); it != context.config.end()) {
      const std::optional<int64_t> parsed = ParseInt64(it->second);
      if (!parsed || *parsed < 0 || *parsed > 100) {
        throw HandlerError(std::string(kName) + ": warmupIterations must be 0..100, got \"" +
                           it->second + "\"");
      }
      iterations = *parsed;
    }
    if (iterations == 0) return;
    c10::InferenceMode guard;
    const std::vector<c10::IValue> inputs{at::zeros({1, 3, kCropSize, kCropSize})};
    for (int64_t i = 0; i < iterations; ++i) module_.forward(inputs);
  }

  int threads_ = 1;
  torch::jit::Module module_;
  std::map<std::string, std::string> labels_;  // class index (as a string) -> label
};

// ---- tensor -----------------------------------------------------------------------------

// One request's sample: its shape and values (row major).
struct Sample {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// Reads nested lists of numbers. Returns "" or what is wrong.
std::string ParseSample(const json& root, Sample* sample) {
  // The shape follows the first elements down; every list must then match it.
  const json* node = &root;
  while (node->is_array()) {
    if (sample->shape.size() >= kMaxJsonDepth) {
      return "lists nested deeper than " + std::to_string(kMaxJsonDepth);
    }
    sample->shape.push_back(static_cast<int64_t>(node->size()));
    if (node->empty()) break;
    node = &node->front();
  }
  int64_t count = 1;
  for (int64_t d : sample->shape) count *= d;
  sample->values.reserve(static_cast<size_t>(count));

  std::string error;
  const size_t depth = sample->shape.size();
  auto walk = [&](auto&& self, const json& v, size_t d) -> bool {
    if (d == depth) {
      if (!v.is_number()) {
        error = "expected a number, got " + std::string(v.type_name()) + " at depth " +
                std::to_string(d);
        return false;
      }
      sample->values.push_back(v.get<float>());
      return true;
    }
    if (!v.is_array() || static_cast<int64_t>(v.size()) != sample->shape[d]) {
      error = "ragged lists: expected a list of " + std::to_string(sample->shape[d]) +
              " at depth " + std::to_string(d) + ", got " +
              (v.is_array() ? "a list of " + std::to_string(v.size()) : v.type_name());
      return false;
    }
    for (const json& e : v) {
      if (!self(self, e, d + 1)) return false;
    }
    return true;
  };
  walk(walk, root, 0);
  return error;
}

// What the tensor handler's Preprocess hands on in Batch::data.
struct TensorBatch {
  // Either one stacked input (stacked == true, row r = request rows[r]) or one input per
  // request in rows (each with a batch dimension of 1).
  bool stacked = false;
  std::vector<at::Tensor> inputs;
  std::vector<size_t> rows;
  std::vector<c10::IValue> outputs;  // one per input, set by Inference
};

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
      std::vector<Sample> samples;
      TensorBatch state;
      for (size_t i = 0; i < n; ++i) {
        json body;
        try {
          body = json::parse(batch.requests[i].body);
        } catch (const json::exception& e) {
          batch.responses[i] = BadRequest(std::string("invalid JSON: ") + e.what());
          continue;
        }
        if (body.is_object()) {
          const auto data = body.find("data");
          if (data == body.end()) {
            batch.responses[i] =
                BadRequest("expected nested lists of numbers or {\"data\": <nested lists>}");
            continue;
          }
          body = std::move(*data);
        }
        Sample sample;
        if (std::string error = ParseSample(body, &sample); !error.empty()) {
          batch.responses[i] = BadRequest("invalid tensor: " + error);
          continue;
        }
        samples.push_back(std::move(sample));
        state.rows.push_back(i);
      }
      if (samples.empty()) {
        batch.data = std::move(state);
        return;
      }
      const auto options = at::TensorOptions().dtype(at::kFloat);
      state.stacked = std::all_of(samples.begin(), samples.end(),
                                  [&](const Sample& s) { return s.shape == samples[0].shape; });
      if (state.stacked) {
        std::vector<int64_t> shape{static_cast<int64_t>(samples.size())};
        shape.insert(shape.end(), samples[0].shape.begin(), samples[0].shape.end());
        at::Tensor input = at::empty(shape, options);
        float* out = input.data_ptr<float>();
        for (const Sample& s : samples) {
          std::copy(s.values.begin(), s.values.end(), out);
          out += s.values.size();
        }
        state.inputs.push_back(std::move(input));
      } else {
        for (const Sample& s : samples) {
          std::vector<int64_t> shape{1};
          shape.insert(shape.end(), s.shape.begin(), s.shape.end());
          at::Tensor input = at::empty(shape, options);
          std::copy(s.values.begin(), s.values.end(), input.data_ptr<float>());
          state.inputs.push_back(std::move(input));
        }
      }
      batch.data = std::move(state);
    });
  }

  void Inference(Batch& batch) override {
    AtBorder(kName, "inference", [&] {
      auto& state = std::any_cast<TensorBatch&>(batch.data);
      if (state.inputs.empty()) return;
      ApplyIntraOpThreads(threads_);
      c10::InferenceMode guard;
      state.outputs.clear();
      for (const at::Tensor& input : state.inputs) {
        std::vector<c10::IValue> inputs{input};
        state.outputs.push_back(module_.forward(inputs));
      }
    });
  }

  void Postprocess(Batch& batch) override {
    AtBorder(kName, "postprocess", [&] {
      auto& state = std::any_cast<TensorBatch&>(batch.data);
      if (state.inputs.empty()) return;
      c10::InferenceMode guard;
      for (size_t o = 0; o < state.outputs.size(); ++o) {
        const std::vector<at::Tensor> tensors = OutputTensors(state.outputs[o]);
        const auto expected = static_cast<int64_t>(state.stacked ? state.rows.size() : 1);
        for (const at::Tensor& t : tensors) {
          if (t.dim() == 0 || t.size(0) != expected) {
            throw HandlerError(std::string(kName) + ": the model returned a tensor of shape " +
                               c10::str(t.sizes()) + ", expected a first dimension of " +
                               std::to_string(expected) + " (the batch)");
          }
        }
        const size_t first_row = state.stacked ? 0 : o;
        const size_t row_count = state.stacked ? state.rows.size() : 1;
        for (size_t r = 0; r < row_count; ++r) {
          const auto index = static_cast<int64_t>(state.stacked ? r : 0);
          json body;
          if (state.outputs[o].isTensor()) {
            body = TensorToJson(tensors[0][index]);
          } else {
            body = json::array();
            for (const at::Tensor& t : tensors) body.push_back(TensorToJson(t[index]));
          }
          InferenceResponse& response = batch.responses[state.rows[first_row + r]];
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

std::unique_ptr<Handler> MakeImageClassifierHandler() {
  return std::make_unique<ImageClassifierHandler>();
}

std::unique_ptr<Handler> MakeTensorHandler() { return std::make_unique<TensorHandler>(); }

void RegisterTorchHandlers(HandlerFactory* factory) {
  factory->RegisterBuiltin("image_classifier", MakeImageClassifierHandler);
  factory->RegisterBuiltin("tensor", MakeTensorHandler);
}

}  // namespace tserve::backend
