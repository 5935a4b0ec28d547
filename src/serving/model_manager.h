#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "backend/handler_factory.h"
#include "common/move_only_function.h"
#include "common/mutex.h"
#include "common/status.h"
#include "metrics/registry.h"
#include "serving/controller.h"
#include "serving/model_store.h"
#include "serving/model_version.h"

namespace tserve::serving {

// The routing table: every model by name, its versions, and each name's default version.
// Loads versions into it (ModelVersion::Load), takes them out (unregister, discard) and
// answers lookups for the request path; everything a version does is the version's. Owns
// what the versions share: the worker budget and the Controller (control and reaper
// threads).
// Thread safety: all public methods are safe to call concurrently; Find takes a shared lock.
class ModelManager {
 public:
  // What every version is loaded with (VersionDefaults: extract_root, hostname,
  // default_workers, job_queue_size, timeouts, intra_op_threads, max_response_size,
  // max_workers_per_model), and the manager's own settings.
  struct Options : VersionDefaults {
    std::string model_store;
    // Worker ceiling over all models (each worker is a thread with its own handler).
    // 0: DefaultMaxWorkersTotal().
    int max_workers_total = 0;
  };
  // max(16, 4 × cores), and 4 × that.
  static int DefaultMaxWorkersPerModel();
  static int DefaultMaxWorkersTotal();
  ModelManager(const Options& options, const backend::HandlerFactory* factory,
               metrics::Registry* registry);
  ~ModelManager();

  using LoadOverrides = serving::LoadOverrides;
  // Loads a version (ModelVersion::Load: its errors and worker limits), registers it (the
  // name's default when it is the first version) and starts its minimum workers (without
  // waiting for them). A version already registered is AlreadyExists; a worker thread that
  // cannot start is Internal, and the version is not registered.
  Status Load(const ModelSpec& spec, bool at_startup, const LoadOverrides& overrides = {});
  StatusOr<std::shared_ptr<ModelVersion>> LoadAndGet(const ModelSpec& spec, bool at_startup,
                                                     const LoadOverrides& overrides);

  // Removes a version (its default if version is ""): refuses the default version while
  // others exist (PermissionDenied), stops routing to it at once, then unloads it
  // (ModelVersion::Unload: queued requests finish first). ModelNotFound / VersionNotFound
  // for an unknown one. `done` (may be empty) runs exactly once: at once, with the refusal
  // (also returned), or with Ok on the control thread once the version is gone.
  // `removed_version` (may be null) gets the version taken out.
  using UnregisterDone = MoveOnlyFunction<void(const Status& status)>;
  Status UnregisterAsync(std::string_view name, std::string_view version, UnregisterDone done,
                         std::string* removed_version);
  // Removes exactly `model` if it is still registered (default or not: a registration that
  // failed is taken back whole), and unloads it as UnregisterAsync does; `done` runs on the
  // control thread when it is gone.
  void DiscardAsync(std::shared_ptr<ModelVersion> model, MoveOnlyFunction<void()> done);
  // ModelNotFound, or VersionNotFound "Model version V does not exist for model X"
  // (TorchServe's set-default words) for an unknown version.
  Status SetDefault(std::string_view name, std::string_view version);
  // Every version of a model, sorted by version; ModelNotFound "Model not found: X" (as
  // Find) when no version of it is registered.
  StatusOr<std::vector<std::shared_ptr<ModelVersion>>> Versions(std::string_view name) const;
  // The version to route to; version "" means the model's default version.
  // ModelNotFound "Model not found: X", or VersionNotFound "Model version: V does not
  // exist for model: X" (TorchServe's words).
  StatusOr<std::shared_ptr<ModelVersion>> Find(std::string_view name,
                                               std::string_view version) const;
  // Every model's default version, sorted by name.
  std::vector<std::shared_ptr<ModelVersion>> List() const;
  // False while some version has fewer ready workers than its minimum.
  bool Healthy() const;
  // Stops the control and reaper threads (a synchronous scale still waiting answers
  // Unavailable), then every version's workers (their queued jobs answer 503).
  void Shutdown();

 private:
  struct Entry {
    std::string default_version;
    std::map<std::string, std::shared_ptr<ModelVersion>> versions;
  };
  // Every registered version (the reaper's round, Shutdown).
  std::vector<std::shared_ptr<ModelVersion>> All() const EXCLUDES(mu_);
  // Takes a version out of the table for UnregisterAsync (its refusals).
  StatusOr<std::shared_ptr<ModelVersion>> Take(std::string_view name, std::string_view version,
                                               std::string* removed_version) EXCLUDES(mu_);
  // Removes exactly `model` from the table; false when it was not there.
  bool Remove(const ModelVersion& model) EXCLUDES(mu_);

  VersionDefaults defaults_;  // Options' part, max_workers_per_model resolved
  WorkerBudget budget_;
  std::atomic<int> next_port_{9000};
  VersionServices services_;
  mutable SharedMutex mu_;
  std::map<std::string, Entry, std::less<>> models_ GUARDED_BY(mu_);
  std::atomic<bool> shut_down_{false};
  // Last: its threads call into the members above (the reaper's tick reads models_).
  Controller control_;
};

}  // namespace tserve::serving
