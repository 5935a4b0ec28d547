#pragma once

#include "http/router.h"

namespace tserve::api {

// The management listener (port 8081): GET /models (no models are served yet).
// Thread safety: stateless.
class ManagementApi {
 public:
  void RegisterRoutes(http::Router* router);
};

}  // namespace tserve::api
