#include "api/management_api.h"

#include <nlohmann/json.hpp>

namespace tserve::api {

void ManagementApi::RegisterRoutes(http::Router* router) {
  router->Add(http::Method::kGet, "/models", [](http::Request&, http::Responder r) {
    nlohmann::ordered_json j;
    j["models"] = nlohmann::json::array();
    http::Response resp;
    resp.body = j.dump(2);
    resp.body.push_back('\n');
    r.Send(std::move(resp));
  });
}

}  // namespace tserve::api
