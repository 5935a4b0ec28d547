// The entry points of the TorchScript backend module, libtserve_torch.so (tserve/handler.h,
// "backend module"). The module holds the TorchScript handlers and its own copies of the
// tserve code they use, all hidden: these three symbols are all it exports, so nothing of it
// clashes with the executable that loads it.

#include "backend/torch_extensions.h"
#include "backend/torchscript_handlers.h"
#include "tserve/handler.h"

#define TSERVE_MODULE_EXPORT __attribute__((visibility("default")))

namespace {

// kTorchHandlerNames, null-terminated.
constexpr auto kNames = [] {
  std::array<const char*, tserve::backend::kTorchHandlerNames.size() + 1> names{};
  for (size_t i = 0; i < tserve::backend::kTorchHandlerNames.size(); ++i) {
    names[i] = tserve::backend::kTorchHandlerNames[i];
  }
  return names;
}();

}  // namespace

extern "C" {

TSERVE_MODULE_EXPORT extern const int tserve_api_version = TSERVE_API_VERSION;

TSERVE_MODULE_EXPORT const char* const* tserve_backend_handler_names() { return kNames.data(); }

TSERVE_MODULE_EXPORT tserve::Handler* tserve_backend_create_handler(const char* name) {
  if (name == nullptr) return nullptr;
  return tserve::backend::MakeTorchHandler(name).release();
}

}  // extern "C"
