#include "serving/model_config.h"

#include <gtest/gtest.h>

#include <string>

namespace tserve::serving {
namespace {

constexpr char kSource[] = "model-config.yaml";

std::string ErrorOf(std::string_view yaml) {
  StatusOr<ModelConfig> c = ParseModelConfig(yaml, kSource);
  EXPECT_FALSE(c.ok()) << yaml;
  if (c.ok()) return std::string();
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  return c.status().message();
}

TEST(ModelConfigTest, ParsesTorchServeKeys) {
  StatusOr<ModelConfig> c = ParseModelConfig(R"(# resnet18
minWorkers: 1
maxWorkers: 4
batchSize: 8
maxBatchDelay: 50
responseTimeout: 30
deviceType: gpu
)",
                                             kSource);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->min_workers, 1);
  EXPECT_EQ(c->max_workers, 4);
  EXPECT_EQ(c->batch_size, 8);
  EXPECT_EQ(c->max_batch_delay_ms, 50);
  EXPECT_EQ(c->response_timeout_s, 30);
  EXPECT_EQ(c->device_type, "gpu");
}

TEST(ModelConfigTest, AbsentKeysStayUnset) {
  StatusOr<ModelConfig> c = ParseModelConfig("batchSize: 4\n", kSource);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->batch_size, 4);
  EXPECT_FALSE(c->min_workers.has_value());
  EXPECT_FALSE(c->max_workers.has_value());
  EXPECT_FALSE(c->max_batch_delay_ms.has_value());
  EXPECT_FALSE(c->response_timeout_s.has_value());
  EXPECT_EQ(c->device_type, "");
}

TEST(ModelConfigTest, EmptyDocumentIsAnEmptyConfig) {
  for (const char* text : {"", "\n", "# only a comment\n", "---\n"}) {
    StatusOr<ModelConfig> c = ParseModelConfig(text, kSource);
    ASSERT_TRUE(c.ok()) << text << ": " << c.status().message();
    EXPECT_EQ(*c, ModelConfig{}) << text;
  }
}

TEST(ModelConfigTest, ScalarsHoldEveryTopLevelScalar) {
  StatusOr<ModelConfig> c = ParseModelConfig(R"(batchSize: 2
topk: 5
labels: "index_to_name.json"
useJobTicket: true
handler:
  threshold: 0.5
deviceIds: [0, 1]
)",
                                             kSource);
  ASSERT_TRUE(c.ok()) << c.status().message();
  std::map<std::string, std::string> want = {{"batchSize", "2"},
                                             {"topk", "5"},
                                             {"labels", "index_to_name.json"},
                                             {"useJobTicket", "true"}};
  EXPECT_EQ(c->scalars, want);
}

TEST(ModelConfigTest, ZeroWorkersAndZeroDelayAreAllowed) {
  StatusOr<ModelConfig> c =
      ParseModelConfig("minWorkers: 0\nmaxWorkers: 0\nmaxBatchDelay: 0\n", kSource);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->min_workers, 0);
  EXPECT_EQ(c->max_workers, 0);
  EXPECT_EQ(c->max_batch_delay_ms, 0);
}

TEST(ModelConfigTest, QuotedIntegersAreAccepted) {
  StatusOr<ModelConfig> c = ParseModelConfig("batchSize: \"4\"\n", kSource);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->batch_size, 4);
}

TEST(ModelConfigTest, DeviceTypeIgnoresCase) {
  StatusOr<ModelConfig> c = ParseModelConfig("deviceType: CPU\n", kSource);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->device_type, "cpu");
}

TEST(ModelConfigTest, BatchSizeErrors) {
  EXPECT_EQ(ErrorOf("minWorkers: 1\nmaxWorkers: 2\nbatchSize: x\n"),
            "model-config.yaml:3: batchSize must be an integer ≥ 1, got \"x\"");
  EXPECT_EQ(ErrorOf("batchSize: 0\n"),
            "model-config.yaml:1: batchSize must be an integer ≥ 1, got \"0\"");
  EXPECT_EQ(ErrorOf("batchSize: 2.5\n"),
            "model-config.yaml:1: batchSize must be an integer ≥ 1, got \"2.5\"");
  EXPECT_EQ(ErrorOf("batchSize: 99999999999\n"),
            "model-config.yaml:1: batchSize must be an integer ≥ 1, got \"99999999999\"");
  EXPECT_EQ(ErrorOf("batchSize: [1, 2]\n"),
            "model-config.yaml:1: batchSize must be an integer ≥ 1, got a list");
  EXPECT_EQ(ErrorOf("batchSize:\n  a: 1\n"),
            "model-config.yaml:1: batchSize must be an integer ≥ 1, got a map");
  EXPECT_EQ(ErrorOf("batchSize:\n"),
            "model-config.yaml:1: batchSize must be an integer ≥ 1, got nothing");
}

TEST(ModelConfigTest, MinWorkersErrors) {
  EXPECT_EQ(ErrorOf("minWorkers: -1\n"),
            "model-config.yaml:1: minWorkers must be an integer ≥ 0, got \"-1\"");
  EXPECT_EQ(ErrorOf("minWorkers: many\n"),
            "model-config.yaml:1: minWorkers must be an integer ≥ 0, got \"many\"");
}

TEST(ModelConfigTest, MaxWorkersErrors) {
  EXPECT_EQ(ErrorOf("maxWorkers: 1.5\n"),
            "model-config.yaml:1: maxWorkers must be an integer ≥ 0, got \"1.5\"");
}

TEST(ModelConfigTest, MaxWorkersBelowMinWorkers) {
  EXPECT_EQ(ErrorOf("minWorkers: 3\nmaxWorkers: 2\n"),
            "model-config.yaml:2: maxWorkers (2) must be ≥ minWorkers (3)");
  EXPECT_EQ(ErrorOf("maxWorkers: 2\nbatchSize: 1\nminWorkers: 3\n"),
            "model-config.yaml:1: maxWorkers (2) must be ≥ minWorkers (3)");
}

TEST(ModelConfigTest, MaxBatchDelayErrors) {
  EXPECT_EQ(ErrorOf("maxBatchDelay: -5\n"),
            "model-config.yaml:1: maxBatchDelay must be an integer ≥ 0, got \"-5\"");
  EXPECT_EQ(ErrorOf("maxBatchDelay: 100ms\n"),
            "model-config.yaml:1: maxBatchDelay must be an integer ≥ 0, got \"100ms\"");
}

TEST(ModelConfigTest, ResponseTimeoutErrors) {
  EXPECT_EQ(ErrorOf("responseTimeout: 0\n"),
            "model-config.yaml:1: responseTimeout must be an integer ≥ 1, got \"0\"");
}

TEST(ModelConfigTest, DeviceTypeErrors) {
  EXPECT_EQ(ErrorOf("deviceType: neuron\n"),
            "model-config.yaml:1: deviceType neuron is not supported by tserve (use cpu or gpu)");
  EXPECT_EQ(ErrorOf("deviceType: tpu\n"),
            "model-config.yaml:1: deviceType must be cpu or gpu, got \"tpu\"");
  EXPECT_EQ(ErrorOf("deviceType: [cpu]\n"),
            "model-config.yaml:1: deviceType must be cpu or gpu, got a list");
}

TEST(ModelConfigTest, InvalidYamlNamesFileAndLine) {
  std::string e = ErrorOf("batchSize: 1\nminWorkers: [1, 2\n");
  EXPECT_EQ(e.rfind("model-config.yaml:", 0), 0u) << e;
  EXPECT_NE(e.find("invalid YAML"), std::string::npos) << e;
}

TEST(ModelConfigTest, DocumentMustBeAMap) {
  EXPECT_EQ(ErrorOf("- batchSize\n- 4\n"),
            "model-config.yaml:1: must be a map of keys (minWorkers: 1, ...)");
  EXPECT_EQ(ErrorOf("just text\n"),
            "model-config.yaml:1: must be a map of keys (minWorkers: 1, ...)");
}

TEST(ModelConfigTest, DuplicateKeyIsAnError) {
  EXPECT_EQ(ErrorOf("batchSize: 1\nbatchSize: 2\n"),
            "model-config.yaml:2: duplicate key batchSize");
}

TEST(ModelConfigTest, ErrorsNameTheGivenSource) {
  StatusOr<ModelConfig> c = ParseModelConfig("batchSize: 0\n", "configs/resnet.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message().rfind("configs/resnet.yaml:1: batchSize", 0), 0u);
}

}  // namespace
}  // namespace tserve::serving
