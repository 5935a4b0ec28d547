#include "serving/model_archive.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>
#include <utility>

#include "common/file.h"
#include "common/private_dir.h"
#include "common/strings.h"

namespace tserve::serving {

namespace {

namespace fs = std::filesystem;

Status Err(StatusCode code, const std::string& where, const std::string& what) {
  std::string m(where);
  m.append(": ").append(what);
  return {code, std::move(m)};
}

Status Invalid(const std::string& where, const std::string& what) {
  return Err(StatusCode::kInvalidArgument, where, what);
}

// Splits an archive path into its components, or explains why it is unsafe. "." and empty
// components are dropped; '\' counts as a separator too, since Windows tools write it.
Status SplitSafePath(std::string_view path, std::vector<std::string>* parts) {
  parts->clear();
  if (path.empty()) return Status::InvalidArgument("empty path");
  if (path.front() == '/' || path.front() == '\\') {
    return Status::InvalidArgument("absolute path");
  }
  if (path.size() >= 2 && path[1] == ':' && std::isalpha(static_cast<unsigned char>(path[0]))) {
    return Status::InvalidArgument("absolute path (drive letter)");
  }
  std::string cur;
  auto flush = [&]() -> Status {
    if (cur == "..") return Status::InvalidArgument("\"..\" component");
    if (!cur.empty() && cur != ".") parts->push_back(cur);
    cur.clear();
    return Status::Ok();
  };
  for (char c : path) {
    if (c == '/' || c == '\\') {
      if (Status s = flush(); !s.ok()) return s;
    } else {
      cur.push_back(c);
    }
  }
  if (Status s = flush(); !s.ok()) return s;
  if (parts->empty()) return Status::InvalidArgument("empty path");
  return Status::Ok();
}

// Whether an entry name is only "." components ("./", ".\\", "././"): the archive's root.
bool NamesTheRoot(std::string_view name) {
  return !name.empty() && name.find_first_not_of("./\\") == std::string_view::npos &&
         name.find("..") == std::string_view::npos;
}

std::string Join(const std::vector<std::string>& parts, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    if (i) out.push_back('/');
    out.append(parts[i]);
  }
  return out;
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string ZipErrorString(int code) {
  zip_error_t err;
  zip_error_init_with_code(&err, code);
  std::string s = zip_error_strerror(&err);
  zip_error_fini(&err);
  return s;
}

// Owners for libzip handles. zip_discard: an archive opened for writing is abandoned unless
// zip_close succeeded (and the pointer was released).
struct ZipCloser {
  void operator()(zip_t* z) const { zip_discard(z); }
};
using ZipPtr = std::unique_ptr<zip_t, ZipCloser>;

struct ZipFileCloser {
  void operator()(zip_file_t* f) const { zip_fclose(f); }
};

// One zip entry, checked before anything is written.
struct Entry {
  zip_uint64_t index;
  std::vector<std::string> parts;
  bool is_dir;
  mode_t mode;  // permission bits for a file
};

// Reads every entry's name and attributes and refuses the unsafe ones (zip-slip) and, from
// the declared sizes, archives over `limits` (zip bombs), before anything is written.
Status ListEntries(zip_t* za, const std::string& where, const ExtractLimits& limits,
                   std::vector<Entry>* entries) {
  zip_int64_t n = zip_get_num_entries(za, 0);
  if (n > limits.max_entries) {
    return Invalid(where, "has more than " + std::to_string(limits.max_entries) + " entries");
  }
  int64_t declared_total = 0;
  for (zip_int64_t i = 0; i < n; ++i) {
    auto idx = static_cast<zip_uint64_t>(i);
    const char* raw = zip_get_name(za, idx, ZIP_FL_ENC_GUESS);
    if (raw == nullptr)
      return Invalid(where, "unreadable entry name: " + std::string(zip_strerror(za)));
    std::string name(raw);
    Entry e{idx, {}, !name.empty() && (name.back() == '/' || name.back() == '\\'), 0644};
    // "./" names the archive root itself: nothing to create.
    if (e.is_dir && NamesTheRoot(name)) continue;
    if (Status s = SplitSafePath(name, &e.parts); !s.ok()) {
      return Invalid(where, "unsafe entry " + Quoted(name) + " (" + s.message() +
                                "): refusing to extract outside the model folder");
    }
    zip_uint8_t opsys = 0;
    zip_uint32_t attr = 0;
    if (zip_file_get_external_attributes(za, idx, 0, &opsys, &attr) == 0 &&
        opsys == ZIP_OPSYS_UNIX) {
      mode_t mode = static_cast<mode_t>(attr >> 16);
      mode_t type = mode & S_IFMT;
      if (type == S_IFLNK) {
        return Invalid(
            where, "unsafe entry " + Quoted(name) + " (symbolic link): refusing to extract links");
      }
      if (type == S_IFDIR) e.is_dir = true;
      if (type != 0 && type != S_IFREG && type != S_IFDIR) {
        return Invalid(where, "entry " + Quoted(name) + " is not a regular file or folder");
      }
      if (mode & 0111) e.mode = 0755;
    }
    if (!e.is_dir) {
      zip_stat_t sb;
      zip_stat_init(&sb);
      if (zip_stat_index(za, idx, 0, &sb) != 0 || !(sb.valid & ZIP_STAT_SIZE)) {
        return Invalid(where, "cannot read the size of entry " + Quoted(name));
      }
      auto size = static_cast<int64_t>(std::min<zip_uint64_t>(sb.size, INT64_MAX));
      if (size > limits.max_total_bytes - declared_total) {
        return Invalid(where,
                       "expands to more than " + std::to_string(limits.max_total_bytes) + " bytes");
      }
      declared_total += size;
      if ((sb.valid & ZIP_STAT_COMP_SIZE) && size > (int64_t{1} << 20) &&
          size / static_cast<int64_t>(std::max<zip_uint64_t>(sb.comp_size, 1)) > limits.max_ratio) {
        return Invalid(where, "entry " + Quoted(name) + " inflates more than " +
                                  std::to_string(limits.max_ratio) + ":1");
      }
    }
    entries->push_back(std::move(e));
  }
  return Status::Ok();
}

Status MakeDirs(const std::string& root, const std::vector<std::string>& parts, size_t n,
                const std::string& where) {
  std::string path = root;
  for (size_t i = 0; i < n; ++i) {
    path.append("/").append(parts[i]);
    if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
      return Err(StatusCode::kInternal, where,
                 "cannot create " + Join(parts, i + 1) + ": " + std::strerror(errno));
    }
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return Invalid(where, Join(parts, i + 1) + " is both a file and a folder in the archive");
    }
  }
  return Status::Ok();
}

// `budget`: bytes the whole extraction may still write, counted rather than trusted to the
// headers.
Status ExtractEntry(zip_t* za, const Entry& e, const std::string& dir, const std::string& where,
                    const ExtractLimits& limits, int64_t* budget) {
  const std::string rel = Join(e.parts, e.parts.size());
  if (e.is_dir) return MakeDirs(dir, e.parts, e.parts.size(), where);
  if (Status s = MakeDirs(dir, e.parts, e.parts.size() - 1, where); !s.ok()) return s;

  std::unique_ptr<zip_file_t, ZipFileCloser> zf(zip_fopen_index(za, e.index, 0));
  if (!zf) return Invalid(where, "cannot read entry " + rel + ": " + zip_strerror(za));
  const std::string out_path = dir + "/" + rel;
  // O_EXCL: a second entry with the same name is an error, not a silent overwrite.
  ScopedFd fd(
      ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, e.mode));
  if (fd.get() < 0) {
    if (errno == EEXIST) return Invalid(where, "entry " + rel + " appears twice");
    return Err(StatusCode::kInternal, where, "cannot create " + rel + ": " + std::strerror(errno));
  }
  std::vector<char> buf(1 << 16);
  while (true) {
    zip_int64_t n = zip_fread(zf.get(), buf.data(), buf.size());
    if (n < 0) {
      return Invalid(where, "entry " + rel + " is corrupt: " + zip_file_strerror(zf.get()));
    }
    if (n == 0) break;
    if (n > *budget) {
      return Invalid(where,
                     "expands to more than " + std::to_string(limits.max_total_bytes) + " bytes");
    }
    *budget -= n;
    if (const int err = WriteFully(fd.get(), std::string_view(buf.data(), static_cast<size_t>(n)));
        err != 0) {
      return Err(StatusCode::kInternal, where, "cannot write " + rel + ": " + std::strerror(err));
    }
  }
  if (::close(fd.Release()) != 0) {
    return Err(StatusCode::kInternal, where, "cannot write " + rel + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

std::string SafeStem(const std::string& path) {
  std::string base = fs::path(path).filename().string();
  if (base.size() > 4 && base.compare(base.size() - 4, 4, ".mar") == 0)
    base.resize(base.size() - 4);
  for (char& c : base) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') c = '_';
  }
  if (base.empty() || base[0] == '.') base.insert(0, "model");
  return base;
}

// Extracts the zip at `path` into a new folder under extract_root; returns that folder.
StatusOr<std::string> Extract(const std::string& path, const std::string& extract_root,
                              const ExtractLimits& limits) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0) {
    return Invalid(path, "not a zip archive (empty file)");
  }
  int zerr = 0;
  ZipPtr za(zip_open(path.c_str(), ZIP_RDONLY, &zerr));
  if (!za) {
    if (zerr == ZIP_ER_NOZIP) return Invalid(path, "not a zip archive");
    if (zerr == ZIP_ER_NOENT) return Err(StatusCode::kNotFound, path, "no such file");
    return Invalid(path, "cannot open as a zip archive: " + ZipErrorString(zerr));
  }
  if (zip_name_locate(za.get(), std::string(kManifestPath).c_str(), 0) < 0) {
    return Invalid(path, std::string(kManifestPath) + " missing");
  }
  std::vector<Entry> entries;
  if (Status s = ListEntries(za.get(), path, limits, &entries); !s.ok()) return s;

  std::error_code ec;
  fs::path root = fs::absolute(extract_root.empty() ? fs::path(".") : fs::path(extract_root), ec);
  if (ec) {
    return Err(StatusCode::kInternal, path,
               "cannot create extraction folder " + extract_root + ": " + ec.message());
  }
  if (root.has_parent_path()) {
    if (Status s = MakeDirectories(root.parent_path().string()); !s.ok()) {
      return Err(StatusCode::kInternal, path,
                 "cannot create extraction folder " + extract_root + ": " + s.message());
    }
  }
  // Only this user may change the root (issue 7 #11): nobody else can then swap an
  // extracted folder or plant a link in it. Not a link itself, ours, not group/other
  // writable; created 0700 when missing.
  if (Status s = EnsurePrivateDir(root.string()); !s.ok()) {
    return Err(StatusCode::kInternal, path, "unsafe extraction folder: " + s.message());
  }
  std::string tmpl = (root / (SafeStem(path) + "-XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return Err(StatusCode::kInternal, path,
               "cannot create a folder in " + root.string() + ": " + std::strerror(errno));
  }
  int64_t budget = limits.max_total_bytes;
  for (const Entry& e : entries) {
    if (Status s = ExtractEntry(za.get(), e, tmpl, path, limits, &budget); !s.ok()) {
      fs::remove_all(tmpl, ec);
      return s;
    }
  }
  return tmpl;
}

// Reads and checks the manifest, config and serialized file of an opened folder.
Status LoadContents(const std::string& where, ModelArchive* a) {
  std::string manifest_path = a->dir + "/" + std::string(kManifestPath);
  if (!IsRegularFile(manifest_path)) return Invalid(where, std::string(kManifestPath) + " missing");
  StatusOr<std::string> text = ReadFile(manifest_path);
  if (!text.ok()) return Err(StatusCode::kInternal, where, text.status().message());
  StatusOr<Manifest> m = ParseManifest(*text, kManifestPath);
  if (!m.ok()) return Invalid(where, m.status().message());
  a->manifest = std::move(m).value();
  const Manifest& mf = a->manifest;

  if (!IsValidModelName(mf.model_name)) {
    return Invalid(where, "invalid model name " + Quoted(mf.model_name) + " in " +
                              std::string(kManifestPath) +
                              ": a letter, then letters, digits, '_', '.' or '-'");
  }

  std::vector<std::string> parts;
  if (!mf.serialized_file.empty()) {
    if (Status s = SplitSafePath(mf.serialized_file, &parts); !s.ok()) {
      return Invalid(where, "serializedFile " + Quoted(mf.serialized_file) +
                                " must be a path inside the archive (" + s.message() + ")");
    }
    if (!IsRegularFile(a->dir + "/" + Join(parts, parts.size()))) {
      return Invalid(where, "serializedFile " + mf.serialized_file + " named in " +
                                std::string(kManifestPath) + " is missing");
    }
  }

  if (!mf.config_file.empty()) {
    if (Status s = SplitSafePath(mf.config_file, &parts); !s.ok()) {
      return Invalid(where, "configFile " + Quoted(mf.config_file) +
                                " must be a path inside the archive (" + s.message() + ")");
    }
    std::string config_path = a->dir + "/" + Join(parts, parts.size());
    if (!IsRegularFile(config_path)) {
      return Invalid(where, "configFile " + mf.config_file + " named in " +
                                std::string(kManifestPath) + " is missing");
    }
    text = ReadFile(config_path);
    if (!text.ok()) return Err(StatusCode::kInternal, where, text.status().message());
    StatusOr<ModelConfig> c = ParseModelConfig(*text, mf.config_file);
    if (!c.ok()) return Invalid(where, c.status().message());
    a->config = std::move(c).value();
  }
  return Status::Ok();
}

// Checks the archive paths of WriteArchive's inputs: safe, unique, no file/folder clash.
Status CheckArchivePaths(const std::vector<std::pair<std::string, std::string>>& files,
                         const std::string& out_path, std::vector<std::string>* normalized) {
  std::set<std::string> file_set;
  std::set<std::string> dir_set = {"MAR-INF"};
  file_set.insert(std::string(kManifestPath));
  std::vector<std::string> parts;
  for (const auto& [arc, disk] : files) {
    if (Status s = SplitSafePath(arc, &parts); !s.ok()) {
      return Invalid(out_path, "cannot store " + disk + " as " + Quoted(arc) + ": " + s.message());
    }
    std::string norm = Join(parts, parts.size());
    if (!file_set.insert(norm).second) {
      return Invalid(out_path, "two files would be stored as " + norm);
    }
    for (size_t i = 1; i < parts.size(); ++i) dir_set.insert(Join(parts, i));
    normalized->push_back(std::move(norm));
  }
  for (const std::string& d : dir_set) {
    if (file_set.count(d)) {
      return Invalid(out_path, d + " would be both a file and a folder in the archive");
    }
  }
  for (const auto& [arc, disk] : files) {
    struct stat st;
    if (::stat(disk.c_str(), &st) != 0) {
      return Err(errno == ENOENT ? StatusCode::kNotFound : StatusCode::kInternal, disk,
                 std::strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) return Invalid(disk, "not a regular file");
  }
  return Status::Ok();
}

Status WriteZip(const std::string& out_path, const std::string& manifest_json,
                const std::vector<std::pair<std::string, std::string>>& files,
                const std::vector<std::string>& names) {
  struct stat st;
  if (::stat(out_path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return Invalid(out_path, "is a folder, not replacing it with an archive");
  }
  int zerr = 0;
  // libzip writes to a temporary file beside out_path and renames it at zip_close.
  ZipPtr za(zip_open(out_path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &zerr));
  if (!za) return Err(StatusCode::kInternal, out_path, "cannot create: " + ZipErrorString(zerr));

  auto add = [&](const std::string& name, zip_source_t* src, mode_t mode) -> Status {
    if (src == nullptr) {
      return Err(StatusCode::kInternal, out_path,
                 "cannot add " + name + ": " + zip_strerror(za.get()));
    }
    zip_int64_t idx = zip_file_add(za.get(), name.c_str(), src, ZIP_FL_ENC_UTF_8);
    if (idx < 0) {
      zip_source_free(src);
      return Err(StatusCode::kInternal, out_path,
                 "cannot add " + name + ": " + zip_strerror(za.get()));
    }
    auto i = static_cast<zip_uint64_t>(idx);
    if (zip_set_file_compression(za.get(), i, ZIP_CM_DEFLATE, 0) != 0 ||
        zip_file_set_external_attributes(za.get(), i, 0, ZIP_OPSYS_UNIX,
                                         static_cast<zip_uint32_t>(S_IFREG | mode) << 16) != 0) {
      return Err(StatusCode::kInternal, out_path,
                 "cannot add " + name + ": " + zip_strerror(za.get()));
    }
    return Status::Ok();
  };

  for (size_t i = 0; i < files.size(); ++i) {
    const std::string& disk = files[i].second;
    mode_t mode = 0644;
    if (::stat(disk.c_str(), &st) == 0 && (st.st_mode & 0111)) mode = 0755;
    if (Status s = add(names[i], zip_source_file(za.get(), disk.c_str(), 0, -1), mode); !s.ok()) {
      return s;
    }
  }
  // The buffer is read at zip_close; manifest_json outlives it.
  zip_source_t* msrc = zip_source_buffer(za.get(), manifest_json.data(), manifest_json.size(), 0);
  if (Status s = add(std::string(kManifestPath), msrc, 0644); !s.ok()) return s;

  if (zip_close(za.get()) != 0) {
    return Err(StatusCode::kInternal, out_path,
               std::string("cannot write: ") + zip_strerror(za.get()));
  }
  (void)za.release();  // zip_close freed it
  return Status::Ok();
}

Status WriteFolder(const std::string& out_path, const std::string& manifest_json,
                   const std::vector<std::pair<std::string, std::string>>& files,
                   const std::vector<std::string>& names) {
  std::error_code ec;
  struct stat st;
  const bool exists = ::lstat(out_path.c_str(), &st) == 0;
  if (exists) {
    bool is_model_folder =
        S_ISDIR(st.st_mode) &&
        (IsRegularFile(out_path + "/" + std::string(kManifestPath)) || fs::is_empty(out_path, ec));
    if (!is_model_folder) {
      return Invalid(out_path, "exists and is not a model folder; not replacing it");
    }
  }
  std::string tmp = out_path;
  while (tmp.size() > 1 && tmp.back() == '/') tmp.pop_back();
  tmp += ".tmp-XXXXXX";
  if (::mkdtemp(tmp.data()) == nullptr) {
    return Err(StatusCode::kInternal, out_path,
               std::string("cannot create: ") + std::strerror(errno));
  }
  auto fail = [&](const std::string& what) {
    fs::remove_all(tmp, ec);
    return Err(StatusCode::kInternal, out_path, what);
  };
  for (size_t i = 0; i < files.size(); ++i) {
    fs::path dst = fs::path(tmp) / names[i];
    if (Status s = MakeDirectories(dst.parent_path().string()); !s.ok()) return fail(s.message());
    fs::copy_file(files[i].second, dst, ec);
    if (ec) return fail("cannot copy " + files[i].second + ": " + ec.message());
  }
  if (Status s = MakeDirectories(tmp + "/MAR-INF"); !s.ok()) return fail(s.message());
  if (Status s = WriteFileAtomically(tmp + "/" + std::string(kManifestPath), manifest_json, 0644);
      !s.ok()) {
    return fail(s.message());
  }
  if (exists) {
    // Swap in the new folder in one step where the file system allows it, then drop the old.
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, out_path.c_str(), RENAME_EXCHANGE) == 0) {
      fs::remove_all(tmp, ec);
      return Status::Ok();
    }
    fs::remove_all(out_path, ec);
    if (ec) return fail("cannot replace the old folder: " + ec.message());
  }
  if (::rename(tmp.c_str(), out_path.c_str()) != 0) {
    return fail(std::string("cannot rename into place: ") + std::strerror(errno));
  }
  return Status::Ok();
}

}  // namespace

bool IsValidModelName(std::string_view name) {
  if (name.empty()) return false;
  auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  if (!alpha(name[0])) return false;
  for (char c : name.substr(1)) {
    if (!alpha(c) && !(c >= '0' && c <= '9') && c != '_' && c != '.' && c != '-') return false;
  }
  return true;
}

StatusOr<ModelArchive> OpenModelArchive(const std::string& path, const std::string& extract_root,
                                        const ExtractLimits& limits) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return Err(StatusCode::kNotFound, path, "no such file or folder");
    }
    return Err(StatusCode::kInternal, path, std::strerror(errno));
  }
  ModelArchive a;
  a.source = path;
  if (S_ISDIR(st.st_mode)) {
    char* real = ::realpath(path.c_str(), nullptr);
    if (real == nullptr) return Err(StatusCode::kInternal, path, std::strerror(errno));
    a.dir = real;
    ::free(real);
    a.extracted = false;
  } else {
    StatusOr<std::string> dir = Extract(path, extract_root, limits);
    if (!dir.ok()) return dir.status();
    a.dir = std::move(dir).value();
    a.extracted = true;
  }
  if (Status s = LoadContents(path, &a); !s.ok()) {
    RemoveExtractedArchive(a);
    return s;
  }
  return a;
}

void RemoveExtractedArchive(const ModelArchive& archive) {
  if (!archive.extracted || archive.dir.empty()) return;
  std::error_code ec;
  fs::remove_all(archive.dir, ec);
}

Status WriteArchive(const std::string& out_path, const Manifest& manifest,
                    const std::vector<std::pair<std::string, std::string>>& files, bool as_folder) {
  std::vector<std::string> names;
  if (Status s = CheckArchivePaths(files, out_path, &names); !s.ok()) return s;
  const std::string json = ManifestToJson(manifest);
  return as_folder ? WriteFolder(out_path, json, files, names)
                   : WriteZip(out_path, json, files, names);
}

}  // namespace tserve::serving
