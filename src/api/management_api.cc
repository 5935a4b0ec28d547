#include "api/management_api.h"

#include <nlohmann/json.hpp>

#include "api/errors.h"

namespace tserve::api {

void ManagementApi::RegisterRoutes(http::Router* router) {
  router->Add(http::Method::kGet, "/models", [this](http::Request&, http::Responder r) {
    nlohmann::ordered_json j;
    j["models"] = nlohmann::json::array();
    if (models_ != nullptr) {
      for (const auto& m : models_->List()) {
        nlohmann::ordered_json entry;
        entry["modelName"] = m->name;
        entry["modelUrl"] = m->url;
        j["models"].push_back(std::move(entry));
      }
    }
    r.Send(JsonResponse(200, j));
  });
}

}  // namespace tserve::api
