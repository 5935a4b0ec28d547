#include "common/json_limits.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

namespace tserve {
namespace {

std::string Nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

TEST(JsonLimitsTest, ParsesUpToTheLimit) {
  StatusOr<nlohmann::json> j = ParseJsonLimited(Nested(kMaxJsonDepth));
  ASSERT_TRUE(j.ok()) << j.status().message();
  EXPECT_TRUE(j->is_array());
  StatusOr<nlohmann::ordered_json> o = ParseOrderedJsonLimited(R"({"b": 1, "a": [2, {"c": 3}]})");
  ASSERT_TRUE(o.ok()) << o.status().message();
  EXPECT_EQ(o->dump(), R"({"b":1,"a":[2,{"c":3}]})");
}

TEST(JsonLimitsTest, OneLevelTooDeepIsRefused) {
  // The top-level value is level 1, so {"x": 64 arrays} is 65 levels.
  for (const std::string& text :
       {Nested(kMaxJsonDepth + 1), "{\"x\":" + Nested(kMaxJsonDepth) + "}"}) {
    StatusOr<nlohmann::json> j = ParseJsonLimited(text);
    ASSERT_FALSE(j.ok()) << text;
    EXPECT_EQ(j.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(j.status().message(), "JSON nested deeper than 64 levels");
  }
  EXPECT_TRUE(ParseJsonLimited(R"({"a":{"b":1}})", 2).ok());
  StatusOr<nlohmann::json> j = ParseJsonLimited(R"({"a":{"b":{"c":1}}})", 2);
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().message(), "JSON nested deeper than 2 levels");
}

TEST(JsonLimitsTest, VeryDeepInputStopsEarlyWithoutExhaustingTheStack) {
  // 150,000 levels crashed the management API when the parsed document was dumped.
  StatusOr<nlohmann::ordered_json> j =
      ParseOrderedJsonLimited("{\"limit\":" + Nested(150000) + "}");
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().message(), "JSON nested deeper than 64 levels");
}

TEST(JsonLimitsTest, MalformedJsonIsInvalidArgumentWithTheReason) {
  for (const char* text : {"", "{", "[1,]", "{\"a\" 1}", "nul"}) {
    StatusOr<nlohmann::json> j = ParseJsonLimited(text);
    ASSERT_FALSE(j.ok()) << text;
    EXPECT_EQ(j.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(j.status().message().rfind("malformed JSON: parse error", 0), 0u)
        << j.status().message();
  }
}

}  // namespace
}  // namespace tserve
