#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/move_only_function.h"
#include "common/status.h"
#include "http/router.h"
#include "serving/model_manager.h"

namespace tserve::api {

// The management listener (port 8081): TorchServe's Management API — list (paginated),
// describe, scale, register, unregister, set-default, and OPTIONS / (OpenAPI).
// Register/unregister answer 405 unless enable_model_api. Parameters come from the query
// string or an application/x-www-form-urlencoded body (curl -d), or a JSON body (nested at
// most kMaxJsonDepth deep, else 400); an empty value means the default, a malformed integer
// is a 400 naming the parameter. Register is synchronous unless synchronous=false (as
// TorchServe's code): it answers 200 once its workers are ready, or 500 "Failed to start
// workers ..." and takes the registration back when one fails to load or startup_timeout
// passes; a synchronous scale answers the same 500 (and keeps the model).
// Registrations (fetch, unzip, load) run on a few registration threads of their own, at
// most kMaxConcurrentRegistrations at once (more answer 503), so a slow download never
// delays scaling or unloading, which run on the manager's control thread.
// Thread safety: handlers run on many I/O threads and answer through the Responder when
// done. Shutdown (or the destructor) must run before the ModelManager shuts down.
class ManagementApi {
 public:
  // Resolves a registration URL to a local archive path inside the model store (allowed
  // URLs, downloads): the URL-fetching policy lives outside the API
  // (serving::RegistrationSource). A download must stop soon after `cancel` becomes true.
  // A failure's kind is what the client is told, through ErrorFromStatus: ModelNotFound
  // (404), DownloadFailed (400 DownloadArchiveException), Internal (500), ...
  using Fetcher =
      std::function<StatusOr<std::string>(const std::string& url, const std::atomic<bool>& cancel)>;

  struct Options {
    bool enable_model_api = false;
    Fetcher fetch;
  };
  // The most models one page of GET /models lists (TorchServe's limit).
  static constexpr int kMaxPageSize = 100;
  // Registrations in progress at once (each may hold a download); more answer 503.
  static constexpr int kMaxConcurrentRegistrations = 4;

  ManagementApi(serving::ModelManager* models, Options options)
      : models_(models), options_(std::move(options)) {}
  ~ManagementApi();
  ManagementApi(const ManagementApi&) = delete;
  ManagementApi& operator=(const ManagementApi&) = delete;
  void RegisterRoutes(http::Router* router);
  // Aborts downloads in progress and waits for every registration to answer (503 for the
  // aborted ones); later registrations answer 503. Idempotent.
  void Shutdown();

 private:
  void List(http::Request& request, http::Responder responder);
  void Describe(http::Request& request, http::Responder responder);
  void Scale(http::Request& request, http::Responder responder);
  void Register(http::Request& request, http::Responder responder);
  void Unregister(http::Request& request, http::Responder responder);
  void SetDefault(http::Request& request, http::Responder responder);
  // A registration's slow part (fetch, load, workers): it owns the Responder and answers
  // every outcome through it.
  using RegistrationTask = MoveOnlyFunction<void(http::Responder responder)>;
  // Runs `task` with `responder` on a registration thread. Refused, it answers the refusal
  // itself through ErrorFromStatus and drops `task`: 503 (ResourceExhausted) when
  // kMaxConcurrentRegistrations are in progress, 503 (Unavailable) after Shutdown.
  void RunRegistration(http::Responder responder, RegistrationTask task);
  void RegistrationLoop();

  serving::ModelManager* models_;
  Options options_;

  std::atomic<bool> cancel_{false};  // set by Shutdown: downloads stop
  struct Registration {
    http::Responder responder;
    RegistrationTask task;
  };
  std::mutex reg_mu_;
  std::condition_variable reg_cv_;
  std::deque<Registration> reg_tasks_;
  int reg_in_progress_ = 0;  // queued or running
  bool reg_stop_ = false;
  std::vector<std::thread> reg_threads_;  // started as needed, up to the cap
};

// The OpenAPI 3 description of one listener's API ("inference", "management", "metrics").
std::string OpenApiDescription(const std::string& listener);

}  // namespace tserve::api
