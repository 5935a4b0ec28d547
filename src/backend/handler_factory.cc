#include "backend/handler_factory.h"

#include <dlfcn.h>
#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string_view>
#include <utility>

namespace tserve::backend {

namespace {

// Exported by plugins built against a tserve/handler.h that defines TSERVE_API_VERSION
// (optional: a plugin without it is assumed to match).
constexpr const char* kApiVersionSymbol = "tserve_api_version";

// A plugin's handler together with the library it came from. The library is closed only
// after the handler is destroyed (members are destroyed in reverse order), since the
// handler's code and vtable live in it.
class PluginHandler final : public Handler {
 public:
  PluginHandler(std::shared_ptr<void> library, std::unique_ptr<Handler> inner)
      : library_(std::move(library)), inner_(std::move(inner)) {}

  void Initialize(const ModelContext& context) override { inner_->Initialize(context); }
  void Preprocess(Batch& batch) override { inner_->Preprocess(batch); }
  void Inference(Batch& batch) override { inner_->Inference(batch); }
  void Postprocess(Batch& batch) override { inner_->Postprocess(batch); }

 private:
  std::shared_ptr<void> library_;
  std::unique_ptr<Handler> inner_;
};

std::string Quoted(const std::string& s) { return "\"" + s + "\""; }

bool EndsWith(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix.data(), suffix.size()) == 0;
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

}  // namespace

void HandlerFactory::RegisterBuiltin(const std::string& name, Maker maker) {
  std::lock_guard<std::mutex> lock(mu_);
  builtins_[name] = std::move(maker);
}

std::vector<std::string> HandlerFactory::BuiltinNames() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> names;
  names.reserve(builtins_.size());
  for (const auto& [name, maker] : builtins_) names.push_back(name);
  return names;
}

bool HandlerFactory::IsBuiltin(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  return builtins_.count(name) != 0;
}

StatusOr<std::unique_ptr<Handler>> HandlerFactory::Create(const std::string& handler,
                                                          const std::string& model_dir) const {
  Maker maker;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = builtins_.find(handler);
    if (it != builtins_.end()) maker = it->second;
  }
  if (maker) {
    // Built-in makers run outside the lock: they may be slow (or re-enter the factory).
    try {
      std::unique_ptr<Handler> h = maker();
      if (h == nullptr) {
        return Status::Internal("handler " + Quoted(handler) + ": built-in maker returned null");
      }
      return h;
    } catch (const std::exception& e) {
      return Status::Internal("handler " + Quoted(handler) + ": " + e.what());
    } catch (...) {
      return Status::Internal("handler " + Quoted(handler) +
                              ": built-in maker threw a non-standard exception");
    }
  }

  if (handler.empty()) {
    return Status::InvalidArgument("no handler given (manifest's model.handler is empty)");
  }
  // A TorchServe Python handler (often shipped inside the archive) is never a plugin.
  const bool python = EndsWith(handler, ".py") || handler.find(".py:") != std::string::npos;
  if (python || !LooksLikePlugin(handler, model_dir)) {
    std::string known;
    for (const std::string& name : BuiltinNames()) {
      if (!known.empty()) known += ", ";
      known += name;
    }
    return Status::InvalidArgument(
        "unknown handler " + Quoted(handler) + " (built-in handlers: " + known +
        "; or a .so plugin inside the model folder)" +
        (python ? "; Python handlers are not supported: use a built-in or a C++ plugin" : ""));
  }

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
  return std::unique_ptr<Handler>(
      std::make_unique<PluginHandler>(std::move(library), std::move(inner)));
}

}  // namespace tserve::backend
