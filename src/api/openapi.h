#pragma once

#include <string>

namespace tserve::api {

// Per-model OpenAPI 3.0.1 descriptions, as TorchServe answers OPTIONS on a model's paths.
// The inference API of one model (OPTIONS /predictions/{m}, /models/{m}/invoke,
// /invocations): TorchServe's "RESTful API for: {m}" with the model's predict entry point.
std::string ModelOpenApi(const std::string& model_name);
// The management API of one model (OPTIONS /models/{m}[/{v}] on the management listener):
// TorchServe's "RESTful Management API for: {m}".
std::string ModelManagementOpenApi(const std::string& model_name);

}  // namespace tserve::api
