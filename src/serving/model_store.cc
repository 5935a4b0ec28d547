#include "serving/model_store.h"

#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "common/strings.h"
#include "serving/model_archive.h"

namespace tserve::serving {

namespace {

struct FreeDeleter {
  void operator()(char* p) const { ::free(p); }
};

// realpath(3) as a string; empty with errno set on failure.
std::string RealPath(const std::string& path) {
  std::unique_ptr<char, FreeDeleter> real(::realpath(path.c_str(), nullptr));
  return real ? std::string(real.get()) : std::string();
}

StatusOr<std::string> RealStore(const std::string& model_store) {
  if (model_store.empty()) {
    return Status::InvalidArgument("no model store configured (set model_store or --model-store)");
  }
  std::string real = RealPath(model_store);
  if (real.empty()) {
    return Status::InvalidArgument("model store " + model_store + ": " + std::strerror(errno));
  }
  struct stat st;
  if (::stat(real.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument("model store " + model_store + " is not a folder");
  }
  return real;
}

// Every .mar and every model folder directly in the store, sorted by name.
StatusOr<std::vector<ModelSpec>> ListStore(const std::string& store, const std::string& given) {
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(store.c_str()), ::closedir);
  if (!d) return Status::InvalidArgument("model store " + given + ": " + std::strerror(errno));
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d.get())) {
    std::string name = e->d_name;
    if (name.empty() || name[0] == '.') continue;
    std::string full = store + "/" + name;
    struct stat st;
    if (::stat(full.c_str(), &st) != 0) continue;  // a dangling link: not a model
    bool is_mar = S_ISREG(st.st_mode) && EndsWith(name, ".mar");
    bool is_folder =
        S_ISDIR(st.st_mode) && ::stat((full + "/" + std::string(kManifestPath)).c_str(), &st) == 0;
    if (is_mar || is_folder) names.push_back(std::move(name));
  }
  std::sort(names.begin(), names.end());
  std::vector<ModelSpec> out;
  for (const std::string& name : names) {
    StatusOr<std::string> path = ResolveInsideStore(store, name);
    if (!path.ok()) {
      return Status(path.status().code(), "load_models: " + path.status().message());
    }
    out.push_back({"", std::move(path).value()});
  }
  return out;
}

}  // namespace

StatusOr<std::string> ResolveInsideStore(const std::string& model_store,
                                         const std::string& relative_or_absolute) {
  StatusOr<std::string> store = RealStore(model_store);
  if (!store.ok()) return store.status();
  const std::string& p = relative_or_absolute;
  if (p.empty()) return Status::InvalidArgument("empty model path");
  std::string candidate = p[0] == '/' ? p : *store + "/" + p;
  std::string real = RealPath(candidate);
  if (real.empty()) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return Status::NotFound(p + ": not found in model store " + model_store);
    }
    return Status::InvalidArgument(p + ": " + std::strerror(errno));
  }
  // Strictly below the store: "/store-other" or the store itself do not count.
  const std::string& root = *store;
  bool inside = root == "/"
                    ? real.size() > 1
                    : real.size() > root.size() + 1 && real.compare(0, root.size(), root) == 0 &&
                          real[root.size()] == '/';
  if (!inside) {
    return Status::InvalidArgument(p + ": resolves to " + real + ", outside the model store " +
                                   model_store);
  }
  return real;
}

StatusOr<std::vector<ModelSpec>> ResolveLoadModels(const std::vector<std::string>& entries,
                                                   const std::string& model_store) {
  std::vector<std::string> items;
  for (const std::string& entry : entries) {
    for (std::string_view part : SplitString(entry, ',')) {
      part = TrimWhitespace(part);
      if (!part.empty()) items.emplace_back(part);
    }
  }
  if (items.empty()) return std::vector<ModelSpec>{};
  // A missing or unset store is one error about the store, not one per entry.
  StatusOr<std::string> store = RealStore(model_store);
  if (!store.ok()) return store.status();

  bool has_all = std::any_of(items.begin(), items.end(),
                             [](const std::string& s) { return EqualsIgnoreCase(s, "all"); });
  if (has_all) {
    if (items.size() != 1) {
      return Status::InvalidArgument("load_models: \"all\" cannot be combined with other models");
    }
    return ListStore(*store, model_store);
  }

  std::vector<ModelSpec> out;
  for (const std::string& item : items) {
    ModelSpec spec;
    std::string file = item;
    size_t eq = item.find('=');
    if (eq != std::string::npos) {
      spec.name = TrimWhitespace(std::string_view(item).substr(0, eq));
      file = TrimWhitespace(std::string_view(item).substr(eq + 1));
      if (!IsValidModelName(spec.name)) {
        return Status::InvalidArgument("load_models: invalid model name \"" + spec.name +
                                       "\" in \"" + item +
                                       "\": a letter, then letters, digits, '_', '.' or '-'");
      }
      if (file.empty()) {
        return Status::InvalidArgument("load_models: no file after '=' in \"" + item + "\"");
      }
    }
    if (file.find("://") != std::string::npos) {
      return Status::InvalidArgument("load_models: \"" + item +
                                     "\": URLs are not supported at startup; put the archive "
                                     "in the model store");
    }
    StatusOr<std::string> path = ResolveInsideStore(model_store, file);
    if (!path.ok()) {
      return Status(path.status().code(), "load_models: " + path.status().message());
    }
    spec.path = std::move(path).value();
    out.push_back(std::move(spec));
  }
  return out;
}

}  // namespace tserve::serving
