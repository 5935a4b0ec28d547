#include "common/private_dir.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "common/file.h"

namespace tserve {

namespace {

std::string Errno(int err) { return std::strerror(err); }

Status CheckStat(const std::string& path, const struct stat& st) {
  if (S_ISLNK(st.st_mode)) {
    return Status::FailedPrecondition(path + " is a symbolic link: refusing to use it");
  }
  if (!S_ISDIR(st.st_mode)) {
    return Status::FailedPrecondition(path + " is not a directory: refusing to use it");
  }
  const uid_t me = geteuid();
  if (st.st_uid != me) {
    return Status::FailedPrecondition(path + " is owned by uid " + std::to_string(st.st_uid) +
                                      ", not by this user (uid " + std::to_string(me) +
                                      "): refusing to use it");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::FailedPrecondition(path + " is writable by other users (mode " + mode +
                                      "): refusing to use it");
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::string> MakePrivateTempDir(const std::string& parent, std::string_view prefix) {
  std::string tmpl = parent.empty() ? std::string(".") : parent;
  if (tmpl.back() != '/') tmpl.push_back('/');
  tmpl.append(prefix).append("XXXXXX");
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return Status::Internal("cannot create a private directory in " + parent + ": " + Errno(errno));
  }
  return tmpl;
}

Status CheckPrivateDir(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::NotFound(path + " does not exist");
    return Status::FailedPrecondition("cannot check " + path + ": " + Errno(errno));
  }
  return CheckStat(path, st);
}

Status EnsurePrivateDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::FailedPrecondition("cannot create " + path + ": " + Errno(errno));
  }
  return CheckPrivateDir(path);
}

StatusOr<std::string> ReadFileNoFollow(const std::string& path, size_t max_bytes) {
  ScopedFd file(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
  const int fd = file.get();
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound(path + " does not exist");
    if (errno == ELOOP) return Status::FailedPrecondition(path + " is a symbolic link");
    return Status::FailedPrecondition("cannot read " + path + ": " + Errno(errno));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return Status::FailedPrecondition(path + " is not a regular file");
  }
  std::string out(max_bytes, '\0');
  size_t got = 0;
  while (got < max_bytes) {
    ssize_t n = ::read(fd, out.data() + got, max_bytes - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  return out;
}

}  // namespace tserve
