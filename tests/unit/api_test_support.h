#pragma once

// What the API tests share: a real ModelManager over model folders made on the fly (fake
// handlers registered by name), requests routed as the server would, and the answers caught
// in a future (workers answer from their own threads).

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <string>

#include "api/errors.h"
#include "common/strings.h"
#include "http/router.h"
#include "metrics/metrics_yaml.h"
#include "serving/model_manager.h"

namespace tserve::api::apitest {

using Headers = std::map<std::string, std::string>;

// A batch handler ("echo") that answers each request with "<content type>|<body>".
class EchoHandler final : public Handler {
 public:
  void Initialize(const ModelContext&) override {}
  void Preprocess(Batch&) override {}
  void Inference(Batch&) override {}
  void Postprocess(Batch& b) override {
    for (const auto& r : b.requests) {
      b.responses.push_back(
          {200, "text/plain", std::string(r.content_type) + "|" + std::string(r.body)});
    }
  }
};

// Delivers the response into a future; Leave() acts out the client going away.
class FutureTarget final : public http::ResponseTarget {
 public:
  void Deliver(http::Response response) override { promise_.set_value(std::move(response)); }
  std::future<http::Response> future() { return promise_.get_future(); }
  void Leave() { MarkClientGone(); }

 private:
  std::promise<http::Response> promise_;
};

inline std::string_view LookupHeader(const void* native, std::string_view name) {
  for (const auto& [key, value] : *static_cast<const Headers*>(native)) {
    if (EqualsIgnoreCase(key, name)) return value;
  }
  return {};
}

// A fixture's models: a temporary model store, the default metrics.yaml's families, and a
// ModelManager whose handlers are the ones registered on factory_.
class ModelHarness : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tserve_api_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    auto fams = metrics::ParseMetricsYaml(metrics::DefaultMetricsYaml(), "metrics.yaml");
    ASSERT_TRUE(fams.ok());
    ASSERT_TRUE(metrics::AddFamilies(*fams, &registry_).ok());
    serving::ModelManager::Options o;
    o.model_store = root_;
    o.extract_root = root_ + "/extract";
    o.hostname = "h";
    manager_ = std::make_unique<serving::ModelManager>(o, &factory_, &registry_);
  }
  void TearDown() override {
    manager_.reset();
    std::filesystem::remove_all(root_);
  }

  // Registers model `name` version 1.0 served by `handler` with `workers` workers, ready
  // when it returns.
  void AddModel(const std::string& name, int workers, const std::string& handler = "echo") {
    const std::string dir = root_ + "/" + name;
    std::filesystem::create_directories(dir + "/MAR-INF");
    std::ofstream(dir + "/MAR-INF/MANIFEST.json")
        << R"({"model": {"modelName": ")" << name << R"(", "modelVersion": "1.0", "handler": ")"
        << handler << R"("}})";
    serving::LoadOverrides o;
    o.initial_workers = workers;
    auto v = manager_->LoadAndGet({"", dir}, false, o);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    if (workers == 0) return;
    std::promise<Status> ready;
    ASSERT_TRUE(
        (*v)->Scale(workers, workers, true, [&ready](const Status& s, int) { ready.set_value(s); })
            .ok());
    ASSERT_TRUE(ready.get_future().get().ok());
  }

  // Routes a request through router_; its answer comes later (another thread) or already.
  std::future<http::Response> Route(http::Method method, std::string path, std::string body,
                                    Headers headers, std::string_view request_id = {}) {
    path_ = std::move(path);
    headers_ = std::move(headers);
    http::Request request;
    request.method = method;
    request.method_text = http::MethodName(method);
    request.target = path_;
    const size_t q = path_.find('?');
    request.path = std::string_view(path_).substr(0, q);
    request.query = q == std::string::npos ? "" : std::string_view(path_).substr(q + 1);
    request.body = std::move(body);
    request.request_id = request_id;
    request.BindHeaders(&LookupHeader, &headers_);
    auto target = std::make_shared<FutureTarget>();
    auto answer = target->future();
    router_.Handle(request, http::Responder(target));
    return answer;
  }

  std::string root_;
  metrics::Registry registry_;
  backend::HandlerFactory factory_;
  std::unique_ptr<serving::ModelManager> manager_;
  http::Router router_{&ErrorForStatus};
  std::string path_;
  Headers headers_;
};

}  // namespace tserve::api::apitest
