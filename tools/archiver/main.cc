// tserve-archiver: writes model archives (.mar) and model folders the way TorchServe's
// torch-model-archiver does, so archives made by either tool load in both servers.
//
// Exit codes: 0 written, 1 failure (one line on stderr), 2 usage error.

#include <sys/stat.h>

#include <CLI/CLI.hpp>

#include <ctime>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/file.h"
#include "common/strings.h"
#include "serving/manifest.h"
#include "serving/model_archive.h"
#include "serving/model_config.h"

namespace {

namespace fs = std::filesystem;
using tserve::Status;
using tserve::serving::Manifest;

// The torch-model-archiver release whose manifest format this tool writes. TorchServe only
// warns when archiverVersion is absent and never parses it, but scripts that read it expect
// torch-model-archiver's version shape, so we write the version we are compatible with.
constexpr char kArchiverVersion[] = "0.12.0";

struct Options {
  std::string model_name;
  std::string version = "1.0";
  std::string serialized_file;
  std::string handler;
  std::string extra_files;
  std::string config_file;
  std::string requirements_file;
  std::string model_file;
  std::string runtime = "python";
  std::string export_path = ".";
  std::string archive_format = "default";
  bool force = false;
};

// A failure to report: one line, exit 1.
struct Failure {
  std::string message;
};

std::string Now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%d/%m/%Y %H:%M:%S", &tm);  // torch-model-archiver's format
  return buf;
}

bool IsFile(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string BaseName(const std::string& p) {
  fs::path path(p);
  while (!path.empty() && path.filename().empty()) path = path.parent_path();
  return path.filename().string();
}

// The list of (path in archive, file on disk); a second source for one archive path is
// an error unless it is the same file.
class FileList {
 public:
  void Add(const std::string& arc, const std::string& disk) {
    std::error_code ec;
    fs::path canon = fs::weakly_canonical(disk, ec);
    auto [it, inserted] = sources_.emplace(arc, ec ? fs::path(disk) : canon);
    if (!inserted) {
      if (it->second == canon) return;
      throw Failure{"both " + it->second.string() + " and " + disk + " would be stored as " + arc};
    }
    files_.emplace_back(arc, disk);
  }
  const std::vector<std::pair<std::string, std::string>>& files() const { return files_; }

 private:
  std::map<std::string, fs::path> sources_;
  std::vector<std::pair<std::string, std::string>> files_;
};

std::string RequireFile(const std::string& option, const std::string& path) {
  if (!IsFile(path)) throw Failure{option + ": no such file: " + path};
  return path;
}

// A folder given in --extra-files: its contents go to the archive root, as
// torch-model-archiver copies them; hidden folders and __pycache__/__MACOSX are skipped.
void AddFolder(const fs::path& root, FileList* list) {
  std::error_code ec;
  fs::recursive_directory_iterator it(root, fs::directory_options::follow_directory_symlink, ec);
  if (ec) throw Failure{"--extra-files: cannot read " + root.string() + ": " + ec.message()};
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) throw Failure{"--extra-files: cannot read " + root.string() + ": " + ec.message()};
    const fs::path& p = it->path();
    std::string name = p.filename().string();
    if (it->is_directory(ec)) {
      if (name.starts_with(".") || name == "__pycache__" || name == "__MACOSX") {
        it.disable_recursion_pending();
      }
      continue;
    }
    if (!it->is_regular_file(ec)) continue;
    list->Add(fs::relative(p, root, ec).generic_string(), p.string());
  }
}

Status ValidateConfig(const std::string& path) {
  tserve::StatusOr<std::string> text = tserve::ReadFile(path);
  if (!text.ok()) return Status::InvalidArgument("--config-file: " + text.status().message());
  tserve::StatusOr<tserve::serving::ModelConfig> c =
      tserve::serving::ParseModelConfig(*text, BaseName(path));
  return c.ok() ? Status::Ok() : c.status();
}

void Run(const Options& o) {
  if (!tserve::serving::IsValidModelName(o.model_name)) {
    throw Failure{"invalid --model-name \"" + o.model_name +
                  "\": a letter, then letters, digits, '_', '.' or '-'"};
  }
  if (o.version.empty()) throw Failure{"--version must not be empty"};
  if (o.archive_format == "tgz") {
    throw Failure{
        "--archive-format tgz is not supported: tserve serves .mar archives and model "
        "folders (use default or no-archive)"};
  }
  if (!o.model_file.empty()) {
    throw Failure{
        "--model-file (eager-mode Python models) is not supported: script the model with "
        "torch.jit.script or torch.jit.trace and pass it as --serialized-file"};
  }
  std::error_code ec;
  if (!fs::is_directory(o.export_path, ec)) {
    throw Failure{"--export-path " + o.export_path + " is not a folder"};
  }
  const bool as_folder = o.archive_format == "no-archive";
  const std::string out =
      (fs::path(o.export_path) / (o.model_name + (as_folder ? "" : ".mar"))).string();
  if (fs::exists(fs::symlink_status(out, ec)) && !o.force) {
    throw Failure{out + " already exists; use --force (-f) to overwrite it"};
  }

  Manifest m;
  m.created_on = Now();
  m.runtime = o.runtime;
  m.model_name = o.model_name;
  m.model_version = o.version;
  m.archiver_version = kArchiverVersion;

  FileList files;
  if (!o.serialized_file.empty()) {
    m.serialized_file = BaseName(RequireFile("--serialized-file", o.serialized_file));
    files.Add(m.serialized_file, o.serialized_file);
  }
  // A handler that names a file (a plugin .so) travels in the archive under its base
  // name; anything else is a built-in handler's name.
  m.handler = o.handler;
  if (IsFile(o.handler)) {
    m.handler = BaseName(o.handler);
    files.Add(m.handler, o.handler);
  } else if (o.handler.find('/') != std::string::npos) {
    throw Failure{"--handler: no such file: " + o.handler};
  }
  if (!o.config_file.empty()) {
    RequireFile("--config-file", o.config_file);
    if (Status s = ValidateConfig(o.config_file); !s.ok()) throw Failure{s.message()};
    m.config_file = BaseName(o.config_file);
    files.Add(m.config_file, o.config_file);
  }
  if (!o.requirements_file.empty()) {
    m.requirements_file = BaseName(RequireFile("--requirements-file", o.requirements_file));
    files.Add(m.requirements_file, o.requirements_file);
  }
  for (std::string_view part : tserve::SplitString(o.extra_files, ',')) {
    std::string p(tserve::TrimWhitespace(part));
    if (p.empty()) continue;
    if (fs::is_directory(p, ec)) {
      AddFolder(p, &files);
    } else if (IsFile(p)) {
      files.Add(BaseName(p), p);
    } else {
      throw Failure{"--extra-files: no such file or folder: " + p};
    }
  }

  if (Status s = tserve::serving::WriteArchive(out, m, files.files(), as_folder); !s.ok()) {
    throw Failure{s.message()};
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"tserve-archiver: package a model as a TorchServe model archive (.mar)",
               "tserve-archiver"};
  app.add_option("--model-name", o.model_name,
                 "Model name; the archive is written as <export-path>/<model-name>.mar")
      ->required();
  app.add_option("-v,--version", o.version, "Model version")->capture_default_str();
  app.add_option("--serialized-file", o.serialized_file,
                 "TorchScript model file (.pt), stored by its base name");
  app.add_option("--handler", o.handler,
                 "Built-in handler name (image_classifier, tensor, noop, ...) or a plugin .so "
                 "file, stored by its base name")
      ->required();
  app.add_option("--extra-files", o.extra_files,
                 "Comma-separated files (stored by base name) or folders (their contents "
                 "stored at the archive root)");
  app.add_option("-c,--config-file", o.config_file,
                 "model-config.yaml, stored by base name and checked");
  app.add_option("-r,--requirements-file", o.requirements_file,
                 "requirements.txt, stored by base name");
  app.add_option("--model-file", o.model_file, "Not supported (eager-mode Python models)");
  app.add_option("--runtime", o.runtime, "Manifest runtime")
      ->check(CLI::IsMember({"python", "python3"}))
      ->capture_default_str();
  app.add_option("--export-path", o.export_path, "Folder to write the archive to")
      ->capture_default_str();
  app.add_option("--archive-format", o.archive_format,
                 "default: <model-name>.mar; no-archive: a model folder <model-name>/; "
                 "zip-store: same as default; tgz: not supported")
      ->check(CLI::IsMember({"default", "no-archive", "zip-store", "tgz"}))
      ->capture_default_str();
  app.add_flag("-f,--force", o.force, "Overwrite an existing archive or model folder");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "tserve-archiver: " << e.what() << "\nRun with --help for more information.\n";
    return 2;
  }

  try {
    Run(o);
  } catch (const Failure& f) {
    std::cerr << "tserve-archiver: " << f.message << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "tserve-archiver: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
