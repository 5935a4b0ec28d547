#pragma once

#include <atomic>
#include <string>

#include "http/router.h"
#include "serving/model_manager.h"

namespace tserve::api {

// The inference listener (port 8080): GET /ping, POST|PUT /predictions/{model}[/{version}].
// Thread safety: handlers run on many I/O threads; state is the manager's.
class InferenceApi {
 public:
  explicit InferenceApi(serving::ModelManager* models) : models_(models) {}
  void RegisterRoutes(http::Router* router);

 private:
  void Ping(http::Responder responder) const;
  void Predict(http::Request& request, http::Responder responder);

  serving::ModelManager* models_;
  std::atomic<uint64_t> next_request_id_{1};
};

}  // namespace tserve::api
