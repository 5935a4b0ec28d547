#pragma once

#include "http/router.h"

namespace tserve::api {

// The inference listener (port 8080): GET /ping for now; predictions come with the
// serving module. Thread safety: stateless.
class InferenceApi {
 public:
  void RegisterRoutes(http::Router* router);
};

}  // namespace tserve::api
