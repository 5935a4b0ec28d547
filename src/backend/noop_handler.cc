#include <memory>

#include "backend/handler_factory.h"

namespace tserve::backend {

namespace {

// Echoes each request: the body back with its content type. Measures the server itself, so
// it does nothing beyond copying each body into its response.
class NoopHandler final : public Handler {
 public:
  void Initialize(const ModelContext& /*context*/) override {}
  void Preprocess(Batch& /*batch*/) override {}
  void Inference(Batch& /*batch*/) override {}
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
};

}  // namespace

void RegisterNoopHandler(HandlerFactory* factory) {
  factory->RegisterBuiltin("noop", [] { return std::make_unique<NoopHandler>(); });
}

}  // namespace tserve::backend
