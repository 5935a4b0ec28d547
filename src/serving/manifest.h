#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace tserve::serving {

// The contents of a model archive's MAR-INF/MANIFEST.json, in TorchServe's layout:
//   {"createdOn", "runtime", "model": {"modelName", "serializedFile", "handler",
//    "modelVersion", "requirementsFile", "configFile", "description"}, "archiverVersion"}
// Empty strings stand for absent optional keys. A plain value type.
struct Manifest {
  std::string created_on;
  std::string runtime = "python";
  std::string model_name;
  std::string model_version;
  std::string serialized_file;
  std::string handler;
  std::string config_file;
  std::string requirements_file;
  std::string description;
  std::string archiver_version;

  bool operator==(const Manifest&) const = default;
};

// The version TorchServe assumes when a manifest names none.
inline constexpr std::string_view kDefaultModelVersion = "1.0";

// Parses MANIFEST.json text. `source` names the file in error messages, which read
// "<source>: <problem>": invalid JSON (with line and column), a missing or empty
// model.modelName or model.handler, a key of the wrong type. modelVersion defaults to
// "1.0" and runtime to "python"; a numeric modelVersion (1.0) is accepted as its text.
// The description may be top level (TorchServe's Java reads both) or under "model".
// Unknown keys are ignored, as TorchServe does.
StatusOr<Manifest> ParseManifest(std::string_view json, std::string_view source);

// MANIFEST.json text as torch-model-archiver writes it: indent 2, keys in its order,
// empty optional keys omitted. ParseManifest(ManifestToJson(m)) == m for a valid m.
std::string ManifestToJson(const Manifest& manifest);

}  // namespace tserve::serving
