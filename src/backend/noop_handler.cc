#include <charconv>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "backend/handler_factory.h"

namespace tserve::backend {

namespace {

// The most model-config.yaml's `delay_ms` / `load_delay_ms` may ask for.
constexpr int kMaxDelayMs = 60000;

// model-config.yaml's `key` as a delay from 0 to kMaxDelayMs; 0 when absent.
std::chrono::milliseconds DelayFromConfig(const ModelContext& context, const std::string& key) {
  auto it = context.config.find(key);
  if (it == context.config.end()) return std::chrono::milliseconds(0);
  const std::string& v = it->second;
  int ms = -1;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), ms);
  if (ec != std::errc() || end != v.data() + v.size() || ms < 0 || ms > kMaxDelayMs) {
    throw std::invalid_argument("noop handler: " + key + " must be an integer from 0 to " +
                                std::to_string(kMaxDelayMs) + ", got \"" + v + "\"");
  }
  return std::chrono::milliseconds(ms);
}

// Echoes each request: the body back with its content type. Measures the server itself, so
// it does nothing beyond copying each body into its response. model-config.yaml's
// `delay_ms: N` (0 to kMaxDelayMs) makes each batch's inference sleep N ms, to stand in for
// a slow model (tests fill queues with it); `load_delay_ms: N` makes loading take N ms, to
// stand in for a slow-loading model (tests run out startup timeouts with it).
class NoopHandler final : public Handler {
 public:
  void Initialize(const ModelContext& context) override {
    delay_ = DelayFromConfig(context, "delay_ms");
    const auto load_delay = DelayFromConfig(context, "load_delay_ms");
    if (load_delay.count() > 0) std::this_thread::sleep_for(load_delay);
  }
  void Preprocess(Batch& /*batch*/) override {}
  void Inference(Batch& /*batch*/) override {
    if (delay_.count() > 0) std::this_thread::sleep_for(delay_);
  }
  void Postprocess(Batch& batch) override {
    batch.responses.clear();
    batch.responses.reserve(batch.requests.size());
    for (const InferenceRequest& request : batch.requests) {
      InferenceResponse& response = batch.responses.emplace_back();
      if (request.content_type.empty()) {
        response.content_type = "application/octet-stream";
      } else {
        response.content_type.assign(request.content_type);
      }
      response.body.assign(request.body);
    }
  }

 private:
  std::chrono::milliseconds delay_{0};
};

}  // namespace

void RegisterNoopHandler(HandlerFactory* factory) {
  factory->RegisterBuiltin("noop", [] { return std::make_unique<NoopHandler>(); });
}

}  // namespace tserve::backend
