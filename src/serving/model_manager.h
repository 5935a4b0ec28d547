#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "backend/handler_factory.h"
#include "common/status.h"
#include "metrics/registry.h"
#include "serving/handler_metrics.h"
#include "serving/model_archive.h"
#include "serving/model_metrics.h"
#include "serving/model_store.h"
#include "serving/worker_pool.h"

namespace tserve::serving {

// One loaded model version: its archive, its metrics handles, its worker pool.
// Immutable after load except through the pool; shared by requests in flight. When the
// last holder lets go, the pool is stopped and the model's metric series are released
// (those no other version shares leave /metrics).
struct LoadedModel {
  LoadedModel() = default;
  ~LoadedModel();
  LoadedModel(const LoadedModel&) = delete;
  LoadedModel& operator=(const LoadedModel&) = delete;

  std::string name;
  std::string version;
  std::string url;  // what it was loaded from (archive file name, as TorchServe's modelUrl)
  ModelArchive archive;
  std::atomic<int> min_workers{1};  // changed by scaling
  std::atomic<int> max_workers{1};
  int batch_size = 1;
  int max_batch_delay_ms = 100;
  int response_timeout_s = 120;
  // How long a synchronous register or scale waits for its workers to be ready.
  int startup_timeout_s = 120;
  bool loaded_at_startup = false;
  // The archive a registration downloaded into the model store: deleted when the model is
  // unregistered (as TorchServe does), so registering the same URL again downloads afresh.
  std::string downloaded_archive;
  ModelMetrics metrics;
  metrics::Registry* registry = nullptr;  // where `metrics` came from (released there)
  std::unique_ptr<HandlerMetrics> handler_metrics;
  std::unique_ptr<WorkerPool> pool;
  // The worker count the last accepted change asked for, counted against the manager's
  // max_workers_total; guarded by the manager's budget mutex.
  int target_workers = 0;
  bool unloaded = false;  // its workers were stopped and given back to the budget
};

// All models, by name and version, with each name's default version. Loads models from
// the model store, answers lookups for the request path, and runs the timeout reaper.
// Thread safety: all public methods are safe to call concurrently; Find takes a shared lock.
class ModelManager {
 public:
  struct Options {
    std::string model_store;
    std::string extract_root;  // where .mar archives are unpacked
    std::string hostname;
    int default_workers = 1;  // when model-config.yaml names no minWorkers
    size_t job_queue_size = 100;
    int default_response_timeout_s = 120;
    int default_startup_timeout_s = 120;  // TorchServe's default_startup_timeout
    int intra_op_threads = 1;
    size_t max_response_size = 0;  // bytes; 0: no limit (PoolOptions::max_response_size)
    // Worker ceilings (each worker is a thread with its own handler): per model version
    // and over all models. 0: DefaultMaxWorkersPerModel() / DefaultMaxWorkersTotal().
    int max_workers_per_model = 0;
    int max_workers_total = 0;
  };
  // max(16, 4 × cores), and 4 × that.
  static int DefaultMaxWorkersPerModel();
  static int DefaultMaxWorkersTotal();
  ModelManager(Options options, const backend::HandlerFactory* factory,
               metrics::Registry* registry);
  ~ModelManager();

  // Overrides of a registration (POST /models); unset fields come from model-config.yaml.
  struct LoadOverrides {
    std::optional<int> batch_size;
    std::optional<int> max_batch_delay_ms;
    std::optional<int> initial_workers;
    std::optional<int> response_timeout_s;
    std::optional<int> startup_timeout_s;
    std::optional<std::string> handler;  // replaces the manifest's handler
    std::optional<std::string> runtime;  // replaces the manifest's runtime (already validated)
    // An archive the registration downloaded (see LoadedModel::downloaded_archive).
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
  // Opens the archive, resolves metrics, starts min workers (without waiting for them).
  // Errors name the file and the cause. Worker limits: initial_workers over
  // max_workers_per_model is InvalidArgument; model-config.yaml's minWorkers/maxWorkers
  // (and default_workers) over it are clamped to it, with a warning; workers over what
  // max_workers_total leaves are InvalidArgument. A worker thread that cannot start is
  // Internal, and the model is not registered.
  Status Load(const ModelSpec& spec, bool at_startup, const LoadOverrides& overrides = {});
  StatusOr<std::shared_ptr<LoadedModel>> LoadAndGet(const ModelSpec& spec, bool at_startup,
                                                    const LoadOverrides& overrides);

  // Scales a model version: min/max as TorchServe (max < min is an error). Starts workers
  // up to min when fewer run, else stops down to max (each finishes its batch first; queued
  // requests stay queued). Checks the worker limits at once: min or max over
  // max_workers_per_model, or a total over max_workers_total, is InvalidArgument naming the
  // limit (and nothing changes). The change runs on the manager's control thread; `done`
  // gets its status (Internal when a worker thread could not start) and the worker count
  // once the change is made. With `wait_ready`, `done` runs once every worker of the target
  // is ready (Ok), or once one has failed to load or the model's startup_timeout_s has
  // passed (Internal "workers not ready ..."), or at Shutdown (Unavailable); the waiting
  // is watched by the reaper thread, so the control thread is never held by it.
  using ScaleDone = std::function<void(const Status& status, int workers)>;
  Status ScaleAsync(std::shared_ptr<LoadedModel> model, int min_workers, int max_workers,
                    bool wait_ready, ScaleDone done);
  // Removes a version (its default if version is ""): refuses the default version while
  // others exist, stops routing to it at once, lets queued requests finish, then unloads.
  // `done` runs on the control thread when it is gone.
  Status UnregisterAsync(std::string_view name, std::string_view version,
                         std::function<void()> done, std::string* removed_version);
  // Removes exactly `model` if it is still registered (default or not: a registration that
  // failed is taken back whole), unloads it as UnregisterAsync does, and deletes its
  // downloaded archive; `done` runs on the control thread when it is gone.
  void DiscardAsync(std::shared_ptr<LoadedModel> model, std::function<void()> done);
  // NotFound "Model version V does not exist for model X" (TorchServe's set-default words)
  // for an unknown version.
  Status SetDefault(std::string_view name, std::string_view version);
  // Every version of a model, sorted; empty when unknown.
  std::vector<std::shared_ptr<LoadedModel>> Versions(std::string_view name) const;

  enum class FindError { kNone, kNoModel, kNoVersion };
  // version "" means the model's default version.
  std::shared_ptr<LoadedModel> Find(std::string_view name, std::string_view version,
                                    FindError* error) const;
  // Every model's default version, sorted by name.
  std::vector<std::shared_ptr<LoadedModel>> List() const;
  // False while some model has fewer ready workers than its minimum.
  bool Healthy() const;
  // Stops every pool (their queued jobs answer 503) and the reaper.
  void Shutdown();

 private:
  struct Entry {
    std::string default_version;
    std::map<std::string, std::shared_ptr<LoadedModel>> versions;
  };
  void Reap();
  // Completes the ready-waits whose workers are ready or failed, or whose time is up (all
  // of them when `stopping`).
  void CheckReadyWaits(bool stopping);
  // Stops a removed model's workers after its queued requests, gives back its workers and
  // its files (extracted folder, downloaded archive). Control thread.
  void Unload(LoadedModel* model);
  void ControlLoop();
  void Post(std::function<void()> task);
  // The budget: a model that started fewer workers than reserved gives back the rest; an
  // unloaded (or never registered) model gives back all of them.
  void ShrinkReservation(LoadedModel* model, int running);
  void ReleaseReservation(LoadedModel* model);

  const Options options_;
  const int max_workers_per_model_;
  const int max_workers_total_;
  // Guards workers_reserved_ and every LoadedModel's target_workers and unloaded.
  std::mutex budget_mu_;
  int workers_reserved_ = 0;  // Σ target_workers of the models not unloaded
  const backend::HandlerFactory* factory_;
  metrics::Registry* registry_;
  std::atomic<int> next_port_{9000};
  mutable std::shared_mutex mu_;
  std::map<std::string, Entry, std::less<>> models_;

  struct ReadyWait {
    std::shared_ptr<LoadedModel> model;
    int target;
    Clock::time_point until;
    ScaleDone done;
  };
  std::mutex waits_mu_;
  std::vector<ReadyWait> waits_;

  std::mutex reaper_mu_;
  std::condition_variable reaper_cv_;
  bool stopping_ = false;
  std::thread reaper_;

  // Slow changes (scaling joins workers, unloading drains queues) run here, never on an
  // HTTP thread.
  std::mutex control_mu_;
  std::condition_variable control_cv_;
  std::deque<std::function<void()>> control_tasks_;
  bool control_stop_ = false;
  std::thread control_;
};

}  // namespace tserve::serving
