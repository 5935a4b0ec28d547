#include "backend/torch_extensions.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/strings.h"

namespace tserve::backend {

namespace {

constexpr const char* kExtensionsKey = "torch_extension_libraries";

// A library listed in the setting: it must be there and readable (dlopen at startup would
// load LibTorch with it; what it holds is checked when the backend loads it).
Status CheckReadable(const std::string& path) {
  if (access(path.c_str(), R_OK) != 0) {
    return Status::InvalidArgument(std::string(kExtensionsKey) + ": cannot load \"" + path +
                                   "\": " + std::strerror(errno));
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::vector<std::string>> ResolveTorchExtensionLibraries(const std::string& setting) {
  std::vector<std::string> paths;
  const std::string_view value = TrimWhitespace(setting);
  if (value.empty() || value == "none") return paths;
  if (value == "auto") {
    if (access(kDebianTorchvisionOps, R_OK) == 0) paths.emplace_back(kDebianTorchvisionOps);
    return paths;
  }
  size_t start = 0;
  while (start <= value.size()) {
    size_t comma = value.find(',', start);
    if (comma == std::string_view::npos) comma = value.size();
    const std::string path(TrimWhitespace(value.substr(start, comma - start)));
    if (!path.empty()) {
      if (Status s = CheckReadable(path); !s.ok()) return s;
      paths.push_back(path);
    }
    start = comma + 1;
  }
  return paths;
}

Status RegisterTorchBackend(HandlerFactory* factory, const std::string& torch_extension_libraries,
                            std::vector<std::string> search_dirs) {
  StatusOr<std::vector<std::string>> extensions =
      ResolveTorchExtensionLibraries(torch_extension_libraries);
  if (!extensions.ok()) return extensions.status();
  BackendSpec spec;
  spec.name = "torch";
  spec.description = "TorchScript backend";
  spec.library = kTorchBackendLibrary;
  spec.handlers.assign(kTorchHandlerNames.begin(), kTorchHandlerNames.end());
  spec.search_dirs = std::move(search_dirs);
  spec.companions = std::move(*extensions);
  spec.companions_key = kExtensionsKey;
  spec.companions_description = "TorchScript operators";
  factory->RegisterBackend(std::move(spec));
  return Status::Ok();
}

}  // namespace tserve::backend
