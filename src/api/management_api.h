#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "http/router.h"
#include "serving/model_manager.h"

namespace tserve::api {

// The management listener (port 8081): TorchServe's Management API — list (paginated),
// describe, scale, register, unregister, set-default, and OPTIONS / (OpenAPI).
// Register/unregister answer 405 unless enable_model_api. Parameters come from the query
// string or an application/x-www-form-urlencoded body (curl -d), or a JSON body for
// register; a malformed integer is a 400 naming the parameter.
// Thread safety: handlers run on many I/O threads; slow work runs on the manager's
// control thread and answers through the Responder when done.
class ManagementApi {
 public:
  // Resolves a registration URL to a local archive path inside the model store (allowed
  // URLs, downloads): the URL-fetching policy lives outside the API.
  using Fetcher = std::function<StatusOr<std::string>(const std::string& url)>;

  struct Options {
    bool enable_model_api = false;
    Fetcher fetch;
  };
  ManagementApi(serving::ModelManager* models, Options options)
      : models_(models), options_(std::move(options)) {}
  void RegisterRoutes(http::Router* router);

 private:
  void List(http::Request& request, http::Responder responder);
  void Describe(http::Request& request, http::Responder responder);
  void Scale(http::Request& request, http::Responder responder);
  void Register(http::Request& request, http::Responder responder);
  void Unregister(http::Request& request, http::Responder responder);
  void SetDefault(http::Request& request, http::Responder responder);

  serving::ModelManager* models_;
  Options options_;
};

// The OpenAPI 3 description of one listener's API ("inference", "management", "metrics").
std::string OpenApiDescription(const std::string& listener);

}  // namespace tserve::api
