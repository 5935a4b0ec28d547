#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "tserve/handler.h"

namespace tserve::backend {

// A backend module: built-in handlers whose code lives in a shared library (the module
// entry points of tserve/handler.h) that is loaded the first time a model needs one of them.
struct BackendSpec {
  std::string name;                   // "torch"
  std::string description;            // for messages: "TorchScript backend"
  std::string library;                // the module's file name: "libtserve_torch.so"
  std::vector<std::string> handlers;  // the built-in names it provides
  // Directories searched for `library`, in order; empty: DefaultBackendDirs().
  std::vector<std::string> search_dirs;
  // Libraries loaded (RTLD_GLOBAL, never unloaded) right after the module, each of which must
  // load: operators the module's models call (torchvision's for LibTorch), named in messages
  // by `companions_key` (the config key that listed them) in errors and as
  // "<companions_description> from <path>" in the log.
  std::vector<std::string> companions;
  std::string companions_key;          // "torch_extension_libraries"
  std::string companions_description;  // "TorchScript operators"
};

// Where backend modules are looked for by default: the directory of the running executable
// (/proc/self/exe), then <that directory>/../lib/tserve (an installed layout).
std::vector<std::string> DefaultBackendDirs();

// Makes Handler instances by the manifest's `handler` value: a built-in name ("noop", or one
// provided by a backend module: "image_classifier", "tensor", ...) or a plugin, i.e. a shared
// library inside the model's folder ("libmy_handler.so", "handlers/libx.so") exporting
// tserve_create_handler. A plugin library stays loaded while any handler made from it lives;
// a backend module, once loaded, stays loaded.
// Thread safety: register built-ins and backends at startup; Create may be called from many
// threads (the first Create of a backend's handler loads it once; the others wait for it).
class HandlerFactory {
 public:
  using Maker = std::function<std::unique_ptr<Handler>()>;
  // Told one line when a backend module has been loaded (main logs it).
  using Logger = std::function<void(const std::string& line)>;

  HandlerFactory() = default;
  HandlerFactory(const HandlerFactory&) = delete;
  HandlerFactory& operator=(const HandlerFactory&) = delete;

  // A built-in made in this process. It takes precedence over a backend's handler of the
  // same name.
  void RegisterBuiltin(const std::string& name, Maker maker) EXCLUDES(mu_);
  // Declares the handlers of `spec` as provided by its module; nothing is loaded now.
  void RegisterBackend(BackendSpec spec) EXCLUDES(mu_);
  void SetLogger(Logger logger) EXCLUDES(mu_);

  // Every built-in name, those of backends included (loaded or not), sorted.
  std::vector<std::string> BuiltinNames() const EXCLUDES(mu_);
  bool IsBuiltin(const std::string& name) const EXCLUDES(mu_);

  // Loads the backend module that provides `handler` if it is one of a backend's and is not
  // loaded yet, so that a model needing a missing module fails its registration with the
  // reason (FailedPrecondition naming the module and where it was looked for) rather than
  // with workers that cannot start. Ok for every other handler (checked by Create).
  Status Prepare(const std::string& handler) const EXCLUDES(mu_);

  // Errors name the handler and the cause: unknown built-in (listing the known ones), a
  // backend module that is not installed (naming it and the directories searched) or cannot
  // be loaded (dlopen's message), a plugin path outside model_dir, dlopen's message, a
  // missing factory symbol, a factory that returned null or threw.
  StatusOr<std::unique_ptr<Handler>> Create(const std::string& handler,
                                            const std::string& model_dir) const EXCLUDES(mu_);

 private:
  // A registered backend module and, once loaded, its create function.
  struct Backend {
    explicit Backend(BackendSpec s) : spec(std::move(s)) {}
    const BackendSpec spec;
    Mutex mu;  // held while loading: concurrent first uses load it once
    TserveBackendCreateFn create GUARDED_BY(mu) = nullptr;
  };

  // The backend's create function, loading the module (and its companions) if not yet done.
  // `handler` is the name a model asked for (for messages).
  StatusOr<TserveBackendCreateFn> LoadBackend(Backend* backend, const std::string& handler) const
      EXCLUDES(mu_);
  StatusOr<std::unique_ptr<Handler>> CreatePlugin(const std::string& handler,
                                                  const std::string& model_dir) const;

  // Lock order: a Backend's mu (held while loading it), then mu_ (taken briefly for logger_).
  mutable Mutex mu_;
  std::map<std::string, Maker> builtins_ GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Backend>> backend_of_ GUARDED_BY(mu_);  // by handler
  Logger logger_ GUARDED_BY(mu_);
};

// Registers "noop": answers every request with its own body (content type kept) — for
// measuring the server itself.
void RegisterNoopHandler(HandlerFactory* factory);

}  // namespace tserve::backend
