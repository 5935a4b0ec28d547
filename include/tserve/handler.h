#pragma once

// tserve's public handler API: what a model handler implements, built in or loaded from a
// plugin (.so). The only header a plugin needs. Handlers work on batches: the worker calls
// Preprocess, Inference and Postprocess once per batch, timing each phase (HandlerTime is
// the three together, PredictionTime is Inference alone).
//
// Errors: a phase that throws fails its whole batch (each request answers 500 with the
// exception's message); the worker goes on with the next batch. To refuse one request
// alone, leave a 4xx status (and a JSON error body) on its response: the rest of the batch
// is answered as usual. Initialize throwing means
// the worker could not load (retried with back-off, and logged).
//
// Threading: each worker owns one Handler instance and calls it from one thread; different
// workers' instances run concurrently. Metrics (below) is thread safe.

#include <any>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tserve {

// One request of a batch. `body` is the payload: the raw request body, or the `data` (else
// `body`) field of a multipart/form-data request, as TorchServe's handlers receive it.
struct InferenceRequest {
  std::string_view request_id;
  std::string_view content_type;  // of the payload
  std::string_view body;
};

// One answer. Postprocess must leave exactly one per request, in order.
struct InferenceResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

// A batch moving through the phases. `data` carries whatever a handler passes from one
// phase to the next (tensors, decoded images...).
struct Batch {
  std::vector<InferenceRequest> requests;
  std::vector<InferenceResponse> responses;
  std::any data;
};

using Dimensions = std::vector<std::pair<std::string, std::string>>;

// Raised by Metrics when a call does not match metrics.yaml: the metric is not defined
// there, has another type, or the dimensions differ. (TorchServe drops such samples
// silently; tserve says what is wrong.)
class MetricError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// TorchServe's custom metrics API. Each call records into the metric of that name in
// metrics.yaml (model_metrics section), with `dimensions` bound to its dimensions by name;
// ModelName and Level default to this model and "Model", Hostname is always added.
class Metrics {
 public:
  virtual ~Metrics() = default;
  // A counter: adds `value` (default 1).
  virtual void AddCounter(std::string_view name, double value = 1.0,
                          const Dimensions& dimensions = {}) = 0;
  // A gauge in the given unit: time (ms by default), size (MB), percent.
  virtual void AddTime(std::string_view name, double value, const Dimensions& dimensions = {},
                       std::string_view unit = "ms") = 0;
  virtual void AddSize(std::string_view name, double value, const Dimensions& dimensions = {},
                       std::string_view unit = "MB") = 0;
  virtual void AddPercent(std::string_view name, double value,
                          const Dimensions& dimensions = {}) = 0;
  // Any metric: counters add, gauges set, histograms observe.
  virtual void AddMetric(std::string_view name, double value, std::string_view unit,
                         const Dimensions& dimensions = {}) = 0;
};

// What a handler learns about its model when it is loaded.
struct ModelContext {
  std::string model_name;
  std::string model_version;
  std::string model_dir;        // the archive's files (extracted), read-only
  std::string serialized_file;  // absolute path of the manifest's serializedFile ("" if none)
  std::string handler;          // the manifest's handler value
  std::string device = "cpu";
  int intra_op_threads = 1;  // threads the handler may use for one inference
  int batch_size = 1;        // the most requests one batch holds
  int worker_id = 0;
  std::map<std::string, std::string> config;  // model-config.yaml's top-level scalars
  Metrics* metrics = nullptr;                 // valid while the handler lives
};

class Handler {
 public:
  virtual ~Handler() = default;
  virtual void Initialize(const ModelContext& context) = 0;
  virtual void Preprocess(Batch& batch) = 0;
  virtual void Inference(Batch& batch) = 0;
  virtual void Postprocess(Batch& batch) = 0;
};

}  // namespace tserve

// A plugin is a shared library exporting this factory (see examples/custom_handler):
//   extern "C" tserve::Handler* tserve_create_handler();
// tserve owns the returned object and deletes it with `delete`. The plugin must be built
// against this header with the same compiler and standard library as tserve. It may also
// export the API version it was built for (checked when present):
//   extern "C" const int tserve_api_version = TSERVE_API_VERSION;
#define TSERVE_HANDLER_FACTORY_SYMBOL "tserve_create_handler"
#define TSERVE_API_VERSION_SYMBOL "tserve_api_version"
#define TSERVE_API_VERSION 1
extern "C" {
using TserveCreateHandlerFn = tserve::Handler* (*)();
}

// A backend module provides built-in handlers that tserve loads the first time a model
// names one of them (libtserve_torch.so: the TorchScript handlers), as Triton loads its
// backends. It is built against this header like a plugin and exports, with C linkage:
//   const int tserve_api_version = TSERVE_API_VERSION;  // required for a backend
//   const char* const* tserve_backend_handler_names();  // null-terminated, static storage
//   tserve::Handler* tserve_backend_create_handler(const char* name);  // null: unknown
// tserve owns a created handler (deleted with `delete`). A module is loaded once, stays
// loaded for the life of the process, and must export nothing else (its private code is
// hidden: -fvisibility=hidden, -Wl,--exclude-libs,ALL). Creating a handler may throw; the
// model then fails to load with the exception's message.
#define TSERVE_BACKEND_NAMES_SYMBOL "tserve_backend_handler_names"
#define TSERVE_BACKEND_CREATE_SYMBOL "tserve_backend_create_handler"
extern "C" {
using TserveBackendNamesFn = const char* const* (*)();
using TserveBackendCreateFn = tserve::Handler* (*)(const char* name);
}
