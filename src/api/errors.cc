#include "api/errors.h"

#include <nlohmann/json.hpp>

#include "common/strings.h"

namespace tserve::api {

namespace {

// Serializes as TorchServe's Gson (JsonUtils.GSON_PRETTY) does: 2-space indent, HTML
// escaping on (< > & = ' as \u003c ...; those characters only occur inside strings),
// U+2028/U+2029 escaped. Bytes that are not UTF-8 become U+FFFD, as Java decodes them,
// where nlohmann would throw (a request can put such bytes into an error message).
std::string GsonPretty(const nlohmann::ordered_json& j) {
  return GsonHtmlSafe(j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
}

}  // namespace

http::Response JsonResponse(int code, const nlohmann::ordered_json& j) {
  http::Response r;
  r.status = code;
  r.content_type = "application/json";
  r.body = GsonPretty(j);
  r.body.push_back('\n');
  return r;
}

const char* ErrorTypeFor(int code) {
  switch (code) {
    case 400:
      return "BadRequestException";
    case 401:
      return "UnauthorizedException";
    case 403:
      return "ForbiddenException";
    case 404:
      return "ResourceNotFoundException";
    case 405:
      return "MethodNotAllowedException";
    case 408:
      return "RequestTimeoutException";
    case 409:
      return "ConflictStatusException";
    case 413:
      return "RequestEntityTooLargeException";
    case 431:
      return "RequestHeaderFieldsTooLargeException";
    case 503:
      return "ServiceUnavailableException";
    default:
      return code >= 500 ? "InternalServerException" : "BadRequestException";
  }
}

http::Response JsonError(int code, std::string_view type, std::string_view message) {
  nlohmann::ordered_json j;
  j["code"] = code;
  j["type"] = type;
  j["message"] = message;
  return JsonResponse(code, j);
}

http::Response ErrorForStatus(int code, std::string_view message) {
  return JsonError(code, ErrorTypeFor(code), message);
}

ErrorKind ErrorKindFor(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return {200, ""};
    case StatusCode::kInvalidArgument:
    case StatusCode::kFailedPrecondition:
      return {400, "BadRequestException"};
    case StatusCode::kDownloadFailed:
      return {400, "DownloadArchiveException"};
    case StatusCode::kPermissionDenied:
      return {403, "InvalidModelVersionException"};
    case StatusCode::kNotFound:
      return {404, "ResourceNotFoundException"};
    case StatusCode::kModelNotFound:
      return {404, "ModelNotFoundException"};
    case StatusCode::kVersionNotFound:
      return {404, "ModelVersionNotFoundException"};
    case StatusCode::kDeadlineExceeded:
      return {408, "RequestTimeoutException"};
    case StatusCode::kAlreadyExists:
      return {409, "ConflictStatusException"};
    case StatusCode::kUnimplemented:
      return {501, "InternalServerException"};
    case StatusCode::kResourceExhausted:
    case StatusCode::kUnavailable:
      return {503, "ServiceUnavailableException"};
    case StatusCode::kInternal:
      return {500, "InternalServerException"};
  }
  return {500, "InternalServerException"};
}

int HttpStatusFor(StatusCode code) { return ErrorKindFor(code).code; }

http::Response ErrorFromStatus(const Status& status) {
  if (status.ok()) {
    return JsonError(500, "InternalServerException", "an OK status was reported as an error");
  }
  const ErrorKind kind = ErrorKindFor(status.code());
  return JsonError(kind.code, kind.type, status.message());
}

http::Response JsonStatus(int code, std::string_view message) {
  nlohmann::ordered_json j;
  j["status"] = message;
  return JsonResponse(code, j);
}

}  // namespace tserve::api
