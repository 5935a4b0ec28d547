#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace tserve::serving {

// One model to load at startup: a .mar or model folder inside the model store.
// `name` is empty when the entry gave none: the manifest's modelName is used then.
// `path` is the resolved absolute path (symlinks resolved). A plain value type.
struct ModelSpec {
  std::string name;
  std::string path;

  bool operator==(const ModelSpec&) const = default;
};

// Resolves `relative_or_absolute` (a path relative to the model store, or an absolute
// path) with realpath and checks the result lies strictly inside the store's realpath, so
// neither `..` nor a symlink can reach outside it. Returns the resolved absolute path.
// Errors: NotFound when the path does not exist ("<path>: not found in model store <store>"),
// InvalidArgument when it resolves outside the store, when no store is configured or the
// store does not exist. Reused by the management API for register requests.
StatusOr<std::string> ResolveInsideStore(const std::string& model_store,
                                         const std::string& relative_or_absolute);

// Resolves TorchServe's `--models` / `load_models` entries (each may itself hold a
// comma-separated list; blanks are skipped):
//   all          every .mar file and every model folder (one holding
//                MAR-INF/MANIFEST.json) in the store, sorted by file name; hidden entries
//                are skipped; must be the only entry (case-insensitive, as TorchServe)
//   a.mar        a file or folder in the store (absolute paths only inside the store)
//   name=a.mar   the same, loaded under `name` (validated with IsValidModelName)
// Errors name the entry: an invalid name, a URL (not supported at startup), a missing file
// (NotFound), a path outside the store. No entries → an empty list.
StatusOr<std::vector<ModelSpec>> ResolveLoadModels(const std::vector<std::string>& entries,
                                                   const std::string& model_store);

}  // namespace tserve::serving
