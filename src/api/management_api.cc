#include "api/management_api.h"

#include <nlohmann/json.hpp>

#include "api/errors.h"

namespace tserve::api {

void ManagementApi::RegisterRoutes(http::Router* router) {
  router->Add(http::Method::kGet, "/models", [](http::Request&, http::Responder r) {
    nlohmann::ordered_json j;
    j["models"] = nlohmann::json::array();
    r.Send(JsonResponse(200, j));
  });
}

}  // namespace tserve::api
