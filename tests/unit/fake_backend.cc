// A stand-in backend module for handler_factory_test: the entry points of tserve/handler.h's
// "backend module", providing "fake_echo" (answers each request with its body), "fake_null"
// (the create function returns null) and "fake_throw" (it throws).

#include <stdexcept>
#include <string>

#include "tserve/handler.h"

#define FAKE_EXPORT __attribute__((visibility("default")))

namespace {

class EchoHandler final : public tserve::Handler {
 public:
  void Initialize(const tserve::ModelContext&) override {}
  void Preprocess(tserve::Batch&) override {}
  void Inference(tserve::Batch&) override {}
  void Postprocess(tserve::Batch& batch) override {
    batch.responses.clear();
    for (const auto& request : batch.requests) {
      tserve::InferenceResponse response;
      response.body = std::string(request.body);
      batch.responses.push_back(std::move(response));
    }
  }
};

constexpr const char* kNames[] = {"fake_echo", "fake_null", "fake_throw", nullptr};

}  // namespace

extern "C" {

FAKE_EXPORT extern const int tserve_api_version = TSERVE_API_VERSION;

FAKE_EXPORT const char* const* tserve_backend_handler_names() { return kNames; }

FAKE_EXPORT tserve::Handler* tserve_backend_create_handler(const char* name) {
  const std::string n = name;
  if (n == "fake_echo") return new EchoHandler();
  if (n == "fake_throw") throw std::runtime_error("fake backend: asked to throw");
  return nullptr;
}

}  // extern "C"
