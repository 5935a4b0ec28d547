#pragma once

#include "http/router.h"
#include "serving/model_manager.h"

namespace tserve::api {

// The management listener (port 8081): GET /models lists the registered models (their
// default versions, sorted by name). Thread safety: state is the manager's.
class ManagementApi {
 public:
  explicit ManagementApi(serving::ModelManager* models) : models_(models) {}
  void RegisterRoutes(http::Router* router);

 private:
  serving::ModelManager* models_;
};

}  // namespace tserve::api
