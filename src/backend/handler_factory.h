#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "tserve/handler.h"

namespace tserve::backend {

// Makes Handler instances by the manifest's `handler` value: a built-in name
// ("image_classifier", "tensor", "noop", ...) or a plugin, i.e. a shared library inside the
// model's folder ("libmy_handler.so", "handlers/libx.so") exporting tserve_create_handler.
// A plugin library stays loaded while any handler made from it lives.
// Thread safety: register built-ins at startup; Create may be called from many threads.
class HandlerFactory {
 public:
  using Maker = std::function<std::unique_ptr<Handler>()>;

  void RegisterBuiltin(const std::string& name, Maker maker);
  std::vector<std::string> BuiltinNames() const;
  bool IsBuiltin(const std::string& name) const;

  // Errors name the handler and the cause: unknown built-in (listing the known ones), a
  // plugin path outside model_dir, dlopen's message, a missing factory symbol, a factory
  // that returned null or threw.
  StatusOr<std::unique_ptr<Handler>> Create(const std::string& handler,
                                            const std::string& model_dir) const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, Maker> builtins_;
};

// Registers "noop": answers every request with its own body (content type kept) — for
// measuring the server itself.
void RegisterNoopHandler(HandlerFactory* factory);

}  // namespace tserve::backend
