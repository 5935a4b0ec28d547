// api::ErrorFromStatus: each Status kind gives TorchServe's HTTP code, exception type and
// the status's message, byte for byte (issue 9 §2).

#include "api/errors.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tserve::api {
namespace {

std::string Body(int code, const std::string& type, const std::string& message) {
  return "{\n  \"code\": " + std::to_string(code) + ",\n  \"type\": \"" + type +
         "\",\n  \"message\": \"" + message + "\"\n}\n";
}

struct Case {
  Status status;
  int code;
  const char* type;
};

TEST(ErrorFromStatusTest, EachKindGivesTorchServesCodeTypeAndMessage) {
  const std::vector<Case> cases = {
      {Status::InvalidArgument("Parameter url is required."), 400, "BadRequestException"},
      {Status::FailedPrecondition("plugin needs a backend"), 400, "BadRequestException"},
      {Status::DownloadFailed("Failed to download archive from: http://h/a.mar"), 400,
       "DownloadArchiveException"},
      {Status::PermissionDenied("Cannot remove default version for model m"), 403,
       "InvalidModelVersionException"},
      {Status::NotFound("a.mar: no such file"), 404, "ResourceNotFoundException"},
      {Status::ModelNotFound("Model not found: m"), 404, "ModelNotFoundException"},
      {Status::VersionNotFound("Model version: 2.0 does not exist for model: m"), 404,
       "ModelVersionNotFoundException"},
      {Status::DeadlineExceeded("Timed out"), 408, "RequestTimeoutException"},
      {Status::AlreadyExists("Model version 1.0 for model m already registered"), 409,
       "ConflictStatusException"},
      {Status::Conflict("busy"), 409, "ConflictStatusException"},
      {Status::Unimplemented("not done"), 501, "InternalServerException"},
      {Status::Internal("Model file already exists a.mar"), 500, "InternalServerException"},
      {Status::ResourceExhausted("Too many registrations in progress"), 503,
       "ServiceUnavailableException"},
      {Status::Unavailable("Model m has no worker to serve inference request."), 503,
       "ServiceUnavailableException"},
  };
  for (const Case& c : cases) {
    http::Response r = ErrorFromStatus(c.status);
    EXPECT_EQ(r.status, c.code) << c.status.ToString();
    EXPECT_EQ(r.content_type, "application/json");
    EXPECT_EQ(r.body, Body(c.code, c.type, c.status.message())) << c.status.ToString();
    EXPECT_EQ(ErrorKindFor(c.status.code()).code, c.code);
    EXPECT_STREQ(ErrorKindFor(c.status.code()).type, c.type);
    EXPECT_EQ(HttpStatusFor(c.status.code()), c.code);
  }
}

// The two not-found kinds of the model APIs keep their TorchServe types apart whatever the
// message says (the management API used to tell them apart by the message's first words).
TEST(ErrorFromStatusTest, NotFoundTypeFollowsTheKindNotTheMessage) {
  EXPECT_EQ(ErrorFromStatus(Status::ModelNotFound("Model version: looks like a version")).body,
            Body(404, "ModelNotFoundException", "Model version: looks like a version"));
  EXPECT_EQ(ErrorFromStatus(Status::VersionNotFound("Model not found: looks like a model")).body,
            Body(404, "ModelVersionNotFoundException", "Model not found: looks like a model"));
}

TEST(ErrorFromStatusTest, MessageIsEscapedAsGsonDoes) {
  EXPECT_EQ(ErrorFromStatus(Status::ModelNotFound("Model not found: <a&b>")).body,
            Body(404, "ModelNotFoundException", "Model not found: \\u003ca\\u0026b\\u003e"));
}

TEST(ErrorFromStatusTest, AnOkStatusIsNeverASuccess) {
  http::Response r = ErrorFromStatus(Status::Ok());
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.body, Body(500, "InternalServerException", "an OK status was reported as an error"));
  EXPECT_EQ(ErrorKindFor(StatusCode::kOk).code, 200);
}

}  // namespace
}  // namespace tserve::api
