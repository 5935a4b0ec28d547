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

// TorchServe's answer for one kind of error: its HTTP status code and the exception class
// name it puts in "type".
struct ErrorKind {
  int code;
  const char* type;
};

// The one Status -> TorchServe error mapping (docs/design.md has the table):
//   InvalidArgument, FailedPrecondition  400 BadRequestException
//   DownloadFailed                       400 DownloadArchiveException
//   PermissionDenied                     403 InvalidModelVersionException (TorchServe's 403s
//                                            are IllegalArgumentExceptions: "Cannot remove
//                                            default version ...")
//   NotFound (a file, a path)            404 ResourceNotFoundException
//   ModelNotFound                        404 ModelNotFoundException
//   VersionNotFound                      404 ModelVersionNotFoundException
//   DeadlineExceeded                     408 RequestTimeoutException
//   AlreadyExists (conflict)             409 ConflictStatusException
//   Unimplemented                        501 InternalServerException
//   ResourceExhausted, Unavailable       503 ServiceUnavailableException
//   Internal                             500 InternalServerException
// An OK status is not an error: ErrorKindFor(kOk) is {200, ""}, and ErrorFromStatus(OK)
// answers 500 InternalServerException (a caller's bug, never a success by accident).
ErrorKind ErrorKindFor(StatusCode code);
int HttpStatusFor(StatusCode code);  // ErrorKindFor(code).code
// {"code": <code>, "type": <type>, "message": <the status's message, verbatim>}.
http::Response ErrorFromStatus(const Status& status);

// Any JSON body, serialized as TorchServe's Gson does (2-space indent, HTML-safe escapes,
// invalid UTF-8 replaced), with a trailing newline.
http::Response JsonResponse(int code, const nlohmann::ordered_json& j);

// {"status": "<message>"} with the given code.
http::Response JsonStatus(int code, std::string_view message);

}  // namespace tserve::api
