#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/handler_factory.h"
#include "common/move_only_function.h"
#include "common/mutex.h"
#include "common/status.h"
#include "metrics/registry.h"
#include "serving/controller.h"
#include "serving/handler_metrics.h"
#include "serving/model_archive.h"
#include "serving/model_config.h"
#include "serving/model_metrics.h"
#include "serving/model_store.h"
#include "serving/response_sink.h"
#include "serving/worker_pool.h"

namespace tserve::serving {

// Overrides of a registration (POST /models); unset fields come from model-config.yaml.
struct LoadOverrides {
  std::optional<int> batch_size;
  std::optional<int> max_batch_delay_ms;
  std::optional<int> initial_workers;
  std::optional<int> response_timeout_s;
  std::optional<int> startup_timeout_s;
  std::optional<std::string> handler;  // replaces the manifest's handler
  std::optional<std::string> runtime;  // replaces the manifest's runtime (already validated)
  // An archive the registration downloaded into the model store: deleted when the model is
  // unregistered (as TorchServe does), so registering the same URL again downloads afresh.
  std::string downloaded_archive;
  // modelUrl as TorchServe reports it: the URL a download was registered from (default:
  // the archive's file name).
  std::optional<std::string> model_url;
  // Settings ranked below model-config.yaml, by the model's name and version (known only
  // once the archive is open): config.properties' models= key (issue 8 #4). Called with
  // the archive's config, it fills what model-config.yaml left unset.
  std::function<void(const std::string& name, const std::string& version, ModelConfig& config)>
      fill_config;
};

// What every version is loaded with: the server's defaults and limits.
struct VersionDefaults {
  std::string extract_root;  // where .mar archives are unpacked
  std::string hostname;
  int default_workers = 1;  // when model-config.yaml names no minWorkers
  size_t job_queue_size = 100;
  int default_response_timeout_s = 120;
  int default_startup_timeout_s = 120;
  int intra_op_threads = 1;
  size_t max_response_size = 0;  // bytes; 0: no limit
  // Over this, a scale or registration is refused. 0: ModelManager::DefaultMaxWorkersPerModel()
  // (the manager resolves it; ModelVersion::Load needs it resolved).
  int max_workers_per_model = 0;
};

// What the versions share; owned by the ModelManager, outliving every version.
struct VersionServices {
  const backend::HandlerFactory* factory = nullptr;
  metrics::Registry* registry = nullptr;
  Controller* control = nullptr;
  WorkerBudget* budget = nullptr;
  std::function<int()> next_worker_port;  // TorchServe-style worker numbers, 9000 and up
};

// A version's settings fixed at load: a registration's overrides, else model-config.yaml,
// else the server's defaults.
struct VersionSettings {
  int batch_size = 1;
  int max_batch_delay_ms = 100;
  int response_timeout_s = 120;
  int startup_timeout_s = 120;  // how long a synchronous scale waits for readiness
};

// Everything the management API's describe shows of one version. Plain data.
struct ModelDescription {
  std::string name;
  std::string version;
  std::string url;
  std::string runtime;
  int min_workers = 0;
  int max_workers = 0;
  VersionSettings settings;
  bool loaded_at_startup = false;
  std::vector<WorkerPool::WorkerInfo> workers;
  size_t queue_depth = 0;
  size_t queue_capacity = 0;
};

// One request's input, as the API layer read it from HTTP.
struct Payload {
  std::string request_id;  // the server's id: the handler's logs and the client's x-request-id
  std::string body;
  std::string content_type;
  bool explicit_version = false;  // the URL named the version (metrics label it so)
};

// One loaded version of a model: its archive and settings, its one copy of the metrics
// handles, its worker pool, and its share of the worker budget. Shared (shared_ptr) by the
// manager's routing table, requests being routed and control tasks; when the last holder
// lets go, the pool is stopped and its metric series released (those no other version
// shares leave /metrics).
//
// A version's life: Load (archive opened, settings fixed, min workers reserved) →
// StartWorkers → serving (Submit, Scale, Describe) → Unload (after the queued requests,
// workers stopped, files removed) or Shutdown (server exit). Routing (names, default
// versions) is the ModelManager's; a version knows nothing of the others.
// Thread safety: all public methods may be called from any thread.
class ModelVersion : public std::enable_shared_from_this<ModelVersion> {
 public:
  // Opens the archive at spec.path, settles the settings (overrides, then
  // model-config.yaml, then `defaults`), resolves the metrics, builds the (empty) pool and
  // reserves the minimum workers in the budget. `taken(name, version)` is asked once the
  // name and version are known: true stops the load with AlreadyExists. Errors name the
  // file and the cause. Worker limits: initial_workers over max_workers_per_model is
  // InvalidArgument; model-config.yaml's minWorkers/maxWorkers (and default_workers) over
  // it are clamped to it, with a warning; more workers than the budget leaves is
  // InvalidArgument. Nothing runs yet: see StartWorkers. A version dropped before it
  // served removes its extracted folder.
  static StatusOr<std::shared_ptr<ModelVersion>> Load(
      const ModelSpec& spec, bool at_startup, const LoadOverrides& overrides,
      const VersionDefaults& defaults, const VersionServices& services,
      const std::function<bool(const std::string& name, const std::string& version)>& taken);
  ~ModelVersion();
  ModelVersion(const ModelVersion&) = delete;
  ModelVersion& operator=(const ModelVersion&) = delete;

  // Starts the reserved minimum of workers (without waiting for them to load). A worker
  // thread that cannot start is Internal; the version then stops what started and gives
  // its reservation back (it must not be used further).
  Status StartWorkers();

  // The whole of one prediction: counts the request on arrival (TorchServe's
  // ts_inference_requests_total, labelled by payload.explicit_version), stamps it, gives
  // it response_timeout_s, and queues it. `sink` is finished exactly once: by a worker
  // (the handler's answer, or 500), by the reaper (408 when overdue, or the client gone),
  // by an unload (503) — or here, at once, when refused: kNoWorker (no worker ready or
  // loading) and kQueueFull each answer TorchServe's 503 "has no worker" and are counted
  // under their own failure reason (fail_no_worker, fail_queue_full). Never blocks.
  SubmitResult Submit(Payload payload, ResponseSink sink);
  // Counts a request refused before it could be submitted (a malformed payload: 400):
  // arrival and fail_bad_input, so every counted request still ends in one outcome.
  void RecordBadInput(bool explicit_version);

  // Scales to min/max as TorchServe (the caller checks max >= min): starts workers up to
  // min when fewer run, else stops down to max (each finishes its batch first; queued
  // requests stay queued). Checks the limits at once: min or max over
  // max_workers_per_model, or a budget overrun, is InvalidArgument naming the limit and
  // changes nothing. The change runs on the control thread, in the order of the calls.
  // `done` (may be empty) runs exactly once, with a status and a worker count: at once, on
  // the calling thread, with the refusal (which Scale also returns), so a caller may move
  // its only means of answering into it; else once the change is made (Internal when a
  // worker thread could not start). With `wait_ready`, it runs once every worker of the
  // target is ready (Ok), or one failed to load or startup_timeout_s passed (Internal
  // "workers not ready ..."), or at shutdown (Unavailable); the reaper watches that wait.
  using ScaleDone = MoveOnlyFunction<void(const Status& status, int workers)>;
  Status Scale(int min_workers, int max_workers, bool wait_ready, ScaleDone done)
      EXCLUDES(scale_mu_);

  // Stops serving, on the control thread: lets the queued requests finish (while a worker
  // is ready, up to response_timeout_s), stops the workers (what is still queued answers
  // 503), gives back its workers to the budget, deletes its extracted folder and
  // downloaded archive. `done` runs then, once the caller's reference is let go. The
  // manager calls it once the version is no longer routed to.
  void Unload(MoveOnlyFunction<void()> done);
  // Stops the workers now; queued requests answer 503 (server exit) and the workers are
  // given back to the budget. Idempotent.
  void Shutdown();

  // Completes overdue jobs with 408 and drops those whose client has gone (the reaper).
  void ExpireOverdue(Clock::time_point now);
  // Every worker of the minimum ready.
  bool Healthy() const;
  // Whether its handler generates (a GenerativeHandler, e.g. an LLM): known once a worker
  // has loaded it; false before.
  bool generative() const;
  ModelDescription Describe() const;

  const std::string& name() const { return name_; }
  const std::string& version() const { return version_; }
  const std::string& url() const { return url_; }
  bool loaded_at_startup() const { return loaded_at_startup_; }
  // When it was loaded, in seconds since the epoch (OpenAI's /v1/models `created`).
  int64_t created_unix() const { return created_unix_; }
  int max_workers() const { return max_workers_.load(); }
  int ready_workers() const { return pool_->ready_workers(); }

 private:
  ModelVersion() = default;
  // The control thread's half of Scale.
  void ApplyScale(int min_workers, int max_workers, int target, bool wait_ready, ScaleDone done);
  // The budget: a version that started fewer workers than reserved gives back the rest; an
  // unloaded (or never started) one gives back all of them.
  void ShrinkReservation(int running) EXCLUDES(scale_mu_);
  void ReleaseReservation() EXCLUDES(scale_mu_);
  void RemoveFiles();

  std::string name_;
  std::string version_;
  std::string url_;  // what it was loaded from (archive file name, as TorchServe's modelUrl)
  ModelArchive archive_;
  std::string downloaded_archive_;  // see LoadOverrides::downloaded_archive
  bool loaded_at_startup_ = false;
  int64_t created_unix_ = 0;
  VersionSettings settings_;
  int max_workers_per_model_ = 16;
  std::atomic<int> min_workers_{1};  // changed by scaling (control thread)
  std::atomic<int> max_workers_{1};
  std::atomic<bool> files_removed_{false};
  std::atomic<bool> started_{false};  // StartWorkers succeeded

  VersionServices services_;
  ModelMetrics metrics_;  // the one copy; the pool records through it
  std::unique_ptr<HandlerMetrics> handler_metrics_;
  std::unique_ptr<WorkerPool> pool_;

  // Lock order: scale_mu_ -> the budget's mutex.
  Mutex scale_mu_;
  // The worker count the last accepted change asked for, reserved in the budget.
  int target_workers_ GUARDED_BY(scale_mu_) = 0;
  bool unloaded_ GUARDED_BY(scale_mu_) = false;  // workers stopped, reservation given back
};

}  // namespace tserve::serving
