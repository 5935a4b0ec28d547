#include "serving/model_version.h"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace tserve::serving {

namespace {

std::string PerModelLimit(const char* what, int asked, int limit) {
  return std::string(what) + " " + std::to_string(asked) + " exceeds the limit of " +
         std::to_string(limit) + " workers per model (max_workers_per_model)";
}

}  // namespace

StatusOr<std::shared_ptr<ModelVersion>> ModelVersion::Load(
    const ModelSpec& spec, bool at_startup, const LoadOverrides& overrides,
    const VersionDefaults& defaults, const VersionServices& services,
    const std::function<bool(const std::string& name, const std::string& version)>& taken) {
  auto archive = OpenModelArchive(spec.path, defaults.extract_root);
  if (!archive.ok()) return archive.status();
  // Not make_shared: the constructor is private. Until StartWorkers, dropping it removes
  // what the archive unpacked.
  std::shared_ptr<ModelVersion> v(new ModelVersion());
  v->archive_ = std::move(*archive);
  v->services_ = services;
  v->max_workers_per_model_ = defaults.max_workers_per_model;
  // A registration's handler= and runtime= replace the manifest's (TorchServe's precedence).
  if (overrides.handler) v->archive_.manifest.handler = *overrides.handler;
  if (overrides.runtime) v->archive_.manifest.runtime = *overrides.runtime;
  const Manifest& manifest = v->archive_.manifest;
  v->name_ = spec.name.empty() ? manifest.model_name : spec.name;
  v->version_ = manifest.model_version.empty() ? "1.0" : manifest.model_version;
  if (!IsValidModelName(v->name_)) {
    return Status::InvalidArgument(spec.path + ": invalid model name \"" + v->name_ +
                                   "\" (a letter, then letters, digits, '_', '.' or '-')");
  }
  const size_t slash = spec.path.find_last_of('/');
  v->url_ = overrides.model_url
                ? *overrides.model_url
                : (slash == std::string::npos ? spec.path : spec.path.substr(slash + 1));
  if (overrides.fill_config) overrides.fill_config(v->name_, v->version_, v->archive_.config);
  const ModelConfig& config = v->archive_.config;
  const int limit = defaults.max_workers_per_model;
  if (overrides.initial_workers && *overrides.initial_workers > limit) {
    return Status::InvalidArgument(
        PerModelLimit("initial_workers", *overrides.initial_workers, limit));
  }
  int min_workers =
      overrides.initial_workers.value_or(config.min_workers.value_or(defaults.default_workers));
  int max_workers = std::max(min_workers, config.max_workers.value_or(min_workers));
  if (max_workers > limit) {
    // The archive was made for another machine (or default_workers_per_model is high).
    spdlog::warn(
        "Model {}: {} workers (minWorkers {}, maxWorkers {}) clamped to {} "
        "(max_workers_per_model)",
        v->name_, max_workers, min_workers, max_workers, limit);
    min_workers = std::min(min_workers, limit);
    max_workers = limit;
  }
  v->min_workers_ = min_workers;
  v->max_workers_ = max_workers;
  v->settings_.batch_size = overrides.batch_size.value_or(config.batch_size.value_or(1));
  v->settings_.max_batch_delay_ms =
      overrides.max_batch_delay_ms.value_or(config.max_batch_delay_ms.value_or(100));
  v->settings_.response_timeout_s = overrides.response_timeout_s.value_or(
      config.response_timeout_s.value_or(defaults.default_response_timeout_s));
  v->settings_.startup_timeout_s = overrides.startup_timeout_s.value_or(
      config.startup_timeout_s.value_or(defaults.default_startup_timeout_s));
  v->downloaded_archive_ = overrides.downloaded_archive;
  v->loaded_at_startup_ = at_startup;
  v->created_unix_ = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();

  if (taken && taken(v->name_, v->version_)) {
    return Status::AlreadyExists("Model version " + v->version_ +
                                 " is already registered for model " + v->name_);
  }

  // A backend's handler: its module loads now (the first model that needs it), so a missing
  // one fails the registration with the reason instead of leaving workers that cannot start.
  if (services.factory != nullptr) {
    if (Status s = services.factory->Prepare(manifest.handler); !s.ok()) return s;
  }

  auto metrics = ModelMetrics::Resolve(services.registry, v->name_, v->version_, defaults.hostname);
  if (!metrics.ok()) return Status::InvalidArgument(spec.path + ": " + metrics.status().message());
  v->metrics_ = *metrics;
  v->metrics_.workers_min->Set(min_workers);
  v->metrics_.configured_batch_size->Set(v->settings_.batch_size);
  v->handler_metrics_ =
      std::make_unique<HandlerMetrics>(services.registry, v->name_, defaults.hostname);

  PoolOptions po;
  po.model_name = v->name_;
  po.model_version = v->version_;
  po.handler = manifest.handler;
  po.model_dir = v->archive_.dir;
  po.serialized_file =
      manifest.serialized_file.empty() ? "" : v->archive_.dir + "/" + manifest.serialized_file;
  po.config = config.scalars;
  po.batch_size = v->settings_.batch_size;
  po.max_batch_delay = std::chrono::milliseconds(v->settings_.max_batch_delay_ms);
  po.queue_capacity = defaults.job_queue_size;
  po.intra_op_threads = defaults.intra_op_threads;
  po.hostname = defaults.hostname;
  po.max_response_size = defaults.max_response_size;
  v->pool_ = std::make_unique<WorkerPool>(po, services.factory, services.registry, &v->metrics_,
                                          v->handler_metrics_.get(), services.next_worker_port);
  {
    MutexLock lock(&v->scale_mu_);
    if (Status s = services.budget->Change(v->name_, 0, min_workers); !s.ok()) {
      v->unloaded_ = true;
      return s;
    }
    v->target_workers_ = min_workers;
  }
  return v;
}

ModelVersion::~ModelVersion() {
  pool_.reset();  // its workers record into metrics_ until they have stopped
  handler_metrics_.reset();
  // Resolved (a load that failed earlier has none): give the series back.
  if (services_.registry != nullptr && metrics_.queue_depth != nullptr) {
    metrics_.Release(services_.registry);
  }
  if (!started_ && !files_removed_) RemoveExtractedArchive(archive_);
  // A version never started (a failed load) gives back its reservation here.
  if (services_.budget != nullptr) {
    MutexLock lock(&scale_mu_);
    if (!unloaded_) (void)services_.budget->Change(name_, target_workers_, 0);
  }
}

Status ModelVersion::StartWorkers() {
  int target;
  {
    MutexLock lock(&scale_mu_);
    target = target_workers_;
  }
  if (Status started = pool_->SetWorkerCount(target); !started.ok()) {
    // Out of threads: nothing of this version keeps running.
    pool_->Shutdown();
    ReleaseReservation();
    return started;
  }
  started_ = true;
  spdlog::info("Model {} version {} registered from {} (handler {}, batch size {}, {} worker{})",
               name_, version_, url_, archive_.manifest.handler, settings_.batch_size, target,
               target == 1 ? "" : "s");
  return Status::Ok();
}

SubmitResult ModelVersion::Submit(Payload payload, ResponseSink sink) {
  // TorchServe counts an inference request on arrival, before it is queued.
  const ModelMetrics::VersionLabelled& labelled =
      payload.explicit_version ? metrics_.by_explicit : metrics_.by_default;
  labelled.requests->Inc();
  const auto arrival = Clock::now();
  auto job = std::make_shared<Job>(
      std::move(payload.request_id), std::move(payload.body), std::move(payload.content_type),
      payload.explicit_version, arrival,
      arrival + std::chrono::seconds(settings_.response_timeout_s), std::move(sink));
  const SubmitResult result = pool_->Submit(job);
  if (result != SubmitResult::kAccepted) {
    // Both refusals read as TorchServe's: a full queue too is "no worker" to its clients.
    JobResult refusal;
    refusal.status = 503;
    refusal.body = "Model \"" + name_ +
                   "\" has no worker to serve inference request. Please use scale workers API "
                   "to add workers.";
    refusal.error_type = "ServiceUnavailableException";
    job->Complete(std::move(refusal));
  }
  return result;
}

void ModelVersion::RecordBadInput(bool explicit_version) {
  (explicit_version ? metrics_.by_explicit : metrics_.by_default).requests->Inc();
  metrics_.fail_bad_input->Inc();
}

Status ModelVersion::Scale(int min_workers, int max_workers, bool wait_ready, ScaleDone done) {
  Status refused;
  if (min_workers > max_workers_per_model_) {
    refused =
        Status::InvalidArgument(PerModelLimit("min_worker", min_workers, max_workers_per_model_));
  } else if (max_workers > max_workers_per_model_) {
    refused =
        Status::InvalidArgument(PerModelLimit("max_worker", max_workers, max_workers_per_model_));
  }
  // The target is decided here, in the order of the requests, and reserved in the budget;
  // the control thread carries the changes out in the same order.
  int target = 0;
  if (refused.ok()) {
    MutexLock lock(&scale_mu_);
    target = target_workers_;
    if (!unloaded_) {
      target = std::clamp(target, min_workers, std::max(min_workers, max_workers));
      refused = services_.budget->Change(name_, target_workers_, target);
      if (refused.ok()) target_workers_ = target;
    }
  }
  if (!refused.ok()) {
    if (done) done(refused, pool_->worker_count());
    return refused;
  }
  services_.control->Post([self = shared_from_this(), min_workers, max_workers, target, wait_ready,
                           done = std::move(done)]() mutable {
    self->ApplyScale(min_workers, max_workers, target, wait_ready, std::move(done));
  });
  return Status::Ok();
}

void ModelVersion::ApplyScale(int min_workers, int max_workers, int target, bool wait_ready,
                              ScaleDone done) {
  min_workers_ = min_workers;
  max_workers_ = max_workers;
  metrics_.workers_min->Set(min_workers);
  Status status = pool_->SetWorkerCount(target);
  const int running = pool_->worker_count();
  if (!status.ok()) ShrinkReservation(running);
  spdlog::info("Model {} version {}: {} worker{} (min {}, max {})", name_, version_, running,
               running == 1 ? "" : "s", min_workers, max_workers);
  if (wait_ready && status.ok() && done) {
    // Until every worker is ready, or one has failed to load, or startup_timeout_s: the
    // reaper watches, so the control thread goes on with other changes.
    const auto until = Clock::now() + std::chrono::seconds(settings_.startup_timeout_s);
    services_.control->Watch([self = shared_from_this(), target, until, done = std::move(done)](
                                 Clock::time_point now, bool stopping) mutable {
      const WorkerPool& pool = *self->pool_;
      const int ready = pool.ready_workers();
      Status result;
      if (stopping) {
        result = Status::Unavailable("The server is shutting down");
      } else if (ready >= target) {
        result = Status::Ok();
      } else if (pool.all_settled() || now >= until) {
        result = Status::Internal(
            "workers not ready: " + std::to_string(ready) + " of " + std::to_string(target) +
            (pool.all_settled() ? " (the others failed to load)"
                                : " within startup_timeout " +
                                      std::to_string(self->settings_.startup_timeout_s) + " s"));
      } else {
        return false;
      }
      if (!result.ok()) {
        spdlog::warn("Model {} version {}: {}", self->name_, self->version_, result.message());
      }
      done(result, pool.ready_workers());
      return true;
    });
    return;
  }
  if (done) done(status, status.ok() ? target : running);
}

void ModelVersion::ShrinkReservation(int running) {
  MutexLock lock(&scale_mu_);
  if (unloaded_ || target_workers_ <= running) return;
  (void)services_.budget->Change(name_, target_workers_, running);  // shrinking: always Ok
  target_workers_ = running;
}

void ModelVersion::ReleaseReservation() {
  MutexLock lock(&scale_mu_);
  if (unloaded_) return;
  (void)services_.budget->Change(name_, target_workers_, 0);  // shrinking: always Ok
  target_workers_ = 0;
  unloaded_ = true;
}

void ModelVersion::Unload(MoveOnlyFunction<void()> done) {
  services_.control->Post([self = shared_from_this(), done = std::move(done)]() mutable {
    // No new request reaches it now; let the queued ones finish, then stop the workers.
    self->pool_->WaitDrained(Clock::now() +
                             std::chrono::seconds(self->settings_.response_timeout_s));
    self->pool_->Shutdown();
    self->ReleaseReservation();
    self->RemoveFiles();
    spdlog::info("Model {} version {} unregistered", self->name_, self->version_);
    // Let go first: when nothing else holds it, its metric series go now, before the answer.
    self.reset();
    if (done) done();
  });
}

void ModelVersion::RemoveFiles() {
  if (files_removed_.exchange(true)) return;
  RemoveExtractedArchive(archive_);
  if (!downloaded_archive_.empty() && ::unlink(downloaded_archive_.c_str()) != 0 &&
      errno != ENOENT) {
    spdlog::warn("Model {} version {}: cannot delete its downloaded archive: {}", name_, version_,
                 std::strerror(errno));
  }
}

void ModelVersion::Shutdown() {
  pool_->Shutdown();
  // Given back now, so that a version outliving its manager never touches the budget.
  ReleaseReservation();
}

void ModelVersion::ExpireOverdue(Clock::time_point now) { pool_->ExpireOverdue(now); }

bool ModelVersion::generative() const { return pool_->generative(); }

bool ModelVersion::Healthy() const { return pool_->ready_workers() >= min_workers_.load(); }

ModelDescription ModelVersion::Describe() const {
  ModelDescription d;
  d.name = name_;
  d.version = version_;
  d.url = url_;
  d.runtime = archive_.manifest.runtime.empty() ? "python" : archive_.manifest.runtime;
  d.min_workers = min_workers_.load();
  d.max_workers = max_workers_.load();
  d.settings = settings_;
  d.loaded_at_startup = loaded_at_startup_;
  d.workers = pool_->Workers();
  d.queue_depth = pool_->queue_depth();
  d.queue_capacity = pool_->queue_capacity();
  return d;
}

}  // namespace tserve::serving
