#include "api/inference_api.h"

#include "api/errors.h"

namespace tserve::api {

void InferenceApi::RegisterRoutes(http::Router* router) {
  router->Add(http::Method::kGet, "/ping",
              [](http::Request&, http::Responder r) { r.Send(JsonStatus(200, "Healthy")); });
}

}  // namespace tserve::api
