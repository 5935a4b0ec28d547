#include "serving/model_manager.h"

#include <algorithm>
#include <thread>

namespace tserve::serving {

namespace {

// What the worker defaults are derived from.
int Cores() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

// TorchServe's words for a name no model has.
Status NoSuchModel(std::string_view name) {
  return Status::ModelNotFound("Model not found: " + std::string(name));
}

}  // namespace

int ModelManager::DefaultMaxWorkersPerModel() { return std::max(16, 4 * Cores()); }
int ModelManager::DefaultMaxWorkersTotal() { return 4 * DefaultMaxWorkersPerModel(); }

ModelManager::ModelManager(const Options& options, const backend::HandlerFactory* factory,
                           metrics::Registry* registry)
    : defaults_(options),
      budget_(options.max_workers_total > 0 ? options.max_workers_total : DefaultMaxWorkersTotal()),
      control_([this](Clock::time_point now) {
        for (auto& v : All()) v->ExpireOverdue(now);
      }) {
  if (defaults_.max_workers_per_model <= 0) {
    defaults_.max_workers_per_model = DefaultMaxWorkersPerModel();
  }
  services_.factory = factory;
  services_.registry = registry;
  services_.control = &control_;
  services_.budget = &budget_;
  services_.next_worker_port = [this] { return next_port_.fetch_add(1); };
}

ModelManager::~ModelManager() { Shutdown(); }

Status ModelManager::Load(const ModelSpec& spec, bool at_startup, const LoadOverrides& overrides) {
  auto loaded = LoadAndGet(spec, at_startup, overrides);
  return loaded.ok() ? Status::Ok() : loaded.status();
}

StatusOr<std::shared_ptr<ModelVersion>> ModelManager::LoadAndGet(const ModelSpec& spec,
                                                                 bool at_startup,
                                                                 const LoadOverrides& overrides) {
  auto registered = [this](const std::string& name, const std::string& version) {
    ReaderMutexLock lock(&mu_);
    auto it = models_.find(name);
    return it != models_.end() && it->second.versions.count(version) != 0;
  };
  auto loaded = ModelVersion::Load(spec, at_startup, overrides, defaults_, services_, registered);
  if (!loaded.ok()) return loaded.status();
  std::shared_ptr<ModelVersion> v = std::move(*loaded);
  {
    WriterMutexLock lock(&mu_);
    Entry& entry = models_[v->name()];
    if (entry.versions.count(v->version()) != 0) {
      // Registered meanwhile by another registration; dropping `v` undoes the load.
      return Status::AlreadyExists("Model version " + v->version() +
                                   " is already registered for model " + v->name());
    }
    if (entry.default_version.empty()) entry.default_version = v->version();
    entry.versions[v->version()] = v;
  }
  if (Status started = v->StartWorkers(); !started.ok()) {
    (void)Remove(*v);  // the registration fails and leaves nothing behind
    return started;
  }
  return v;
}

bool ModelManager::Remove(const ModelVersion& model) {
  WriterMutexLock lock(&mu_);
  auto it = models_.find(model.name());
  if (it == models_.end()) return false;
  Entry& entry = it->second;
  auto v = entry.versions.find(model.version());
  if (v == entry.versions.end() || v->second.get() != &model) return false;
  entry.versions.erase(v);
  if (entry.versions.empty()) {
    models_.erase(it);
  } else if (entry.default_version == model.version()) {
    entry.default_version = entry.versions.begin()->first;
  }
  return true;
}

Status ModelManager::UnregisterAsync(std::string_view name, std::string_view version,
                                     UnregisterDone done, std::string* removed_version) {
  auto model = Take(name, version, removed_version);
  if (!model.ok()) {
    if (done) done(model.status());
    return model.status();
  }
  (*model)->Unload([done = std::move(done)]() mutable {
    if (done) done(Status::Ok());
  });
  return Status::Ok();
}

StatusOr<std::shared_ptr<ModelVersion>> ModelManager::Take(std::string_view name,
                                                           std::string_view version,
                                                           std::string* removed_version) {
  std::shared_ptr<ModelVersion> model;
  {
    WriterMutexLock lock(&mu_);
    auto it = models_.find(name);
    if (it == models_.end()) return NoSuchModel(name);
    Entry& entry = it->second;
    const std::string v = version.empty() ? entry.default_version : std::string(version);
    auto vit = entry.versions.find(v);
    if (vit == entry.versions.end()) {
      return Status::VersionNotFound("Model version: " + v +
                                     " does not exist for model: " + std::string(name));
    }
    if (v == entry.default_version && entry.versions.size() > 1) {
      return Status::PermissionDenied("Cannot remove default version for model " +
                                      std::string(name));
    }
    model = vit->second;
    entry.versions.erase(vit);
    if (entry.versions.empty()) models_.erase(it);
    if (removed_version != nullptr) *removed_version = v;
  }
  return model;
}

void ModelManager::DiscardAsync(std::shared_ptr<ModelVersion> model,
                                MoveOnlyFunction<void()> done) {
  if (Remove(*model)) {
    model->Unload(std::move(done));
    return;
  }
  // Not registered any more: an unregister took it and unloads it. Answer after the
  // control tasks posted before this one (that unload among them).
  control_.Post([model = std::move(model), done = std::move(done)]() mutable {
    model.reset();
    if (done) done();
  });
}

Status ModelManager::SetDefault(std::string_view name, std::string_view version) {
  WriterMutexLock lock(&mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return NoSuchModel(name);
  if (it->second.versions.count(std::string(version)) == 0) {
    return Status::VersionNotFound("Model version " + std::string(version) +
                                   " does not exist for model " + std::string(name));
  }
  it->second.default_version = std::string(version);
  return Status::Ok();
}

StatusOr<std::vector<std::shared_ptr<ModelVersion>>> ModelManager::Versions(
    std::string_view name) const {
  ReaderMutexLock lock(&mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return NoSuchModel(name);
  std::vector<std::shared_ptr<ModelVersion>> out;
  for (const auto& [v, model] : it->second.versions) out.push_back(model);
  return out;
}

StatusOr<std::shared_ptr<ModelVersion>> ModelManager::Find(std::string_view name,
                                                           std::string_view version) const {
  ReaderMutexLock lock(&mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return NoSuchModel(name);
  const Entry& entry = it->second;
  const std::string v = version.empty() ? entry.default_version : std::string(version);
  auto found = entry.versions.find(v);
  if (found == entry.versions.end()) {
    return Status::VersionNotFound("Model version: " + v +
                                   " does not exist for model: " + std::string(name));
  }
  return found->second;
}

std::vector<std::shared_ptr<ModelVersion>> ModelManager::List() const {
  ReaderMutexLock lock(&mu_);
  std::vector<std::shared_ptr<ModelVersion>> out;
  for (const auto& [name, entry] : models_) {
    auto it = entry.versions.find(entry.default_version);
    if (it != entry.versions.end()) out.push_back(it->second);
  }
  return out;
}

std::vector<std::shared_ptr<ModelVersion>> ModelManager::All() const {
  ReaderMutexLock lock(&mu_);
  std::vector<std::shared_ptr<ModelVersion>> out;
  for (const auto& [name, entry] : models_) {
    for (const auto& [version, model] : entry.versions) out.push_back(model);
  }
  return out;
}

bool ModelManager::Healthy() const {
  for (const auto& v : All()) {
    if (!v->Healthy()) return false;
  }
  return true;
}

void ModelManager::Shutdown() {
  if (shut_down_.exchange(true)) return;
  control_.Shutdown();
  for (auto& v : All()) v->Shutdown();
}

}  // namespace tserve::serving
