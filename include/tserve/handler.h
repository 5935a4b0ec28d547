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

// ---------------------------------------------------------------------------------------
// Generation: handlers that answer in parts (tokens) and serve many requests at once with
// iteration-level continuous batching (an LLM). A Handler that is also a GenerativeHandler
// is driven by its worker differently from the batch phases above:
//
//   loop:
//     while FreeSlots() > 0 and a request waits: Admit(sequence)      -- prefill, 1st token
//     if Running() > 0: Step()                                         -- one token each
//     otherwise: wait for a request
//
// Each admitted request is a Sequence the worker owns; the handler holds the pointer from an
// Admit that returns kAdmitted until it calls Finish or Fail on it (then never again). The
// worker times and counts everything (time to first token, inter-token latency, tokens,
// finish reasons) from the calls below, so a handler records no metric itself.
// Threading: the worker's thread makes every call, to the handler and to its Sequences.
// A handler is destroyed after the worker has ended every Sequence it held: its destructor
// must not touch them.

// Why a sequence ended, as vLLM's finished_reason: kStop (end-of-sequence token or a stop
// string), kLength (max_tokens or the model's length), kAbort (the client went away, the
// request timed out, or the server is stopping).
enum class FinishReason { kStop, kLength, kAbort };
inline const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
  }
  return "abort";
}

// One request being generated.
class Sequence {
 public:
  virtual ~Sequence() = default;
  virtual std::string_view request_id() const = 0;
  virtual std::string_view content_type() const = 0;
  // The payload: a JSON object (GenerationParams below, the prompt included) or, for any
  // other content type, the prompt as text with the model's default settings.
  virtual std::string_view body() const = 0;
  // True once the client has gone or the request's deadline has passed: the handler must
  // Finish(kAbort) the sequence at its next Step (or instead of admitting it).
  virtual bool cancelled() const = 0;
  // The prompt's length in tokens (once, at admission, before the first Emit).
  virtual void SetPromptTokens(int tokens) = 0;
  // Sends `text`, the text of `tokens` new tokens, to the client now. `text` may be empty
  // when the tokens end inside a multi-byte UTF-8 character or may begin a stop string (the
  // text follows in a later Emit, or never when it was the stop string); tokens == 0 sends
  // such held-back text alone. `text` is valid UTF-8.
  virtual void Emit(std::string_view text, int tokens) = 0;
  // Ends the sequence normally (after its last Emit).
  virtual void Finish(FinishReason reason) = 0;
  // Ends it with an error: before the first Emit the client gets `status` (4xx: the
  // request was bad, e.g. a prompt longer than the model's length; 5xx: the handler
  // failed) with `message`; after it, the answer ends early and the failure is counted.
  virtual void Fail(int status, std::string_view message) = 0;
};

// The handler's state after a step, for the worker's gauges.
struct GenerationStats {
  int running = 0;          // sequences admitted and not finished
  int kv_blocks_used = 0;   // KV-cache blocks held by running sequences
  int kv_blocks_total = 0;  // blocks the cache has
};

enum class AdmitResult {
  kAdmitted,  // running: the handler holds the sequence until it ends it
  kEnded,     // ended already (Fail: a bad request; Finish: done in the prefill)
  kNoRoom,    // not enough free KV blocks now: the worker keeps it waiting, first in line
};

class GenerativeHandler {
 public:
  virtual ~GenerativeHandler() = default;
  // How many more sequences could be admitted now (free slots). 0: Step first.
  virtual int FreeSlots() const = 0;
  // Parses the request, tokenizes the prompt, reserves a slot and its KV blocks, runs the
  // prefill and emits the first token (or Fails/Finishes the sequence).
  virtual AdmitResult Admit(Sequence* sequence) = 0;
  // One iteration: one batched decode step over every running sequence, each emitting its
  // next token; sequences that end (EOS, max_tokens, stop string, cancelled) are Finished
  // and their slots and blocks freed at once. Throwing fails every running sequence (500).
  virtual void Step() = 0;
  virtual GenerationStats Stats() const = 0;
};

// The generation settings a request may give (JSON fields of the payload), as OpenAI's
// completions API names them. Handlers parse them; the OpenAI endpoints write them.
//   prompt (string, required), max_tokens (int >= 1), temperature (>= 0; 0: greedy),
//   top_p (0 < p <= 1), seed (int), stop (string or array of strings), ignore_eos (bool)

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
