#include "serving/model_manager.h"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

namespace tserve::serving {

namespace {

// What the worker defaults are derived from.
int Cores() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

std::string PerModelLimit(const char* what, int asked, int limit) {
  return std::string(what) + " " + std::to_string(asked) + " exceeds the limit of " +
         std::to_string(limit) + " workers per model (max_workers_per_model)";
}

std::string TotalLimit(const std::string& model, int asked, int total, int limit) {
  return "Cannot run " + std::to_string(asked) + " workers for model \"" + model +
         "\": " + std::to_string(total) + " workers in all would exceed the limit of " +
         std::to_string(limit) + " (max_workers_total)";
}

}  // namespace

LoadedModel::~LoadedModel() {
  pool.reset();  // its workers record into `metrics` until they have stopped
  handler_metrics.reset();
  if (registry != nullptr) metrics.Release(registry);
}

int ModelManager::DefaultMaxWorkersPerModel() { return std::max(16, 4 * Cores()); }
int ModelManager::DefaultMaxWorkersTotal() { return 4 * DefaultMaxWorkersPerModel(); }

ModelManager::ModelManager(Options options, const backend::HandlerFactory* factory,
                           metrics::Registry* registry)
    : options_(std::move(options)),
      max_workers_per_model_(options_.max_workers_per_model > 0 ? options_.max_workers_per_model
                                                                : DefaultMaxWorkersPerModel()),
      max_workers_total_(options_.max_workers_total > 0 ? options_.max_workers_total
                                                        : DefaultMaxWorkersTotal()),
      factory_(factory),
      registry_(registry) {
  reaper_ = std::thread([this] { Reap(); });
  control_ = std::thread([this] { ControlLoop(); });
}

ModelManager::~ModelManager() { Shutdown(); }

Status ModelManager::Load(const ModelSpec& spec, bool at_startup, const LoadOverrides& overrides) {
  auto loaded = LoadAndGet(spec, at_startup, overrides);
  return loaded.ok() ? Status::Ok() : loaded.status();
}

StatusOr<std::shared_ptr<LoadedModel>> ModelManager::LoadAndGet(const ModelSpec& spec,
                                                                bool at_startup,
                                                                const LoadOverrides& overrides) {
  auto archive = OpenModelArchive(spec.path, options_.extract_root);
  if (!archive.ok()) return archive.status();
  auto model = std::make_shared<LoadedModel>();
  model->archive = std::move(*archive);
  // Until the model is registered, a failure removes what the archive unpacked.
  struct Cleanup {
    LoadedModel* m;
    bool armed = true;
    ~Cleanup() {
      if (armed) RemoveExtractedArchive(m->archive);
    }
  } cleanup{model.get()};
  // A registration's handler= and runtime= replace the manifest's (TorchServe's precedence).
  if (overrides.handler) model->archive.manifest.handler = *overrides.handler;
  if (overrides.runtime) model->archive.manifest.runtime = *overrides.runtime;
  const Manifest& manifest = model->archive.manifest;
  model->name = spec.name.empty() ? manifest.model_name : spec.name;
  model->version = manifest.model_version.empty() ? "1.0" : manifest.model_version;
  if (!IsValidModelName(model->name)) {
    return Status::InvalidArgument(spec.path + ": invalid model name \"" + model->name +
                                   "\" (a letter, then letters, digits, '_', '.' or '-')");
  }
  size_t slash = spec.path.find_last_of('/');
  model->url = overrides.model_url
                   ? *overrides.model_url
                   : (slash == std::string::npos ? spec.path : spec.path.substr(slash + 1));
  if (overrides.fill_config) {
    overrides.fill_config(model->name, model->version, model->archive.config);
  }
  const ModelConfig& config = model->archive.config;
  const int limit = max_workers_per_model_;
  if (overrides.initial_workers && *overrides.initial_workers > limit) {
    return Status::InvalidArgument(
        PerModelLimit("initial_workers", *overrides.initial_workers, limit));
  }
  int min_workers =
      overrides.initial_workers.value_or(config.min_workers.value_or(options_.default_workers));
  int max_workers = std::max(min_workers, config.max_workers.value_or(min_workers));
  if (max_workers > limit) {
    // The archive was made for another machine (or default_workers_per_model is high).
    spdlog::warn(
        "Model {}: {} workers (minWorkers {}, maxWorkers {}) clamped to {} "
        "(max_workers_per_model)",
        model->name, max_workers, min_workers, max_workers, limit);
    min_workers = std::min(min_workers, limit);
    max_workers = limit;
  }
  model->min_workers = min_workers;
  model->max_workers = max_workers;
  model->batch_size = overrides.batch_size.value_or(config.batch_size.value_or(1));
  model->max_batch_delay_ms =
      overrides.max_batch_delay_ms.value_or(config.max_batch_delay_ms.value_or(100));
  model->response_timeout_s = overrides.response_timeout_s.value_or(
      config.response_timeout_s.value_or(options_.default_response_timeout_s));
  model->startup_timeout_s = overrides.startup_timeout_s.value_or(
      config.startup_timeout_s.value_or(options_.default_startup_timeout_s));
  model->downloaded_archive = overrides.downloaded_archive;
  model->loaded_at_startup = at_startup;

  {
    std::shared_lock<std::shared_mutex> lock(mu_);
    auto it = models_.find(model->name);
    if (it != models_.end() && it->second.versions.count(model->version) != 0) {
      return Status::AlreadyExists("Model version " + model->version +
                                   " is already registered for model " + model->name);
    }
  }

  auto metrics = ModelMetrics::Resolve(registry_, model->name, model->version, options_.hostname);
  if (!metrics.ok()) return Status::InvalidArgument(spec.path + ": " + metrics.status().message());
  model->metrics = *metrics;
  model->registry = registry_;
  model->handler_metrics =
      std::make_unique<HandlerMetrics>(registry_, model->name, options_.hostname);

  PoolOptions po;
  po.model_name = model->name;
  po.model_version = model->version;
  po.handler = manifest.handler;
  po.model_dir = model->archive.dir;
  po.serialized_file =
      manifest.serialized_file.empty() ? "" : model->archive.dir + "/" + manifest.serialized_file;
  po.config = config.scalars;
  po.batch_size = model->batch_size;
  po.max_batch_delay = std::chrono::milliseconds(model->max_batch_delay_ms);
  po.queue_capacity = options_.job_queue_size;
  po.intra_op_threads = options_.intra_op_threads;
  po.hostname = options_.hostname;
  po.max_response_size = options_.max_response_size;
  model->pool = std::make_unique<WorkerPool>(po, factory_, registry_, model->metrics,
                                             model->handler_metrics.get(),
                                             [this] { return next_port_.fetch_add(1); });
  {
    std::lock_guard<std::mutex> budget(budget_mu_);
    if (workers_reserved_ + min_workers > max_workers_total_) {
      model->unloaded = true;
      return Status::InvalidArgument(TotalLimit(
          model->name, min_workers, workers_reserved_ + min_workers, max_workers_total_));
    }
    workers_reserved_ += min_workers;
    model->target_workers = min_workers;
  }
  {
    std::unique_lock<std::shared_mutex> lock(mu_);
    Entry& entry = models_[model->name];
    if (entry.versions.count(model->version) != 0) {
      lock.unlock();
      ReleaseReservation(model.get());
      return Status::AlreadyExists("Model version " + model->version +
                                   " is already registered for model " + model->name);
    }
    if (entry.default_version.empty()) entry.default_version = model->version;
    entry.versions[model->version] = model;
    cleanup.armed = false;
  }
  if (Status started = model->pool->SetWorkerCount(min_workers); !started.ok()) {
    // Out of threads: the registration fails and leaves nothing behind.
    {
      std::unique_lock<std::shared_mutex> lock(mu_);
      auto it = models_.find(model->name);
      if (it != models_.end()) {
        auto v = it->second.versions.find(model->version);
        if (v != it->second.versions.end() && v->second == model) it->second.versions.erase(v);
        if (it->second.versions.empty()) models_.erase(it);
      }
    }
    model->pool->Shutdown();
    ReleaseReservation(model.get());
    cleanup.armed = true;
    return started;
  }
  spdlog::info("Model {} version {} registered from {} (handler {}, batch size {}, {} worker{})",
               model->name, model->version, model->url, manifest.handler, model->batch_size,
               min_workers, min_workers == 1 ? "" : "s");
  return model;
}

void ModelManager::Post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(control_mu_);
    control_tasks_.push_back(std::move(task));
  }
  control_cv_.notify_one();
}

void ModelManager::ControlLoop() {
  std::unique_lock<std::mutex> lock(control_mu_);
  while (true) {
    control_cv_.wait(lock, [this] { return control_stop_ || !control_tasks_.empty(); });
    if (control_tasks_.empty()) return;  // stopping and nothing left
    auto task = std::move(control_tasks_.front());
    control_tasks_.pop_front();
    lock.unlock();
    task();
    lock.lock();
  }
}

Status ModelManager::ScaleAsync(std::shared_ptr<LoadedModel> model, int min_workers,
                                int max_workers, bool wait_ready, ScaleDone done) {
  if (min_workers > max_workers_per_model_) {
    return Status::InvalidArgument(
        PerModelLimit("min_worker", min_workers, max_workers_per_model_));
  }
  if (max_workers > max_workers_per_model_) {
    return Status::InvalidArgument(
        PerModelLimit("max_worker", max_workers, max_workers_per_model_));
  }
  // The target is decided here, in the order of the requests, and reserved against the
  // total; the control thread carries the changes out in the same order.
  std::lock_guard<std::mutex> budget(budget_mu_);
  int target = model->target_workers;
  if (!model->unloaded) {
    if (target < min_workers) {
      target = min_workers;
    } else if (target > max_workers) {
      target = max_workers;
    }
    const int total = workers_reserved_ - model->target_workers + target;
    if (target > model->target_workers && total > max_workers_total_) {
      return Status::InvalidArgument(TotalLimit(model->name, target, total, max_workers_total_));
    }
    workers_reserved_ = total;
    model->target_workers = target;
  }
  Post([this, model, min_workers, max_workers, target, wait_ready, done = std::move(done)] {
    model->min_workers = min_workers;
    model->max_workers = max_workers;
    Status status = model->pool->SetWorkerCount(target);
    const int running = model->pool->worker_count();
    if (!status.ok()) ShrinkReservation(model.get(), running);
    spdlog::info("Model {} version {}: {} worker{} (min {}, max {})", model->name, model->version,
                 running, running == 1 ? "" : "s", min_workers, max_workers);
    if (wait_ready && status.ok() && done) {
      // Until every worker is ready, or one has failed to load, or startup_timeout_s: the
      // reaper watches (CheckReadyWaits), so this thread goes on with other changes.
      std::lock_guard<std::mutex> lock(waits_mu_);
      waits_.push_back(ReadyWait{model, target,
                                 Clock::now() + std::chrono::seconds(model->startup_timeout_s),
                                 std::move(done)});
      return;
    }
    if (done) done(status, status.ok() ? target : running);
  });
  return Status::Ok();
}

void ModelManager::ShrinkReservation(LoadedModel* model, int running) {
  std::lock_guard<std::mutex> budget(budget_mu_);
  if (model->unloaded || model->target_workers <= running) return;
  workers_reserved_ -= model->target_workers - running;
  model->target_workers = running;
}

void ModelManager::ReleaseReservation(LoadedModel* model) {
  std::lock_guard<std::mutex> budget(budget_mu_);
  if (model->unloaded) return;
  workers_reserved_ -= model->target_workers;
  model->target_workers = 0;
  model->unloaded = true;
}

Status ModelManager::UnregisterAsync(std::string_view name, std::string_view version,
                                     std::function<void()> done, std::string* removed_version) {
  std::shared_ptr<LoadedModel> model;
  {
    std::unique_lock<std::shared_mutex> lock(mu_);
    auto it = models_.find(name);
    if (it == models_.end()) {
      return Status::NotFound("Model not found: " + std::string(name));
    }
    Entry& entry = it->second;
    const std::string v = version.empty() ? entry.default_version : std::string(version);
    auto vit = entry.versions.find(v);
    if (vit == entry.versions.end()) {
      return Status::NotFound("Model version: " + v +
                              " does not exist for model: " + std::string(name));
    }
    if (v == entry.default_version && entry.versions.size() > 1) {
      return Status::PermissionDenied("Cannot remove default version for model " +
                                      std::string(name));
    }
    model = vit->second;
    entry.versions.erase(vit);
    if (entry.versions.empty()) models_.erase(it);
    *removed_version = v;
  }
  // No new request reaches it now; let the queued ones finish, then stop the workers.
  Post([this, model, done = std::move(done)]() mutable {
    Unload(model.get());
    // Let go first: when nothing else holds it, its metric series go now, before the answer.
    model.reset();
    if (done) done();
  });
  return Status::Ok();
}

void ModelManager::Unload(LoadedModel* model) {
  const auto until = Clock::now() + std::chrono::seconds(model->response_timeout_s);
  while (model->pool->queue_depth() > 0 && model->pool->ready_workers() > 0 &&
         Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  model->pool->Shutdown();
  ReleaseReservation(model);
  RemoveExtractedArchive(model->archive);
  if (!model->downloaded_archive.empty() && ::unlink(model->downloaded_archive.c_str()) != 0 &&
      errno != ENOENT) {
    spdlog::warn("Model {} version {}: cannot delete its downloaded archive: {}", model->name,
                 model->version, std::strerror(errno));
  }
  spdlog::info("Model {} version {} unregistered", model->name, model->version);
}

void ModelManager::DiscardAsync(std::shared_ptr<LoadedModel> model, std::function<void()> done) {
  bool removed = false;
  {
    std::unique_lock<std::shared_mutex> lock(mu_);
    auto it = models_.find(model->name);
    if (it != models_.end()) {
      Entry& entry = it->second;
      auto v = entry.versions.find(model->version);
      if (v != entry.versions.end() && v->second == model) {
        entry.versions.erase(v);
        removed = true;
        if (entry.versions.empty()) {
          models_.erase(it);
        } else if (entry.default_version == model->version) {
          entry.default_version = entry.versions.begin()->first;
        }
      }
    }
  }
  // Not registered any more: an unregister took it and unloads it.
  Post([this, model = std::move(model), removed, done = std::move(done)]() mutable {
    if (removed) Unload(model.get());
    model.reset();
    if (done) done();
  });
}

void ModelManager::CheckReadyWaits(bool stopping) {
  std::vector<std::pair<ReadyWait, Status>> finished;
  {
    std::lock_guard<std::mutex> lock(waits_mu_);
    const auto now = Clock::now();
    for (auto it = waits_.begin(); it != waits_.end();) {
      const WorkerPool& pool = *it->model->pool;
      const int ready = pool.ready_workers();
      Status status;
      if (stopping) {
        status = Status::Unavailable("The server is shutting down");
      } else if (ready >= it->target) {
        status = Status::Ok();
      } else if (pool.all_settled() || now >= it->until) {
        status = Status::Internal(
            "workers not ready: " + std::to_string(ready) + " of " + std::to_string(it->target) +
            (pool.all_settled() ? " (the others failed to load)"
                                : " within startup_timeout " +
                                      std::to_string(it->model->startup_timeout_s) + " s"));
      } else {
        ++it;
        continue;
      }
      finished.emplace_back(std::move(*it), std::move(status));
      it = waits_.erase(it);
    }
  }
  for (auto& [wait, status] : finished) {
    if (!status.ok()) {
      spdlog::warn("Model {} version {}: {}", wait.model->name, wait.model->version,
                   status.message());
    }
    wait.done(status, wait.model->pool->ready_workers());
  }
}

Status ModelManager::SetDefault(std::string_view name, std::string_view version) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return Status::NotFound("Model not found: " + std::string(name));
  if (it->second.versions.count(std::string(version)) == 0) {
    return Status::NotFound("Model version " + std::string(version) + " does not exist for model " +
                            std::string(name));
  }
  it->second.default_version = std::string(version);
  return Status::Ok();
}

std::vector<std::shared_ptr<LoadedModel>> ModelManager::Versions(std::string_view name) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::vector<std::shared_ptr<LoadedModel>> out;
  auto it = models_.find(name);
  if (it == models_.end()) return out;
  for (const auto& [v, model] : it->second.versions) out.push_back(model);
  return out;
}

std::shared_ptr<LoadedModel> ModelManager::Find(std::string_view name, std::string_view version,
                                                FindError* error) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = models_.find(name);
  if (it == models_.end()) {
    *error = FindError::kNoModel;
    return nullptr;
  }
  const Entry& entry = it->second;
  auto v = entry.versions.find(version.empty() ? entry.default_version : std::string(version));
  if (v == entry.versions.end()) {
    *error = FindError::kNoVersion;
    return nullptr;
  }
  *error = FindError::kNone;
  return v->second;
}

std::vector<std::shared_ptr<LoadedModel>> ModelManager::List() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::vector<std::shared_ptr<LoadedModel>> out;
  for (const auto& [name, entry] : models_) {
    auto it = entry.versions.find(entry.default_version);
    if (it != entry.versions.end()) out.push_back(it->second);
  }
  return out;
}

bool ModelManager::Healthy() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  for (const auto& [name, entry] : models_) {
    for (const auto& [version, model] : entry.versions) {
      if (model->pool->ready_workers() < model->min_workers) return false;
    }
  }
  return true;
}

void ModelManager::Reap() {
  std::unique_lock<std::mutex> lock(reaper_mu_);
  while (!stopping_) {
    reaper_cv_.wait_for(lock, std::chrono::milliseconds(100));
    if (stopping_) break;
    lock.unlock();
    std::vector<std::shared_ptr<LoadedModel>> all;
    {
      std::shared_lock<std::shared_mutex> mlock(mu_);
      for (const auto& [name, entry] : models_) {
        for (const auto& [version, model] : entry.versions) all.push_back(model);
      }
    }
    const auto now = Clock::now();
    for (auto& m : all) m->pool->ExpireOverdue(now);
    CheckReadyWaits(/*stopping=*/false);
    lock.lock();
  }
}

void ModelManager::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(reaper_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  reaper_cv_.notify_all();
  if (reaper_.joinable()) reaper_.join();
  {
    std::lock_guard<std::mutex> lock(control_mu_);
    control_stop_ = true;
  }
  control_cv_.notify_all();
  if (control_.joinable()) control_.join();
  CheckReadyWaits(/*stopping=*/true);  // after the control thread: it may have added some
  std::vector<std::shared_ptr<LoadedModel>> all;
  {
    std::unique_lock<std::shared_mutex> lock(mu_);
    for (auto& [name, entry] : models_) {
      for (auto& [version, model] : entry.versions) all.push_back(model);
    }
  }
  for (auto& m : all) m->pool->Shutdown();
}

}  // namespace tserve::serving
