#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"
#include "http/request.h"

namespace tserve::api {

// TorchServe's error body, pretty-printed as TorchServe's Gson does:
//   {"code": 404, "type": "ModelNotFoundException", "message": "Model not found: x"}
http::Response JsonError(int code, std::string_view type, std::string_view message);

// The error class name TorchServe uses for a status code (BadRequestException, ...).
const char* ErrorTypeFor(int code);

// http::ErrorFactory for errors the HTTP layer produces (400, 404, 405, 413, 431).
http::Response ErrorForStatus(int code, std::string_view message);

// The one Status -> HTTP mapping.
int HttpStatusFor(StatusCode code);
http::Response ErrorFromStatus(const Status& status);

// Any JSON body, serialized as TorchServe's Gson does (2-space indent, HTML-safe escapes,
// invalid UTF-8 replaced), with a trailing newline.
http::Response JsonResponse(int code, const nlohmann::ordered_json& j);

// {"status": "<message>"} with the given code.
http::Response JsonStatus(int code, std::string_view message);

}  // namespace tserve::api
