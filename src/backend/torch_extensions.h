#pragma once

// The TorchScript backend as the server sees it, without LibTorch: the handlers it provides,
// the module that holds them (libtserve_torch.so, loaded by the first model that needs one:
// HandlerFactory), and the operator libraries loaded with it.

#include <array>
#include <string>
#include <vector>

#include "backend/handler_factory.h"
#include "common/status.h"

namespace tserve::backend {

// The module holding the TorchScript handlers (built when LibTorch is found: CMake's
// TSERVE_WITH_TORCH), next to the tserve binary or in <bin>/../lib/tserve.
inline constexpr const char* kTorchBackendLibrary = "libtserve_torch.so";

// The built-in handlers the module provides (torchscript_handlers.h describes them; "llm":
// llm_engine.h).
inline constexpr std::array<const char*, 5> kTorchHandlerNames = {
    "image_classifier", "image_segmenter", "object_detector", "tensor", "llm"};

// Libraries of TorchScript operators that models may call but LibTorch itself lacks, such as
// torchvision's (`torchvision::nms`, `roi_align`: every scripted torchvision detector calls
// them). Loading one registers its operators with LibTorch (its static initialisers), so it
// happens right after the module is loaded, before its first model.
//
// `setting` is the config value `torch_extension_libraries`: "auto" (the default) names
// Debian's torchvision operator library when it is installed and nothing when it is not; ""
// or "none" names nothing; otherwise a comma-separated list of .so paths, each of which must
// exist. Returns the paths to load; loads nothing (LibTorch is not touched at startup).
// Errors (InvalidArgument) name the path and why it cannot be read.
StatusOr<std::vector<std::string>> ResolveTorchExtensionLibraries(const std::string& setting);

// Declares the TorchScript backend in `factory`: kTorchHandlerNames from kTorchBackendLibrary
// (searched in `search_dirs`, default DefaultBackendDirs()), with the libraries of
// `torch_extension_libraries` (checked now, loaded with the module). Errors: those of
// ResolveTorchExtensionLibraries.
Status RegisterTorchBackend(HandlerFactory* factory, const std::string& torch_extension_libraries,
                            std::vector<std::string> search_dirs = {});

// Where Debian 12's python3-torchvision installs its operator library (no Python symbols:
// it needs only libtorch_cpu and libc10).
inline constexpr const char* kDebianTorchvisionOps =
    "/usr/lib/python3/dist-packages/torchvision/_C.cpython-311-x86_64-linux-gnu.so";

}  // namespace tserve::backend
