#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "serving/manifest.h"
#include "serving/model_config.h"

namespace tserve::serving {

// TorchServe's model name rule (SPEC §5): a letter, then letters, digits, '_', '.', '-'.
bool IsValidModelName(std::string_view name);

// The manifest's file inside an archive or model folder.
inline constexpr std::string_view kManifestPath = "MAR-INF/MANIFEST.json";

// An opened model: a .mar extracted to a private folder, or a model folder used in place.
// `dir` is an absolute path holding the archive's files (MAR-INF/MANIFEST.json,
// the serialized file, extra files); `extracted` says tserve made it, and whoever holds the
// ModelArchive owns that folder (RemoveExtractedArchive deletes it). A plain value type.
struct ModelArchive {
  std::string source;  // the path OpenModelArchive was given
  std::string dir;
  Manifest manifest;
  ModelConfig config;  // empty when the manifest names no configFile
  bool extracted = false;
};

// Bounds on what extracting one .mar may write (zip-bomb protection). The declared sizes
// are checked before anything is written and the bytes actually written are counted too,
// since a crafted archive can lie about its sizes (libzip does not stop at the declared
// size). A plain value type.
struct ExtractLimits {
  int64_t max_total_bytes = int64_t{4} << 30;  // all entries together, uncompressed
  int64_t max_entries = 65536;
  // An entry over 1 MiB that inflates more than this many times is refused; deflate's
  // ceiling is about 1032:1, so only runs of one byte come close.
  int64_t max_ratio = 1000;
};

// Opens `path`: a directory is a model folder, used in place; anything else is read as a
// zip (.mar) and extracted to a new folder extract_root/<basename>-XXXXXX (extract_root is
// created if missing). Entries with absolute paths, `..` components or symlink attributes
// are refused (zip-slip) before anything is written. Then reads MAR-INF/MANIFEST.json, the
// manifest's configFile if it names one, and checks the model name and that the
// serializedFile is a file in the archive. Every error reads "<path>: <cause>", e.g.
// "resnet18.mar: not a zip archive", "x.mar: MAR-INF/MANIFEST.json missing",
// "x.mar: model-config.yaml:3: batchSize must be ...". On error nothing is left in
// extract_root. Codes: NotFound for a missing path, InvalidArgument for a bad archive,
// Internal for I/O failures. An archive over `limits` is InvalidArgument ("x.mar: expands to
// more than N bytes", "... has more than N entries", "... entry E inflates more than N:1").
StatusOr<ModelArchive> OpenModelArchive(const std::string& path, const std::string& extract_root,
                                        const ExtractLimits& limits = {});

// Deletes archive.dir when OpenModelArchive extracted it; a model folder is left alone.
void RemoveExtractedArchive(const ModelArchive& archive);

// Writes a model archive for tserve-archiver: `files` maps paths inside the archive
// ("model.pt", "sub/vocab.txt") to files on disk; MAR-INF/MANIFEST.json is written from
// `manifest` (ManifestToJson). as_folder=false writes a zip (deflate) at out_path;
// as_folder=true writes a model folder with the same layout. Either way the result appears
// whole or not at all (written beside out_path, then renamed), replacing an existing
// archive or model folder at out_path (the caller decides whether overwriting is allowed);
// a directory at out_path that is not a model folder is never replaced. Errors: an unsafe
// or duplicate archive path, a missing input file, an I/O failure; each names the path.
Status WriteArchive(const std::string& out_path, const Manifest& manifest,
                    const std::vector<std::pair<std::string, std::string>>& files, bool as_folder);

}  // namespace tserve::serving
