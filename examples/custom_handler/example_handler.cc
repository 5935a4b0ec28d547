// An example tserve handler plugin: answers each request with the size of its body in
// bytes and in words, as JSON, and records two custom metrics defined in this folder's
// metrics.yaml. Build it with the project (target example_handler) or on its own:
//   g++ -std=c++20 -O2 -shared -fPIC -I <tserve>/include example_handler.cc -o
//   libexample_handler.so
// See README.md for archiving and serving it.

#include <any>
#include <chrono>
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "tserve/handler.h"

namespace {

// What Preprocess hands to Inference and Postprocess, one per request.
struct Counts {
  std::size_t length = 0;
  std::size_t words = 0;
};

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

class ExampleHandler final : public tserve::Handler {
 public:
  void Initialize(const tserve::ModelContext& context) override {
    // Valid while this handler lives; null when the host offers no metrics.
    metrics_ = context.metrics;
  }

  void Preprocess(tserve::Batch& batch) override {
    start_ = std::chrono::steady_clock::now();
    std::vector<Counts> counts(batch.requests.size());
    for (std::size_t i = 0; i < batch.requests.size(); ++i) {
      counts[i].length = batch.requests[i].body.size();
    }
    batch.data = std::move(counts);
  }

  void Inference(tserve::Batch& batch) override {
    auto& counts = std::any_cast<std::vector<Counts>&>(batch.data);
    for (std::size_t i = 0; i < batch.requests.size(); ++i) {
      // The two ways a handler reports an error. An exception fails the whole batch (each
      // request answers 500 with its message): for what only the handler can see.
      if (batch.requests[i].body == "raise") {
        throw std::runtime_error("example handler: asked to raise");
      }
      bool in_word = false;
      for (char c : batch.requests[i].body) {
        const bool space = IsSpace(c);
        if (!space && !in_word) ++counts[i].words;
        in_word = !space;
      }
    }
  }

  void Postprocess(tserve::Batch& batch) override {
    const auto& counts = std::any_cast<const std::vector<Counts>&>(batch.data);
    batch.responses.clear();
    batch.responses.reserve(counts.size());
    for (std::size_t i = 0; i < counts.size(); ++i) {
      const Counts& c = counts[i];
      tserve::InferenceResponse& r = batch.responses.emplace_back();
      // A 4xx status on one response fails that request alone, the rest of the batch is
      // answered as usual: for input the handler refuses.
      if (batch.requests[i].body == "refuse") {
        r.status = 400;
        r.body =
            "{\"code\": 400, \"type\": \"BadRequestException\", \"message\": "
            "\"example handler: asked to refuse\"}";
        continue;
      }
      r.body = "{\"length\": " + std::to_string(c.length) +
               ", \"words\": " + std::to_string(c.words) + "}";
      // Custom metrics, bound by name to metrics.yaml's model_metrics (ModelName, Level
      // and Hostname are filled in by tserve). A mismatch throws tserve::MetricError.
      if (metrics_ != nullptr) metrics_->AddCounter("ExampleRequests", 1);
    }
    if (metrics_ != nullptr) {
      const std::chrono::duration<double, std::milli> ms =
          std::chrono::steady_clock::now() - start_;
      metrics_->AddTime("ExampleHandlerTime", ms.count());
    }
  }

 private:
  tserve::Metrics* metrics_ = nullptr;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

// The two symbols tserve looks up. The version lets tserve refuse a plugin built against
// an incompatible tserve/handler.h instead of crashing.
extern "C" {
__attribute__((visibility("default"))) int tserve_api_version = TSERVE_API_VERSION;

__attribute__((visibility("default"))) tserve::Handler* tserve_create_handler() {
  return new ExampleHandler();
}
}
