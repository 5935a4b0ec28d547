// The inference API against a fake handler: what a TorchServe client sees for a
// prediction (200 with the handler's bytes), the 404 kinds, the 503 of no worker, and which
// multipart field becomes the payload. Then the management API's describe-all of an unknown
// model and its registration threads' limit.
#include "api/inference_api.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "api/errors.h"
#include "api/management_api.h"
#include "api_test_support.h"
#include "common/strings.h"
#include "metrics/metrics_yaml.h"

namespace tserve::api {
namespace {

using apitest::EchoHandler;

using apitest::FutureTarget;
using apitest::Headers;

class InferenceApiTest : public apitest::ModelHarness {
 protected:
  void SetUp() override {
    ModelHarness::SetUp();
    factory_.RegisterBuiltin("echo", [] { return std::make_unique<EchoHandler>(); });
    api_ = std::make_unique<InferenceApi>(manager_.get());
    api_->RegisterRoutes(&router_);
  }

  http::Response Call(http::Method method, std::string path, std::string body = "",
                      Headers headers = {}) {
    return Start(method, std::move(path), std::move(body), std::move(headers)).get();
  }
  // Routes the request and returns its answer to come (answered later by another thread,
  // or already).
  std::future<http::Response> Start(http::Method method, std::string path, std::string body = "",
                                    Headers headers = {}) {
    return Route(method, std::move(path), std::move(body), std::move(headers));
  }
  http::Response Post(std::string path, std::string body = "", Headers headers = {}) {
    return Call(http::Method::kPost, std::move(path), std::move(body), std::move(headers));
  }

  std::unique_ptr<InferenceApi> api_;
};

TEST_F(InferenceApiTest, APredictionAnswers200WithTheHandlersBytes) {
  AddModel("m", 1);
  http::Response r = Post("/predictions/m", "hello", {{"Content-Type", "text/x-in"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/plain");
  EXPECT_EQ(r.body, "text/x-in|hello");
  EXPECT_EQ(Post("/predictions/m/1.0", "v").body, "|v");
  EXPECT_EQ(Call(http::Method::kPut, "/models/m/invoke", "put").body, "|put");
  EXPECT_EQ(Post("/invocations?model_name=m", "inv").body, "|inv");
}

TEST_F(InferenceApiTest, UnknownModelAndUnknownVersionAre404sOfTheirOwnKind) {
  AddModel("m", 1);
  http::Response no_model = Post("/predictions/nope", "x");
  EXPECT_EQ(no_model.status, 404);
  EXPECT_EQ(no_model.body,
            "{\n  \"code\": 404,\n  \"type\": \"ModelNotFoundException\",\n  \"message\": "
            "\"Model not found: nope\"\n}\n");
  http::Response no_version = Post("/predictions/m/2.0", "x");
  EXPECT_EQ(no_version.status, 404);
  EXPECT_EQ(no_version.body,
            "{\n  \"code\": 404,\n  \"type\": \"ModelVersionNotFoundException\",\n  "
            "\"message\": \"Model version: 2.0 does not exist for model: m\"\n}\n");
  EXPECT_EQ(Call(http::Method::kOptions, "/predictions/nope").status, 404);
}

TEST_F(InferenceApiTest, AModelWithoutWorkersAnswersTorchServes503) {
  AddModel("m", 0);
  http::Response r = Post("/predictions/m", "x");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body,
            "{\n  \"code\": 503,\n  \"type\": \"ServiceUnavailableException\",\n  \"message\": "
            "\"Model \\\"m\\\" has no worker to serve inference request. Please use scale "
            "workers API to add workers.\"\n}\n");
}

std::string Form(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string body;
  for (const auto& [name, value] : fields) {
    body += "--XyZ\r\nContent-Disposition: form-data; name=\"" + name +
            "\"\r\nContent-Type: text/x-" + name + "\r\n\r\n" + value + "\r\n";
  }
  return body + "--XyZ--\r\n";
}

TEST_F(InferenceApiTest, AMultipartPayloadIsItsDataFieldElseBodyElseTheFirst) {
  AddModel("m", 1);
  const Headers form = {{"Content-Type", "multipart/form-data; boundary=XyZ"}};
  EXPECT_EQ(Post("/predictions/m", Form({{"a", "1"}, {"data", "2"}, {"body", "3"}}), form).body,
            "text/x-data|2");
  EXPECT_EQ(Post("/predictions/m", Form({{"a", "1"}, {"body", "3"}}), form).body, "text/x-body|3");
  EXPECT_EQ(Post("/predictions/m", Form({{"a", "1"}, {"b", "2"}}), form).body, "text/x-a|1");
  http::Response bad = Post("/predictions/m", "not a form", form);
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("BadRequestException"), std::string::npos);
}

TEST_F(InferenceApiTest, PingIsHealthyOnlyWhenEveryModelHasItsMinimumReady) {
  EXPECT_EQ(Call(http::Method::kGet, "/ping").status, 200);
  AddModel("m", 1);
  http::Response r = Call(http::Method::kGet, "/ping");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("Healthy"), std::string::npos);
}

// The management API beside the inference API, over the same manager. Its fetcher blocks
// each registration until release() (so tests can hold every registration thread), then
// answers that the archive is not in the store.
class ManagementApiTest : public InferenceApiTest {
 protected:
  void SetUp() override {
    InferenceApiTest::SetUp();
    ManagementApi::Options o;
    o.enable_model_api = true;
    o.fetch = [gate = gate_.get_future().share()](
                  const std::string& url, const std::atomic<bool>&) -> StatusOr<std::string> {
      gate.wait();
      return Status::ModelNotFound("Model not found in model store: " + url);
    };
    mgmt_ = std::make_unique<ManagementApi>(manager_.get(), std::move(o));
    mgmt_->RegisterRoutes(&router_);
  }
  void TearDown() override {
    release();
    mgmt_.reset();  // before the manager, as ManagementApi requires
    InferenceApiTest::TearDown();
  }
  void release() {
    if (!released_) gate_.set_value();
    released_ = true;
  }

  std::promise<void> gate_;
  bool released_ = false;
  std::unique_ptr<ManagementApi> mgmt_;
};

TEST_F(ManagementApiTest, DescribingEveryVersionOfAnUnknownModelIsModelNotFound) {
  AddModel("m", 0);
  http::Response r = Call(http::Method::kGet, "/models/nope/all");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body,
            "{\n  \"code\": 404,\n  \"type\": \"ModelNotFoundException\",\n  \"message\": "
            "\"Model not found: nope\"\n}\n");
  http::Response all = Call(http::Method::kGet, "/models/m/all");
  EXPECT_EQ(all.status, 200);
  EXPECT_NE(all.body.find("\"modelVersion\": \"1.0\""), std::string::npos);
}

TEST_F(ManagementApiTest, ARegistrationBeyondTheBusyRegistrationThreadsAnswers503) {
  std::vector<std::future<http::Response>> held;
  for (int i = 0; i < ManagementApi::kMaxConcurrentRegistrations; ++i) {
    held.push_back(Start(http::Method::kPost, "/models?url=a" + std::to_string(i) + ".mar"));
  }
  http::Response refused = Call(http::Method::kPost, "/models?url=b.mar");
  EXPECT_EQ(refused.status, 503);
  EXPECT_EQ(refused.body,
            "{\n  \"code\": 503,\n  \"type\": \"ServiceUnavailableException\",\n  "
            "\"message\": \"Too many registrations in progress: at most 4 run at once; retry "
            "when one has finished\"\n}\n");
  release();
  for (auto& answer : held) {
    http::Response r = answer.get();
    EXPECT_EQ(r.status, 404);
    EXPECT_NE(r.body.find("ModelNotFoundException"), std::string::npos);
  }
}

TEST_F(ManagementApiTest, ARegistrationAfterShutdownAnswers503) {
  release();
  mgmt_->Shutdown();
  http::Response r = Call(http::Method::kPost, "/models?url=a.mar");
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("the server is shutting down"), std::string::npos);
}

// Every listener's operations as "<path> <method> <operationId>", in the document's order.
std::vector<std::string> Operations(const std::string& listener) {
  const auto doc = nlohmann::ordered_json::parse(OpenApiDescription(listener));
  std::vector<std::string> out;
  for (const auto& [path, methods] : doc.at("paths").items()) {
    for (const auto& [method, op] : methods.items()) {
      EXPECT_FALSE(op.at("description").get<std::string>().empty());
      out.push_back(path + " " + method + " " + op.at("operationId").get<std::string>());
    }
  }
  return out;
}

TEST(OpenApiDescriptionTest, ListsEachListenersOperationsInOrder) {
  EXPECT_EQ(Operations("inference"),
            (std::vector<std::string>{
                "/ping get ping", "/predictions/{model_name} post predictions",
                "/predictions/{model_name} options predictionsApi",
                "/predictions/{model_name}/{model_version} post version_predictions",
                "/invocations post invocations", "/api-description get apiDescription"}));
  EXPECT_EQ(Operations("management"),
            (std::vector<std::string>{
                "/models get listModels", "/models post registerModel",
                "/models/{model_name} get describeModel", "/models/{model_name} put setAutoScale",
                "/models/{model_name} delete unregisterModel",
                "/models/{model_name} options modelManagementApi",
                "/models/{model_name}/{model_version} get describeModelVersion",
                "/models/{model_name}/{model_version} put setAutoScaleVersion",
                "/models/{model_name}/{model_version} delete unregisterModelVersion",
                "/models/{model_name}/{model_version}/set-default put setDefault",
                "/api-description get apiDescription"}));
  EXPECT_EQ(Operations("metrics"), (std::vector<std::string>{"/metrics get metrics"}));
  EXPECT_EQ(Operations("other"), Operations("metrics"));
  const auto metrics = nlohmann::ordered_json::parse(OpenApiDescription("metrics"));
  EXPECT_EQ(metrics["paths"]["/metrics"]["get"]["description"],
            "Metrics in the Prometheus text format; filter with name[].");
  EXPECT_EQ(metrics["info"]["title"], "tserve metrics API");
}

}  // namespace
}  // namespace tserve::api
