#include "backend/handler_factory.h"

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <optional>
#include <set>
#include <string_view>
#include <utility>

#include "common/strings.h"

namespace tserve::backend {

namespace {

// Exported by plugins built against a tserve/handler.h that defines TSERVE_API_VERSION
// (optional: a plugin without it is assumed to match; a backend module must export it).
constexpr const char* kApiVersionSymbol = TSERVE_API_VERSION_SYMBOL;

// A plugin's handler together with the library it came from. The library is closed only
// after the handler is destroyed (members are destroyed in reverse order), since the
// handler's code and vtable live in it.
// A plugin that generates (also a GenerativeHandler) is forwarded as one.
class PluginHandler : public Handler {
 public:
  PluginHandler(std::shared_ptr<void> library, std::unique_ptr<Handler> inner)
      : library_(std::move(library)), inner_(std::move(inner)) {}

  void Initialize(const ModelContext& context) override { inner_->Initialize(context); }
  void Preprocess(Batch& batch) override { inner_->Preprocess(batch); }
  void Inference(Batch& batch) override { inner_->Inference(batch); }
  void Postprocess(Batch& batch) override { inner_->Postprocess(batch); }

 protected:
  Handler* inner() const { return inner_.get(); }

 private:
  std::shared_ptr<void> library_;
  std::unique_ptr<Handler> inner_;
};

class GenerativePluginHandler final : public PluginHandler, public GenerativeHandler {
 public:
  GenerativePluginHandler(std::shared_ptr<void> library, std::unique_ptr<Handler> inner,
                          GenerativeHandler* generative)
      : PluginHandler(std::move(library), std::move(inner)), generative_(generative) {}
  int FreeSlots() const override { return generative_->FreeSlots(); }
  AdmitResult Admit(Sequence* sequence) override { return generative_->Admit(sequence); }
  void Step() override { generative_->Step(); }
  GenerationStats Stats() const override { return generative_->Stats(); }

 private:
  GenerativeHandler* generative_;  // the inner handler, seen as a generator
};

std::unique_ptr<Handler> WrapPlugin(std::shared_ptr<void> library, std::unique_ptr<Handler> inner) {
  if (auto* generative = dynamic_cast<GenerativeHandler*>(inner.get())) {
    return std::make_unique<GenerativePluginHandler>(std::move(library), std::move(inner),
                                                     generative);
  }
  return std::make_unique<PluginHandler>(std::move(library), std::move(inner));
}

std::optional<std::string> RealPath(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) return std::nullopt;
  return std::string(buf);
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Whether a handler value that is not a built-in should be loaded as a plugin: it looks like
// a shared library or a path, or names a file of the model folder.
bool LooksLikePlugin(const std::string& handler, const std::string& model_dir) {
  if (EndsWith(handler, ".so") || handler.find(".so.") != std::string::npos ||
      handler.find('/') != std::string::npos) {
    return true;
  }
  return !model_dir.empty() && IsRegularFile(model_dir + "/" + handler);
}

std::string DlError() {
  const char* e = ::dlerror();
  return e != nullptr ? e : "unknown dynamic loader error";
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& name : names) {
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

// Runs a handler maker or a module's create function: a null result or an exception becomes
// an error naming the handler.
template <typename F>
StatusOr<std::unique_ptr<Handler>> MakeHandler(const std::string& handler, const char* what,
                                               F&& make) {
  try {
    std::unique_ptr<Handler> h(make());
    if (h == nullptr)
      return Status::Internal("handler " + Quoted(handler) + ": " + what + " returned null");
    return h;
  } catch (const std::exception& e) {
    return Status::Internal("handler " + Quoted(handler) + ": " + e.what());
  } catch (...) {
    return Status::Internal("handler " + Quoted(handler) + ": " + what +
                            " threw a non-standard exception");
  }
}

}  // namespace

std::vector<std::string> DefaultBackendDirs() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return {};
  const std::filesystem::path dir = std::filesystem::path(std::string(buf, n)).parent_path();
  return {dir.string(), (dir.parent_path() / "lib" / "tserve").string()};
}

void HandlerFactory::RegisterBuiltin(const std::string& name, Maker maker) {
  MutexLock lock(&mu_);
  builtins_[name] = std::move(maker);
}

void HandlerFactory::RegisterBackend(BackendSpec spec) {
  auto backend = std::make_shared<Backend>(std::move(spec));
  MutexLock lock(&mu_);
  for (const std::string& name : backend->spec.handlers) backend_of_[name] = backend;
}

void HandlerFactory::SetLogger(Logger logger) {
  MutexLock lock(&mu_);
  logger_ = std::move(logger);
}

std::vector<std::string> HandlerFactory::BuiltinNames() const {
  MutexLock lock(&mu_);
  std::set<std::string> names;
  for (const auto& [name, maker] : builtins_) names.insert(name);
  for (const auto& [name, backend] : backend_of_) names.insert(name);
  return {names.begin(), names.end()};
}

bool HandlerFactory::IsBuiltin(const std::string& name) const {
  MutexLock lock(&mu_);
  return builtins_.count(name) != 0 || backend_of_.count(name) != 0;
}

StatusOr<TserveBackendCreateFn> HandlerFactory::LoadBackend(Backend* backend,
                                                            const std::string& handler) const {
  MutexLock lock(&backend->mu);
  if (backend->create != nullptr) return backend->create;
  const BackendSpec& spec = backend->spec;
  const std::string what =
      "handler " + Quoted(handler) + " needs the " + spec.description + " (" + spec.library + ")";

  const std::vector<std::string> dirs =
      spec.search_dirs.empty() ? DefaultBackendDirs() : spec.search_dirs;
  std::string path;
  for (const std::string& dir : dirs) {
    if (IsRegularFile(dir + "/" + spec.library)) {
      path = dir + "/" + spec.library;
      break;
    }
  }
  if (path.empty()) {
    return Status::FailedPrecondition(what + ", which is not installed: looked in " +
                                      JoinNames(dirs));
  }

  const auto t0 = std::chrono::steady_clock::now();
  ::dlerror();
  // Never closed: the module's handlers, and LibTorch's registries, live as long as tserve.
  void* module = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (module == nullptr) {
    return Status::FailedPrecondition(what + ", which cannot be loaded: " + DlError());
  }
  const auto* version = static_cast<const int*>(::dlsym(module, kApiVersionSymbol));
  if (version == nullptr || *version != TSERVE_API_VERSION) {
    return Status::FailedPrecondition(
        what + ", but " + path + " was built for " +
        (version == nullptr ? std::string("no") : "version " + std::to_string(*version)) +
        " of the handler API, this server implements version " +
        std::to_string(TSERVE_API_VERSION));
  }
  auto names = reinterpret_cast<TserveBackendNamesFn>(::dlsym(module, TSERVE_BACKEND_NAMES_SYMBOL));
  auto create =
      reinterpret_cast<TserveBackendCreateFn>(::dlsym(module, TSERVE_BACKEND_CREATE_SYMBOL));
  if (names == nullptr || create == nullptr) {
    return Status::FailedPrecondition(what + ", but " + path + " does not export " +
                                      TSERVE_BACKEND_NAMES_SYMBOL + " and " +
                                      TSERVE_BACKEND_CREATE_SYMBOL);
  }
  std::set<std::string> provided;
  for (const char* const* n = names(); n != nullptr && *n != nullptr; ++n) provided.insert(*n);
  for (const std::string& name : spec.handlers) {
    if (provided.count(name) == 0) {
      return Status::FailedPrecondition(what + ", but " + path + " does not provide handler " +
                                        Quoted(name));
    }
  }
  for (const std::string& companion : spec.companions) {
    // RTLD_GLOBAL: the operators' symbols stay resolvable for libraries loaded later. Never
    // unloaded: the backend keeps pointers to what they register.
    if (::dlopen(companion.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
      return Status::FailedPrecondition(what + ": " + spec.companions_key + ": cannot load " +
                                        Quoted(companion) + ": " + DlError());
    }
  }
  backend->create = create;

  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  Logger logger;
  {
    MutexLock factory_lock(&mu_);
    logger = logger_;
  }
  if (logger) {
    logger("loaded the " + spec.description + " from " + path + " in " +
           std::to_string(static_cast<long>(ms)) + " ms");
    for (const std::string& companion : spec.companions) {
      logger(spec.companions_description + " from " + companion);
    }
  }
  return create;
}

Status HandlerFactory::Prepare(const std::string& handler) const {
  std::shared_ptr<Backend> backend;
  {
    MutexLock lock(&mu_);
    if (builtins_.count(handler) != 0) return Status::Ok();
    if (auto b = backend_of_.find(handler); b != backend_of_.end()) backend = b->second;
  }
  if (backend == nullptr) return Status::Ok();
  StatusOr<TserveBackendCreateFn> create = LoadBackend(backend.get(), handler);
  return create.ok() ? Status::Ok() : create.status();
}

StatusOr<std::unique_ptr<Handler>> HandlerFactory::Create(const std::string& handler,
                                                          const std::string& model_dir) const {
  Maker maker;
  std::shared_ptr<Backend> backend;
  {
    MutexLock lock(&mu_);
    if (auto it = builtins_.find(handler); it != builtins_.end()) {
      maker = it->second;
    } else if (auto b = backend_of_.find(handler); b != backend_of_.end()) {
      backend = b->second;
    }
  }
  // Makers and modules run outside the lock: they may be slow (or re-enter the factory).
  if (maker) return MakeHandler(handler, "built-in maker", maker);
  if (backend != nullptr) {
    StatusOr<TserveBackendCreateFn> create = LoadBackend(backend.get(), handler);
    if (!create.ok()) return create.status();
    return MakeHandler(handler, TSERVE_BACKEND_CREATE_SYMBOL,
                       [&] { return (*create)(handler.c_str()); });
  }

  if (handler.empty()) {
    return Status::InvalidArgument("no handler given (manifest's model.handler is empty)");
  }
  // A TorchServe Python handler (often shipped inside the archive) is never a plugin.
  const bool python = EndsWith(handler, ".py") || handler.find(".py:") != std::string::npos;
  if (python || !LooksLikePlugin(handler, model_dir)) {
    return Status::InvalidArgument(
        "unknown handler " + Quoted(handler) + " (built-in handlers: " + JoinNames(BuiltinNames()) +
        "; or a .so plugin inside the model folder)" +
        (python ? "; Python handlers are not supported: use a built-in or a C++ plugin" : ""));
  }
  return CreatePlugin(handler, model_dir);
}

StatusOr<std::unique_ptr<Handler>> HandlerFactory::CreatePlugin(
    const std::string& handler, const std::string& model_dir) const {
  // A plugin: a shared library inside the model folder, named relative to it.
  const std::string what = "handler " + Quoted(handler);
  if (handler.front() == '/') {
    return Status::InvalidArgument(what +
                                   ": a plugin must be named by a path relative to the model "
                                   "folder, not an absolute path");
  }
  std::optional<std::string> root = RealPath(model_dir);
  if (!root) {
    return Status::NotFound(what + ": model folder " + Quoted(model_dir) +
                            " is not accessible: " + std::strerror(errno));
  }
  std::optional<std::string> path = RealPath(model_dir + "/" + handler);
  if (!path) {
    const int err = errno;
    // Say "outside" rather than "not found" for a missing file reached through "..".
    if (handler.find("..") == std::string::npos) {
      return Status::NotFound(what + ": plugin file not found in the model folder (" +
                              std::strerror(err) + ")");
    }
  }
  const std::string prefix = *root == "/" ? *root : *root + "/";
  if (!path || path->compare(0, prefix.size(), prefix) != 0) {
    return Status::PermissionDenied(what + ": plugin path resolves outside the model folder " +
                                    Quoted(*root));
  }
  if (!IsRegularFile(*path)) {
    return Status::InvalidArgument(what + ": plugin " + Quoted(*path) + " is not a regular file");
  }

  ::dlerror();  // clear any stale message
  void* raw = ::dlopen(path->c_str(), RTLD_NOW | RTLD_LOCAL);
  if (raw == nullptr) {
    return Status::InvalidArgument(what + ": cannot load plugin: " + DlError());
  }
  std::shared_ptr<void> library(raw, [](void* h) { ::dlclose(h); });

  if (const auto* version = static_cast<const int*>(::dlsym(raw, kApiVersionSymbol))) {
    if (*version != TSERVE_API_VERSION) {
      return Status::FailedPrecondition(
          what + ": plugin was built for tserve plugin API version " + std::to_string(*version) +
          ", this server implements version " + std::to_string(TSERVE_API_VERSION) +
          "; rebuild it against this tserve's include/tserve/handler.h");
    }
  }

  ::dlerror();
  void* sym = ::dlsym(raw, TSERVE_HANDLER_FACTORY_SYMBOL);
  if (sym == nullptr) {
    return Status::InvalidArgument(
        what + ": plugin does not export " + TSERVE_HANDLER_FACTORY_SYMBOL +
        " (declare it extern \"C\" tserve::Handler* " + TSERVE_HANDLER_FACTORY_SYMBOL + "())");
  }
  auto create = reinterpret_cast<TserveCreateHandlerFn>(sym);
  std::unique_ptr<Handler> inner;
  try {
    inner.reset(create());
  } catch (const std::exception& e) {
    return Status::Internal(what + ": " + TSERVE_HANDLER_FACTORY_SYMBOL + " threw: " + e.what());
  } catch (...) {
    return Status::Internal(what + ": " + TSERVE_HANDLER_FACTORY_SYMBOL +
                            " threw a non-standard exception");
  }
  if (inner == nullptr) {
    return Status::Internal(what + ": " + TSERVE_HANDLER_FACTORY_SYMBOL + " returned null");
  }
  return WrapPlugin(std::move(library), std::move(inner));
}

}  // namespace tserve::backend
