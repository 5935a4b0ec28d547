#include "api/management_api.h"

#include <unistd.h>

#include <spdlog/spdlog.h>
#include <chrono>
#include <ctime>
#include <nlohmann/json.hpp>
#include <optional>

#include "api/errors.h"
#include "api/openapi.h"
#include "common/json_limits.h"
#include "common/strings.h"
#include "serving/model_fetcher.h"

namespace tserve::api {

namespace {

using Json = nlohmann::ordered_json;

// The request's parameters: query string, then a form body (curl -d), then a JSON object
// body. Later sources do not override earlier ones. A JSON body that does not parse, or is
// nested deeper than kMaxJsonDepth, makes status() an InvalidArgument.
class Params {
 public:
  explicit Params(const http::Request& request) {
    for (auto& [k, v] : http::ParseQuery(request.query)) values_.emplace(k, v);
    const std::string_view type = request.Header("Content-Type");
    const std::string_view body = request.body;
    if (body.empty()) return;
    if (EqualsIgnoreCase(TrimWhitespace(type.substr(0, type.find(';'))), "application/json")) {
      StatusOr<Json> j = ParseOrderedJsonLimited(body);
      if (!j.ok()) {
        status_ = Status::InvalidArgument("Invalid request body: " + j.status().message());
        return;
      }
      if (j->is_object()) {
        for (auto& [k, v] : j->items()) {
          values_.emplace(k, v.is_string() ? v.get<std::string>() : v.dump());
        }
      }
      return;
    }
    // Form bodies: curl -d sends application/x-www-form-urlencoded; accept a body without
    // a type the same way, as TorchServe's decoder does.
    for (auto& [k, v] : http::ParseQuery(body)) values_.emplace(k, v);
  }

  const Status& status() const { return status_; }
  std::optional<std::string> Get(const std::string& key) const {
    auto it = values_.find(key);
    if (it == values_.end()) return std::nullopt;
    return it->second;
  }
  // Absent or empty (TorchServe's clients send "limit=" for "the default"): nullopt;
  // present but not an integer in [min, kMaxParam]: an error naming the parameter (TorchServe
  // silently used the default; a deliberate difference, docs/api.md).
  static constexpr int64_t kMaxParam = 1000000;
  StatusOr<std::optional<int>> Int(const std::string& key, int64_t min = 0) const {
    auto v = Get(key);
    if (!v || v->empty()) return std::optional<int>();
    auto n = ParseInt64(*v);
    if (!n || *n < min || *n > kMaxParam) {
      return Status::InvalidArgument(
          "Invalid value for parameter " + key + ": \"" + *v + "\"" +
          (min == 0 ? " (expected a non-negative integer)" : " (expected an integer)"));
    }
    return std::optional<int>(static_cast<int>(*n));
  }
  StatusOr<std::optional<bool>> Bool(const std::string& key) const {
    auto v = Get(key);
    if (!v || v->empty()) return std::optional<bool>();
    auto b = ParseBool(*v);
    if (!b) {
      return Status::InvalidArgument("Invalid value for parameter " + key + ": \"" + *v +
                                     "\" (expected true or false)");
    }
    return std::optional<bool>(*b);
  }

 private:
  Status status_;
  std::multimap<std::string, std::string> values_;
};

// TorchServe's answer when workers did not come up for a synchronous register or scale; the
// version reads "null" when the request named none (TorchServe prints its null reference).
http::Response WorkersFailed(const std::string& name, const std::string& version) {
  return ErrorFromStatus(Status::Internal("Failed to start workers for model " + name +
                                          " version: " + (version.empty() ? "null" : version)));
}

// A registered archive that does not load: a part of it that is missing (a plugin file, a
// model file) means, for the client, that the model is not found (TorchServe's 404
// ModelNotFoundException); every other kind is reported as it is.
Status LoadError(const Status& s) {
  if (s.code() == StatusCode::kNotFound) return Status::ModelNotFound(s.message());
  return s;
}

// TorchServe's Manifest.RuntimeType values.
bool IsKnownRuntime(std::string_view runtime) {
  for (std::string_view r : {"python", "python2", "python3", "LSP"}) {
    if (runtime == r) return true;
  }
  return false;
}

// A ".." component in a path or file:// URL: TorchServe's 404 before anything looks further.
bool HasRelativePart(const std::string& url) {
  if (serving::IsDownloadUrl(url)) return false;
  for (const std::string& form : {url, PercentDecode(url, /*plus_as_space=*/false)}) {
    for (std::string_view part : SplitString(form, '/')) {
      if (part == "..") return true;
    }
  }
  return false;
}

// Load errors name the archive by the path the fetcher resolved it to, inside the model
// store; the client gave a name or URL and must not learn where the store is (issue 7 #15).
Status NameArchiveAsGiven(const Status& s, const std::string& path, const std::string& as_given) {
  std::string message = s.message();
  for (size_t at = message.find(path); !path.empty() && at != std::string::npos;
       at = message.find(path, at + as_given.size())) {
    message.replace(at, path.size(), as_given);
  }
  return Status(s.code(), std::move(message));
}

http::Response MethodNotAllowed() {
  return ErrorForStatus(405, "Requested method is not allowed, please refer to API document.");
}

std::string Iso8601(std::chrono::system_clock::time_point t) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  time_t secs = static_cast<time_t>(ms / 1000);
  struct tm tm_utc;
  gmtime_r(&secs, &tm_utc);
  char buf[40];
  size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm_utc);
  snprintf(buf + n, sizeof(buf) - n, ".%03dZ", static_cast<int>(ms % 1000));
  return buf;
}

Json DescribeModel(const serving::ModelVersion& version) {
  const serving::ModelDescription m = version.Describe();
  Json j;
  j["modelName"] = m.name;
  j["modelVersion"] = m.version;
  j["modelUrl"] = m.url;
  j["runtime"] = m.runtime;
  j["minWorkers"] = m.min_workers;
  j["maxWorkers"] = m.max_workers;
  j["batchSize"] = m.settings.batch_size;
  j["maxBatchDelay"] = m.settings.max_batch_delay_ms;
  j["responseTimeout"] = m.settings.response_timeout_s;
  j["loadedAtStartup"] = m.loaded_at_startup;
  j["workers"] = Json::array();
  for (const auto& w : m.workers) {
    Json wj;
    wj["id"] = std::to_string(w.id);
    wj["startTime"] = Iso8601(w.start_time);
    wj["status"] = serving::WorkerStateName(w.state);
    // Workers are threads of this process: per-worker memory and pid are not separate.
    wj["memoryUsage"] = 0;
    wj["pid"] = static_cast<int>(getpid());
    wj["gpu"] = false;
    wj["gpuUsage"] = "N/A";
    j["workers"].push_back(std::move(wj));
  }
  Json q;
  const size_t depth = m.queue_depth;
  q["remainingCapacity"] = m.queue_capacity - std::min(depth, m.queue_capacity);
  q["pendingRequests"] = depth;
  j["jobQueueStatus"] = std::move(q);
  return j;
}

}  // namespace

void ManagementApi::RegisterRoutes(http::Router* router) {
  using M = http::Method;
  auto bind = [this](void (ManagementApi::*fn)(http::Request&, http::Responder)) {
    return [this, fn](http::Request& req, http::Responder r) { (this->*fn)(req, std::move(r)); };
  };
  router->Add(M::kGet, "/models", bind(&ManagementApi::List));
  router->Add(M::kPost, "/models", bind(&ManagementApi::Register));
  router->Add(M::kGet, "/models/{name}", bind(&ManagementApi::Describe));
  router->Add(M::kGet, "/models/{name}/{version}", bind(&ManagementApi::Describe));
  router->Add(M::kPut, "/models/{name}", bind(&ManagementApi::Scale));
  router->Add(M::kPut, "/models/{name}/{version}", bind(&ManagementApi::Scale));
  router->Add(M::kDelete, "/models/{name}", bind(&ManagementApi::Unregister));
  router->Add(M::kDelete, "/models/{name}/{version}", bind(&ManagementApi::Unregister));
  router->Add(M::kPut, "/models/{name}/{version}/set-default", bind(&ManagementApi::SetDefault));
  // OPTIONS: the model's management OpenAPI, 404 for an unknown model (as TorchServe).
  for (const char* path : {"/models/{name}", "/models/{name}/{version}"}) {
    router->Add(M::kOptions, path, [this](http::Request& req, http::Responder r) {
      const std::string name(req.path_params[0]);
      const std::string version = req.path_params.size() > 1 ? std::string(req.path_params[1]) : "";
      auto model = models_->Find(name, version);
      if (!model.ok()) return r.Send(ErrorFromStatus(model.status()));
      http::Response resp;
      resp.body = ModelManagementOpenApi((*model)->name()) + "\n";
      r.Send(std::move(resp));
    });
  }
}

void ManagementApi::List(http::Request& request, http::Responder responder) {
  Params p(request);
  if (!p.status().ok()) return responder.Send(ErrorFromStatus(p.status()));
  auto limit = p.Int("limit", -Params::kMaxParam);
  if (!limit.ok()) return responder.Send(ErrorFromStatus(limit.status()));
  auto token = p.Int("next_page_token", -Params::kMaxParam);
  if (!token.ok()) return responder.Send(ErrorFromStatus(token.status()));
  // TorchServe (ApiUtils.getModelList): limit defaults to 100, and one over 100 or below 0
  // is 100; a negative token is 0. The token is an offset, and a page that ends at or
  // before the last model names the next offset (even when nothing follows).
  int n = limit->value_or(kMaxPageSize);
  if (n < 0 || n > kMaxPageSize) n = kMaxPageSize;
  const size_t offset = static_cast<size_t>(std::max(0, token->value_or(0)));
  auto all = models_->List();
  Json j;
  if (offset + static_cast<size_t>(n) <= all.size()) {
    j["nextPageToken"] = std::to_string(offset + static_cast<size_t>(n));
  }
  j["models"] = Json::array();
  for (size_t i = offset; i < all.size() && i < offset + static_cast<size_t>(n); ++i) {
    Json m;
    m["modelName"] = all[i]->name();
    m["modelUrl"] = all[i]->url();
    j["models"].push_back(std::move(m));
  }
  responder.Send(JsonResponse(200, j));
}

void ManagementApi::Describe(http::Request& request, http::Responder responder) {
  const std::string name(request.path_params[0]);
  const std::string version =
      request.path_params.size() > 1 ? std::string(request.path_params[1]) : "";
  Json out = Json::array();
  if (version == "all") {
    auto versions = models_->Versions(name);
    if (!versions.ok()) return responder.Send(ErrorFromStatus(versions.status()));
    for (const auto& m : *versions) out.push_back(DescribeModel(*m));
  } else {
    auto m = models_->Find(name, version);
    if (!m.ok()) return responder.Send(ErrorFromStatus(m.status()));
    out.push_back(DescribeModel(**m));
  }
  responder.Send(JsonResponse(200, out));
}

void ManagementApi::Scale(http::Request& request, http::Responder responder) {
  const std::string name(request.path_params[0]);
  const std::string version =
      request.path_params.size() > 1 ? std::string(request.path_params[1]) : "";
  Params p(request);
  if (!p.status().ok()) return responder.Send(ErrorFromStatus(p.status()));
  auto min = p.Int("min_worker");
  if (!min.ok()) return responder.Send(ErrorFromStatus(min.status()));
  auto max = p.Int("max_worker");
  if (!max.ok()) return responder.Send(ErrorFromStatus(max.status()));
  auto sync = p.Bool("synchronous");
  if (!sync.ok()) return responder.Send(ErrorFromStatus(sync.status()));
  auto found = models_->Find(name, version);
  if (!found.ok()) return responder.Send(ErrorFromStatus(found.status()));
  std::shared_ptr<serving::ModelVersion> model = std::move(*found);
  const int min_workers = min->value_or(1);
  const int max_workers = max->value_or(min_workers);
  if (max_workers < min_workers) {
    return responder.Send(
        ErrorFromStatus(Status::InvalidArgument("max_worker cannot be less than min_worker.")));
  }
  if (!sync->value_or(false)) {
    Status s = model->Scale(min_workers, max_workers, false, nullptr);
    if (!s.ok()) return responder.Send(ErrorFromStatus(s));  // over a worker limit
    return responder.Send(JsonStatus(202, "Processing worker updates..."));
  }
  // `done` answers every outcome, the refusal of a worker limit included.
  auto done = [r = std::move(responder), name, version, min_workers](const Status& status,
                                                                     int /*workers*/) mutable {
    // Over a worker limit, or shutting down.
    if (status.IsInvalidArgument() || status.IsUnavailable()) {
      return r.Send(ErrorFromStatus(status));
    }
    // A worker thread that could not start, or a worker that failed to load or was not
    // ready within the model's startup timeout: TorchServe's 500.
    if (!status.ok()) return r.Send(WorkersFailed(name, version));
    // TorchServe names min_worker here, whatever already ran.
    std::string msg = "Workers scaled to " + std::to_string(min_workers) + " for model: " + name;
    if (!version.empty()) msg += ", version: " + version;
    r.Send(JsonStatus(200, msg));
  };
  (void)model->Scale(min_workers, max_workers, true, std::move(done));  // done answers
}

void ManagementApi::Register(http::Request& request, http::Responder responder) {
  if (!options_.enable_model_api) return responder.Send(MethodNotAllowed());
  Params p(request);
  if (!p.status().ok()) return responder.Send(ErrorFromStatus(p.status()));
  auto url = p.Get("url");
  if (!url || url->empty()) {
    return responder.Send(ErrorFromStatus(Status::InvalidArgument("Parameter url is required.")));
  }
  if (url->size() > serving::kMaxUrlLength) {
    return responder.Send(ErrorFromStatus(Status::InvalidArgument(
        "Parameter url is " + std::to_string(url->size()) + " characters long; at most " +
        std::to_string(serving::kMaxUrlLength) + " are accepted.")));
  }
  serving::ModelManager::LoadOverrides o;
  // TorchServe checks the runtime before it looks at the URL.
  if (auto runtime = p.Get("runtime"); runtime && !runtime->empty()) {
    if (!IsKnownRuntime(*runtime)) {
      return responder.Send(
          ErrorFromStatus(Status::InvalidArgument("Invalid RuntimeType value: " + *runtime)));
    }
    o.runtime = *runtime;
  }
  if (auto handler = p.Get("handler"); handler && !handler->empty()) o.handler = *handler;
  for (auto [key, field] :
       {std::pair{"batch_size", &o.batch_size}, std::pair{"max_batch_delay", &o.max_batch_delay_ms},
        std::pair{"initial_workers", &o.initial_workers},
        std::pair{"response_timeout", &o.response_timeout_s},
        std::pair{"startup_timeout", &o.startup_timeout_s}}) {
    auto v = p.Int(key);
    if (!v.ok()) return responder.Send(ErrorFromStatus(v.status()));
    *field = *v;
  }
  for (auto [key, field] : {std::pair{"batch_size", &o.batch_size},
                            std::pair{"response_timeout", &o.response_timeout_s},
                            std::pair{"startup_timeout", &o.startup_timeout_s}}) {
    if (*field && **field < 1) {
      return responder.Send(ErrorFromStatus(Status::InvalidArgument(
          std::string("Invalid value for parameter ") + key + ": " + std::to_string(**field))));
    }
  }
  auto sync = p.Bool("synchronous");
  if (!sync.ok()) return responder.Send(ErrorFromStatus(sync.status()));
  const int workers = o.initial_workers.value_or(0);  // TorchServe: 0 unless asked
  o.initial_workers = workers;
  if (HasRelativePart(*url)) {
    return responder.Send(
        ErrorFromStatus(Status::ModelNotFound("Relative path is not allowed in url: " + *url)));
  }

  if (!options_.fetch) {
    return responder.Send(
        ErrorFromStatus(Status::Internal("model registration is not configured")));
  }
  // Fetching (a download) and loading (unzipping) are slow: on a registration thread.
  auto name = p.Get("model_name").value_or("");
  // TorchServe's RegisterModelRequest: synchronous unless asked otherwise (its API document
  // says false; its code, which clients see, says true).
  const bool synchronous = sync->value_or(true);
  RunRegistration(std::move(responder), [this, u = *url, name, o, workers,
                                         synchronous](http::Responder r) mutable {
    auto path = options_.fetch(u, cancel_);
    if (!path.ok()) return r.Send(ErrorFromStatus(path.status()));
    const bool downloaded = serving::IsDownloadUrl(u);
    serving::ModelManager::LoadOverrides overrides = o;
    // Deleted when the model is unregistered, as TorchServe deletes what it downloaded.
    if (downloaded) {
      overrides.downloaded_archive = *path;
      overrides.model_url = u;  // TorchServe's modelUrl of a download is its URL
    }
    auto model = models_->LoadAndGet({name, *path}, /*at_startup=*/false, overrides);
    if (!model.ok()) {
      // A download is this registration's own copy (never an existing file): a failed
      // registration leaves nothing behind, so a retry behaves as the first try.
      if (downloaded) ::unlink(path->c_str());
      const Status error = LoadError(NameArchiveAsGiven(model.status(), *path, u));
      spdlog::warn("Registration of {} failed: {}", u, error.message());
      return r.Send(ErrorFromStatus(error));
    }
    const std::string head =
        "Model \"" + (*model)->name() + "\" Version: " + (*model)->version() + " registered with ";
    if (workers == 0) {
      return r.Send(JsonStatus(200, head + "0 initial workers. Use scale workers API to "
                                           "add workers for the model."));
    }
    if (!synchronous) return r.Send(JsonStatus(202, "Processing worker updates..."));
    std::shared_ptr<serving::ModelVersion> m = *model;
    // The callback answers every outcome, the refusal of a worker limit included. When the
    // workers cannot start, the registration is taken back whole (TorchServe unregisters
    // it) before the 500.
    (void)m->Scale(
        workers, std::max(workers, m->max_workers()), true,
        [this, r = std::move(r), head, m, workers](const Status& status, int /*ready*/) mutable {
          if (status.IsUnavailable()) return r.Send(ErrorFromStatus(status));
          if (status.ok()) {
            return r.Send(JsonStatus(200, head + std::to_string(workers) + " initial workers"));
          }
          http::Response failed = status.IsInvalidArgument()
                                      ? ErrorFromStatus(status)  // a worker limit
                                      : WorkersFailed(m->name(), m->version());
          models_->DiscardAsync(m, [r = std::move(r), failed = std::move(failed)]() mutable {
            r.Send(std::move(failed));
          });
        });
  });
}

ManagementApi::~ManagementApi() { Shutdown(); }

void ManagementApi::RunRegistration(http::Responder responder, RegistrationTask task) {
  Status refused;
  {
    std::lock_guard<std::mutex> lock(reg_mu_);
    if (reg_stop_) {
      refused = Status::Unavailable("Registration refused: the server is shutting down");
    } else if (reg_in_progress_ >= kMaxConcurrentRegistrations) {
      refused = Status::ResourceExhausted("Too many registrations in progress: at most " +
                                          std::to_string(kMaxConcurrentRegistrations) +
                                          " run at once; retry when one has finished");
    } else {
      reg_tasks_.push_back({std::move(responder), std::move(task)});
      ++reg_in_progress_;
      if (reg_threads_.size() < static_cast<size_t>(reg_in_progress_)) {
        reg_threads_.emplace_back([this] { RegistrationLoop(); });
      }
    }
  }
  // Answered outside the lock: sending may run the transport's code.
  if (!refused.ok()) return responder.Send(ErrorFromStatus(refused));
  reg_cv_.notify_one();
}

void ManagementApi::RegistrationLoop() {
  std::unique_lock<std::mutex> lock(reg_mu_);
  while (true) {
    reg_cv_.wait(lock, [this] { return reg_stop_ || !reg_tasks_.empty(); });
    if (reg_tasks_.empty()) return;  // stopping and nothing left
    Registration next = std::move(reg_tasks_.front());
    reg_tasks_.pop_front();
    lock.unlock();
    next.task(std::move(next.responder));
    next.task = nullptr;  // its captures (a Responder moved on) go before the slot is free
    lock.lock();
    --reg_in_progress_;
  }
}

void ManagementApi::Shutdown() {
  cancel_ = true;
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(reg_mu_);
    reg_stop_ = true;
    threads.swap(reg_threads_);
  }
  reg_cv_.notify_all();
  for (std::thread& t : threads) t.join();
}

void ManagementApi::Unregister(http::Request& request, http::Responder responder) {
  if (!options_.enable_model_api) return responder.Send(MethodNotAllowed());
  const std::string name(request.path_params[0]);
  const std::string version =
      request.path_params.size() > 1 ? std::string(request.path_params[1]) : "";
  std::string removed;
  // The callback answers every outcome, a refusal included.
  (void)models_->UnregisterAsync(
      name, version,
      [r = std::move(responder), name](const Status& status) mutable {
        if (!status.ok()) return r.Send(ErrorFromStatus(status));
        r.Send(JsonStatus(200, "Model \"" + name + "\" unregistered"));
      },
      &removed);
}

void ManagementApi::SetDefault(http::Request& request, http::Responder responder) {
  const std::string name(request.path_params[0]);
  const std::string version(request.path_params[1]);
  Status s = models_->SetDefault(name, version);
  if (!s.ok()) return responder.Send(ErrorFromStatus(s));
  responder.Send(JsonStatus(200, "Default version successfully updated for model \"" + name +
                                     "\" to \"" + version + "\""));
}

namespace {

// Each listener's operations, one a line: "<method> <path> <operationId> <description>",
// under a line naming the listener ("<listener>:"), in the order the description lists them.
constexpr std::string_view kOperations = R"(inference:
get /ping ping Health of the server and its models.
post /predictions/{model_name} predictions Predict with a model.
post /predictions/{model_name}/{model_version} version_predictions Predict with a version of a model.
options /predictions/{model_name} predictionsApi The model's OpenAPI description.
post /invocations invocations Predict with the model named by model_name (query, header or form).
get /api-description apiDescription This description (deprecated).
management:
get /models listModels List registered models (paginated).
post /models registerModel Register a model from a URL.
get /models/{model_name} describeModel Describe a model.
put /models/{model_name} setAutoScale Scale a model's workers.
delete /models/{model_name} unregisterModel Unregister a model.
get /models/{model_name}/{model_version} describeModelVersion Describe a model version (or all).
put /models/{model_name}/{model_version} setAutoScaleVersion Scale a model version's workers.
delete /models/{model_name}/{model_version} unregisterModelVersion Unregister a model version.
put /models/{model_name}/{model_version}/set-default setDefault Make a version the model's default.
options /models/{model_name} modelManagementApi The model's management OpenAPI description.
get /api-description apiDescription This description (deprecated).
metrics:
get /metrics metrics Metrics in the Prometheus text format; filter with name[].)";

}  // namespace

std::string OpenApiDescription(const std::string& listener) {
  Json j;
  j["openapi"] = "3.0.1";
  j["info"] = {{"title", "tserve " + listener + " API"},
               {"description", "TorchServe-compatible " + listener + " API served by tserve"},
               {"version", "0.12.0"}};
  // A listener other than inference and management is the metrics one.
  const std::string_view of = listener == "inference" || listener == "management"
                                  ? std::string_view(listener)
                                  : std::string_view("metrics");
  Json paths = Json::object();
  std::string_view section;
  for (std::string_view line : SplitString(kOperations, '\n')) {
    if (line.back() == ':') {
      section = line.substr(0, line.size() - 1);
      continue;
    }
    if (section != of) continue;
    // Three words, then the description.
    std::string_view word[3];
    for (std::string_view& w : word) {
      const size_t space = line.find(' ');
      w = line.substr(0, space);
      line.remove_prefix(space + 1);
    }
    Json o;
    o["operationId"] = word[2];
    o["description"] = line;
    o["responses"] = {{"200", {{"description", "OK"}}}};
    paths[std::string(word[1])][std::string(word[0])] = std::move(o);
  }
  j["paths"] = std::move(paths);
  return j.dump(2);
}

}  // namespace tserve::api
