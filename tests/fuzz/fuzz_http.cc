// The HTTP request path without a socket: bytes go through Boost.Beast's request parser with
// the server's limits, the way src/http/server.cc's Connection::Parse/Dispatch feed it
// (pipelined requests included), become http::Requests, and are routed through the real
// routers of the three listeners: inference (a noop model served by a real ModelManager and
// worker pool), management (read-only methods: list, describe, OpenAPI; scaling and
// (un)registration would change the state between inputs) and metrics (name[] filters,
// gzip). The first byte picks the listener: 'I' inference, 'M' management, 'P' metrics,
// anything else by its value mod 3.
// Checks: every request gets exactly one response, with a status in 100..599, and an
// error with a JSON body is valid JSON with TorchServe's {"code","type","message"}.
#include <stdlib.h>

#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "api/errors.h"
#include "api/inference_api.h"
#include "api/management_api.h"
#include "api/metrics_api.h"
#include "backend/handler_factory.h"
#include "fuzz_util.h"
#include "http/request.h"
#include "http/router.h"
#include "metrics/metrics_yaml.h"
#include "metrics/registry.h"
#include "serving/model_manager.h"

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using namespace tserve;

namespace {

// The server's defaults (http::ServerOptions, config max_request_size / max_header_size).
constexpr uint32_t kMaxHeaderSize = 8192;
constexpr uint64_t kMaxBodySize = 6553500;
constexpr int kMaxPipelined = 8;

using NativeRequest = bhttp::request<bhttp::string_body>;

std::string_view LookupHeader(const void* native, std::string_view name) {
  const auto& msg = *static_cast<const NativeRequest*>(native);
  auto it = msg.find(beast::string_view(name.data(), name.size()));
  if (it == msg.end()) return {};
  return {it->value().data(), it->value().size()};
}

class WaitTarget final : public http::ResponseTarget {
 public:
  void Deliver(http::Response response) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++deliveries_;
    response_ = std::move(response);
    cv_.notify_all();
  }
  // The response, once delivered; aborts when none comes.
  http::Response Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(20), [&] { return deliveries_ > 0; })) {
      fuzz::Fail("a request got no response within 20 s");
    }
    return response_;
  }
  int deliveries() {
    std::lock_guard<std::mutex> lock(mu_);
    return deliveries_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int deliveries_ = 0;
  http::Response response_;
};

struct World {
  std::string dir;
  backend::HandlerFactory handlers;
  std::unique_ptr<metrics::Registry> registry;
  std::unique_ptr<serving::ModelManager> models;
  std::unique_ptr<api::InferenceApi> inference_api;
  std::unique_ptr<api::ManagementApi> management_api;
  std::unique_ptr<api::MetricsApi> metrics_api;
  std::unique_ptr<http::Router> routers[3];  // inference, management, metrics
};

void AddOpenApiRoute(http::Router* router, const std::string& listener) {
  router->Add(http::Method::kOptions, "/", [listener](http::Request&, http::Responder r) {
    http::Response resp;
    resp.body = api::OpenApiDescription(listener);
    r.Send(std::move(resp));
  });
}

void WriteFile(const std::filesystem::path& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) fuzz::Fail("cannot write the noop model");
}

World* MakeWorld() {
  auto* w = new World;
  const char* tmp = getenv("TMPDIR");
  std::string pattern =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/tserve-fuzz-http-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) fuzz::Fail("mkdtemp");
  w->dir = pattern;
  const std::filesystem::path store = w->dir + "/store";
  std::filesystem::create_directories(store / "noop" / "MAR-INF");
  WriteFile(store / "noop" / "MAR-INF" / "MANIFEST.json",
            R"({"runtime": "python", "model": {"modelName": "noop", "handler": "noop",)"
            R"( "modelVersion": "1.0", "configFile": "model-config.yaml"}})");
  WriteFile(store / "noop" / "model-config.yaml",
            "minWorkers: 1\nmaxWorkers: 1\nbatchSize: 1\nmaxBatchDelay: 0\n");

  w->registry = std::make_unique<metrics::Registry>();
  auto families = metrics::ParseMetricsYaml(metrics::DefaultMetricsYaml(), "metrics.yaml");
  if (!families.ok() || !metrics::AddFamilies(std::move(*families), w->registry.get()).ok()) {
    fuzz::Fail("default metrics.yaml");
  }
  backend::RegisterNoopHandler(&w->handlers);
  serving::ModelManager::Options mo;
  mo.model_store = store.string();
  mo.extract_root = w->dir + "/extract";
  mo.hostname = "fuzzhost";
  mo.default_workers = 1;
  w->models = std::make_unique<serving::ModelManager>(mo, &w->handlers, w->registry.get());
  if (!w->models->Load({"noop", (store / "noop").string()}, true).ok()) fuzz::Fail("noop load");

  w->inference_api = std::make_unique<api::InferenceApi>(w->models.get());
  api::ManagementApi::Options mgmt;
  mgmt.enable_model_api = true;
  // Generic: the fetcher may also take a cancellation flag.
  mgmt.fetch = [](const std::string& url, const auto&...) -> StatusOr<std::string> {
    return Status::NotFound("Given URL " + url + " does not match any allowed URL(s)");
  };
  w->management_api = std::make_unique<api::ManagementApi>(w->models.get(), std::move(mgmt));
  w->metrics_api = std::make_unique<api::MetricsApi>(w->registry.get(), api::MetricsApi::Options{});
  for (auto& r : w->routers) r = std::make_unique<http::Router>(&api::ErrorForStatus);
  w->inference_api->RegisterRoutes(w->routers[0].get());
  w->management_api->RegisterRoutes(w->routers[1].get());
  w->metrics_api->RegisterRoutes(w->routers[2].get());
  AddOpenApiRoute(w->routers[0].get(), "inference");
  AddOpenApiRoute(w->routers[1].get(), "management");
  AddOpenApiRoute(w->routers[2].get(), "metrics");
  // Wait for the noop worker, so that predictions do not race its start.
  for (int i = 0; i < 2000 && !w->models->Healthy(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return w;
}

World& TheWorld() {
  static World* world = MakeWorld();  // lives for the process (worker threads use it)
  return *world;
}

void CheckResponse(const http::Response& r) {
  TSERVE_FUZZ_CHECK(r.status >= 100 && r.status <= 599);
  if (r.status < 400 || r.content_type != "application/json" || r.body.empty()) return;
  auto j = nlohmann::json::parse(r.body, nullptr, /*allow_exceptions=*/false);
  TSERVE_FUZZ_CHECK(!j.is_discarded());
  TSERVE_FUZZ_CHECK(j.is_object());
  if (j.contains("code")) {
    TSERVE_FUZZ_CHECK(j["code"] == r.status);
    TSERVE_FUZZ_CHECK(j.contains("type") && j.contains("message"));
  }
}

// Connection::Dispatch's conversion of a parsed message into an http::Request.
void Dispatch(NativeRequest& message, http::Router* router, bool read_only) {
  http::Request request;
  beast::string_view method = message.method_string();
  request.method_text = std::string_view(method.data(), method.size());
  request.method = http::ParseMethod(request.method_text);
  if (read_only && request.method != http::Method::kGet && request.method != http::Method::kHead &&
      request.method != http::Method::kOptions) {
    return;
  }
  beast::string_view target = message.target();
  std::string_view t(target.data(), target.size());
  if (t.size() > 7 && (t.substr(0, 7) == "http://" || t.substr(0, 8) == "https://")) {
    size_t slash = t.find('/', t.find("//") + 2);
    t = slash == std::string_view::npos ? std::string_view("/") : t.substr(slash);
  }
  request.target = t;
  size_t q = t.find('?');
  request.path = t.substr(0, q);
  request.query = q == std::string_view::npos ? std::string_view() : t.substr(q + 1);
  request.version = static_cast<int>(message.version());
  request.body = std::move(message.body());
  request.BindHeaders(&LookupHeader, &message);

  // The query decoder on its own too (router handlers use it on their parameters).
  for (const auto& [name, value] : http::ParseQuery(request.query)) {
    TSERVE_FUZZ_CHECK(name.size() <= request.query.size() && value.size() <= request.query.size());
  }
  (void)http::AcceptsGzip(request.Header("Accept-Encoding"));

  auto target_ptr = std::make_shared<WaitTarget>();
  router->Handle(request, http::Responder(target_ptr));
  CheckResponse(target_ptr->Wait());
  TSERVE_FUZZ_CHECK(target_ptr->deliveries() == 1);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  TheWorld();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  World& w = TheWorld();
  const int listener = data[0] == 'I' ? 0 : data[0] == 'M' ? 1 : data[0] == 'P' ? 2 : data[0] % 3;
  http::Router* router = w.routers[listener].get();
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);

  for (int n = 0; n < kMaxPipelined && !input.empty(); ++n) {
    bhttp::request_parser<bhttp::string_body> parser;
    parser.eager(true);
    parser.header_limit(kMaxHeaderSize);
    parser.body_limit(kMaxBodySize);
    beast::error_code ec;
    while (!input.empty() && !parser.is_done()) {
      size_t used = parser.put(boost::asio::const_buffer(input.data(), input.size()), ec);
      input.remove_prefix(used);
      if (ec == bhttp::error::need_more) {
        ec = {};
        break;
      }
      if (ec || used == 0) break;
    }
    if (ec) {
      // The server answers 431 / 413 / 400 through the API's error factory and closes.
      const int status = ec == bhttp::error::header_limit ? 431
                         : ec == bhttp::error::body_limit ? 413
                                                          : 400;
      CheckResponse(api::ErrorForStatus(status, "Malformed HTTP request: " + ec.message()));
      return 0;
    }
    if (!parser.is_done()) return 0;  // the connection would wait for more bytes
    NativeRequest message = parser.release();
    const bool keep_alive = message.keep_alive();
    Dispatch(message, router, listener == 1);
    if (!keep_alive) return 0;
  }
  return 0;
}
