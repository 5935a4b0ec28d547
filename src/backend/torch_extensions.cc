#include "backend/torch_extensions.h"

#include <dlfcn.h>
#include <unistd.h>

#include "common/strings.h"

namespace tserve::backend {

namespace {

Status LoadOne(const std::string& path) {
  // RTLD_GLOBAL: the operators' symbols stay resolvable for libraries loaded later. Never
  // unloaded: LibTorch keeps pointers to the registered operators.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    return Status::InvalidArgument("torch_extension_libraries: cannot load \"" + path +
                                   "\": " + (why != nullptr ? why : "unknown error"));
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::vector<std::string>> LoadTorchExtensionLibraries(const std::string& setting) {
  std::vector<std::string> loaded;
  const std::string_view value = TrimWhitespace(setting);
  if (value.empty() || value == "none") return loaded;
  if (value == "auto") {
    if (access(kDebianTorchvisionOps, R_OK) != 0) return loaded;
    if (Status s = LoadOne(kDebianTorchvisionOps); !s.ok()) return s;
    loaded.emplace_back(kDebianTorchvisionOps);
    return loaded;
  }
  size_t start = 0;
  while (start <= value.size()) {
    size_t comma = value.find(',', start);
    if (comma == std::string_view::npos) comma = value.size();
    const std::string path(TrimWhitespace(value.substr(start, comma - start)));
    if (!path.empty()) {
      if (Status s = LoadOne(path); !s.ok()) return s;
      loaded.push_back(path);
    }
    start = comma + 1;
  }
  return loaded;
}

}  // namespace tserve::backend
