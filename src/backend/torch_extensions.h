#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace tserve::backend {

// Libraries of TorchScript operators that models may call but LibTorch itself lacks, such as
// torchvision's (`torchvision::nms`, `roi_align`: every scripted torchvision detector calls
// them). Loading one registers its operators with LibTorch (its static initialisers), so it
// must happen before any model is loaded.
//
// `setting` is the config value `torch_extension_libraries`: "auto" (the default) loads
// Debian's torchvision operator library when it is installed and says nothing when it is
// not; "" or "none" loads nothing; otherwise a comma-separated list of .so paths, each of
// which must load. Returns the paths loaded. Errors (InvalidArgument) name the path and
// dlerror()'s reason. Not thread safe: call once from main at startup.
StatusOr<std::vector<std::string>> LoadTorchExtensionLibraries(const std::string& setting);

// Where Debian 12's python3-torchvision installs its operator library (no Python symbols:
// it needs only libtorch_cpu and libc10).
inline constexpr const char* kDebianTorchvisionOps =
    "/usr/lib/python3/dist-packages/torchvision/_C.cpython-311-x86_64-linux-gnu.so";

}  // namespace tserve::backend
