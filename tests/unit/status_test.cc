// Status kinds, their Is*() helpers, and StatusOr's checked access (issue 9 §2).

#include "common/status.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace tserve {
namespace {

TEST(StatusTest, OkIsTheDefaultAndCarriesNoMessage) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.message(), "");
  EXPECT_EQ(s.ToString(), "OK");
  EXPECT_TRUE(Status::Ok().ok());
  EXPECT_FALSE(s.IsNotFound());
  EXPECT_FALSE(s.IsInternal());
}

TEST(StatusTest, EachFactoryMakesItsKindAndKeepsTheMessage) {
  struct Case {
    Status status;
    StatusCode code;
    const char* name;
  };
  const std::vector<Case> cases = {
      {Status::InvalidArgument("m"), StatusCode::kInvalidArgument, "InvalidArgument"},
      {Status::NotFound("m"), StatusCode::kNotFound, "NotFound"},
      {Status::ModelNotFound("m"), StatusCode::kModelNotFound, "ModelNotFound"},
      {Status::VersionNotFound("m"), StatusCode::kVersionNotFound, "VersionNotFound"},
      {Status::AlreadyExists("m"), StatusCode::kAlreadyExists, "AlreadyExists"},
      {Status::Conflict("m"), StatusCode::kAlreadyExists, "AlreadyExists"},
      {Status::PermissionDenied("m"), StatusCode::kPermissionDenied, "PermissionDenied"},
      {Status::FailedPrecondition("m"), StatusCode::kFailedPrecondition, "FailedPrecondition"},
      {Status::ResourceExhausted("m"), StatusCode::kResourceExhausted, "ResourceExhausted"},
      {Status::Unavailable("m"), StatusCode::kUnavailable, "Unavailable"},
      {Status::DeadlineExceeded("m"), StatusCode::kDeadlineExceeded, "DeadlineExceeded"},
      {Status::DownloadFailed("m"), StatusCode::kDownloadFailed, "DownloadFailed"},
      {Status::Unimplemented("m"), StatusCode::kUnimplemented, "Unimplemented"},
      {Status::Internal("m"), StatusCode::kInternal, "Internal"},
  };
  for (const Case& c : cases) {
    EXPECT_FALSE(c.status.ok()) << c.name;
    EXPECT_EQ(c.status.code(), c.code) << c.name;
    EXPECT_EQ(c.status.message(), "m") << c.name;
    EXPECT_EQ(StatusCodeName(c.code), c.name);
    EXPECT_EQ(c.status.ToString(), std::string(c.name) + ": m");
  }
}

TEST(StatusTest, EachIsHelperAnswersForItsKindOnly) {
  const Status model = Status::ModelNotFound("Model not found: x");
  const Status version = Status::VersionNotFound("Model version: 2 does not exist for model: x");
  const Status file = Status::NotFound("a.mar: no such file");
  // IsNotFound: any of the three not-found kinds; the precise ones tell them apart.
  EXPECT_TRUE(model.IsNotFound());
  EXPECT_TRUE(version.IsNotFound());
  EXPECT_TRUE(file.IsNotFound());
  EXPECT_TRUE(model.IsModelNotFound());
  EXPECT_FALSE(model.IsVersionNotFound());
  EXPECT_TRUE(version.IsVersionNotFound());
  EXPECT_FALSE(version.IsModelNotFound());
  EXPECT_FALSE(file.IsModelNotFound());
  EXPECT_FALSE(file.IsVersionNotFound());

  EXPECT_TRUE(Status::InvalidArgument("").IsInvalidArgument());
  EXPECT_TRUE(Status::Conflict("").IsConflict());
  EXPECT_TRUE(Status::AlreadyExists("").IsConflict());
  EXPECT_TRUE(Status::Conflict("").IsAlreadyExists());
  EXPECT_TRUE(Status::PermissionDenied("").IsPermissionDenied());
  EXPECT_TRUE(Status::FailedPrecondition("").IsFailedPrecondition());
  EXPECT_TRUE(Status::ResourceExhausted("").IsResourceExhausted());
  EXPECT_TRUE(Status::Unavailable("").IsUnavailable());
  EXPECT_TRUE(Status::DeadlineExceeded("").IsTimeout());
  EXPECT_TRUE(Status::DownloadFailed("").IsDownloadFailed());
  EXPECT_TRUE(Status::Unimplemented("").IsUnimplemented());
  EXPECT_TRUE(Status::Internal("").IsInternal());

  // No helper claims a kind that is not its own.
  EXPECT_FALSE(Status::Unavailable("").IsResourceExhausted());
  EXPECT_FALSE(Status::ResourceExhausted("").IsUnavailable());
  EXPECT_FALSE(Status::InvalidArgument("").IsNotFound());
  EXPECT_FALSE(Status::Internal("").IsTimeout());
  EXPECT_FALSE(Status::DownloadFailed("").IsInvalidArgument());
}

TEST(StatusOrTest, HoldsAValue) {
  StatusOr<std::string> v = std::string("abc");
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v.status().ok());
  EXPECT_EQ(v.value(), "abc");
  EXPECT_EQ(*v, "abc");
  EXPECT_EQ(v->size(), 3u);
  std::string moved = std::move(v).value();
  EXPECT_EQ(moved, "abc");
}

TEST(StatusOrTest, HoldsAMoveOnlyValue) {
  StatusOr<std::unique_ptr<int>> v = std::make_unique<int>(7);
  ASSERT_TRUE(v.ok());
  std::unique_ptr<int> p = std::move(v).value();
  EXPECT_EQ(*p, 7);
}

TEST(StatusOrTest, HoldsAnError) {
  StatusOr<int> v = Status::VersionNotFound("no such version");
  EXPECT_FALSE(v.ok());
  EXPECT_TRUE(v.status().IsVersionNotFound());
  EXPECT_EQ(v.status().message(), "no such version");
}

using StatusOrDeathTest = ::testing::Test;

TEST_F(StatusOrDeathTest, ValueOfAnErrorStopsNamingTheStatus) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  StatusOr<int> v = Status::ModelNotFound("Model not found: x");
  EXPECT_DEATH((void)v.value(),
               "StatusOr accessed without a value: ModelNotFound: Model not found: x");
  EXPECT_DEATH((void)*v, "StatusOr accessed without a value");
  const StatusOr<std::string> s = Status::Internal("boom");
  EXPECT_DEATH((void)s->size(), "StatusOr accessed without a value: Internal: boom");
  StatusOr<std::string> m = Status::Unavailable("gone");
  EXPECT_DEATH((void)std::move(m).value(), "StatusOr accessed without a value: Unavailable: gone");
}

TEST_F(StatusOrDeathTest, BuildingFromAnOkStatusStops) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        StatusOr<int> v = Status::Ok();
        (void)v;
      },
      "StatusOr built from an OK status");
}

}  // namespace
}  // namespace tserve
