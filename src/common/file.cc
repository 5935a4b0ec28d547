#include "common/file.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tserve {

namespace {

// One read() per this many bytes; /proc files and small configs fit in one.
constexpr size_t kReadChunk = 64 * 1024;

std::string Reason(int err) { return std::strerror(err); }

Status ReadError(const std::string& path, int err) {
  std::string m = "cannot read " + path + ": " + Reason(err);
  if (err == ENOENT) return Status::NotFound(std::move(m));
  if (err == EACCES || err == EPERM) return Status::PermissionDenied(std::move(m));
  return Status::Internal(std::move(m));
}

// mkdir(dir) failed with `err`: OK when dir is (now) a directory, else the error.
Status MkdirFailed(const std::string& dir, int err) {
  if (err == EEXIST) {
    struct stat st;
    if (::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return Status::Ok();
    return Status::FailedPrecondition("cannot create directory " + dir +
                                      ": it exists and is not a directory");
  }
  std::string m = "cannot create directory " + dir + ": " + Reason(err);
  if (err == EACCES || err == EPERM) return Status::PermissionDenied(std::move(m));
  return Status::Internal(std::move(m));
}

}  // namespace

ScopedFd::~ScopedFd() {
  if (fd_ >= 0) ::close(fd_);
}

int WriteFully(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return EIO;  // write(2) gave up without an error: call it an I/O error
    data.remove_prefix(static_cast<size_t>(n));
  }
  return 0;
}

StatusOr<std::string> ReadFile(const std::string& path, size_t max_bytes) {
  ScopedFd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  const int fd = file.get();
  if (fd < 0) return ReadError(path, errno);
  std::string out;
  struct stat st;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
    const size_t size = static_cast<size_t>(st.st_size);
    if (size > max_bytes) {
      return Status::ResourceExhausted(path + " is larger than " + std::to_string(max_bytes) +
                                       " bytes");
    }
    out.reserve(size);
  }
  char buf[kReadChunk];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ReadError(path, errno);
    if (n == 0) break;
    if (static_cast<size_t>(n) > max_bytes - out.size()) {
      return Status::ResourceExhausted(path + " is larger than " + std::to_string(max_bytes) +
                                       " bytes");
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Status WriteFileAtomically(const std::string& path, std::string_view contents, mode_t mode) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  // mkostemp's random suffix and O_EXCL: a name no one could have prepared as a link.
  std::string tmp = dir + (dir.back() == '/' ? "" : "/") + "." + base + ".XXXXXX";
  auto error = [&](const char* step, int err) {
    return Status::Internal("cannot write " + path + ": " + step + ": " + Reason(err));
  };
  const int fd = ::mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0) return error("create", errno);
  auto fail = [&](const char* step) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return error(step, err);
  };
  if (::fchmod(fd, mode) != 0) return fail("chmod");
  if (const int err = WriteFully(fd, contents); err != 0) {
    errno = err;
    return fail("write");
  }
  if (::fsync(fd) != 0) return fail("fsync");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return error("close", err);
  }
  // rename(2) replaces a symbolic link at `path` itself; it never follows it.
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return error("rename", err);
  }
  // Make the rename itself durable; a failure here leaves a correct file, so it is ignored.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return Status::Ok();
}

Status MakeDirectories(const std::string& path, mode_t mode) {
  std::string prefix;
  prefix.reserve(path.size());
  for (size_t i = 0; i <= path.size(); ++i) {
    const bool end_of_component = i == path.size() || path[i] == '/';
    // Skip the root "/" and empty components ("a//b", a trailing '/').
    if (end_of_component && !prefix.empty() && prefix.back() != '/') {
      if (::mkdir(prefix.c_str(), mode) != 0) {
        if (Status s = MkdirFailed(prefix, errno); !s.ok()) return s;
      }
    }
    if (i < path.size()) prefix.push_back(path[i]);
  }
  return Status::Ok();
}

}  // namespace tserve
