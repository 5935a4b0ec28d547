#pragma once

#include <sys/types.h>

#include <cstddef>
#include <limits>
#include <string>
#include <string_view>

#include "common/status.h"

// Whole-file reads, atomic writes and `mkdir -p`: the one copy of each for every module and
// tool. Stateless functions, thread-safe. Every error message names the path and the reason
// (strerror of errno), e.g. "cannot read /etc/x.yaml: Permission denied".
// (For files another local user could redirect with a symbolic link, see common/private_dir.h.)
namespace tserve {

// Owns a file descriptor: closes it at scope end unless Release()d. -1 owns nothing.
class ScopedFd {
 public:
  explicit ScopedFd(int fd = -1) : fd_(fd) {}
  ~ScopedFd();
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return fd_; }
  // Gives up ownership: the caller closes it (and sees close's error).
  int Release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

// Writes all of `data` to `fd`, retrying after short writes and EINTR. Returns 0, or the
// errno of the write that failed (EIO if write(2) wrote nothing without an error).
int WriteFully(int fd, std::string_view data);

// ReadFile's default: no limit on the size.
inline constexpr size_t kNoFileSizeLimit = std::numeric_limits<size_t>::max();

// Reads the file at `path` to its end (so /proc files, whose size shows as 0, read whole).
// Follows symbolic links. Errors:
//   NotFound           "cannot read <path>: No such file or directory"
//   PermissionDenied   "cannot read <path>: Permission denied"
//   ResourceExhausted  "<path> is larger than <max_bytes> bytes" (nothing is returned)
//   Internal           any other failure, e.g. "cannot read <path>: Is a directory"
StatusOr<std::string> ReadFile(const std::string& path, size_t max_bytes = kNoFileSizeLimit);

// Replaces (or creates) `path` with a regular file holding `contents`, permissions `mode`
// (not reduced by the umask), all or nothing: the data goes to a new, randomly named file in
// the same directory (mkostemp: O_CREAT | O_EXCL, so it never writes through a link someone
// prepared), is fsynced, then renamed over `path` and the directory fsynced. A reader sees
// the old file or the new one, never a part. A symbolic link at `path` is replaced, its
// target left alone. On failure the temporary file is removed and `path` is unchanged;
// Internal "cannot write <path>: <step>: <reason>" (step: create, chmod, write, fsync,
// close, rename).
Status WriteFileAtomically(const std::string& path, std::string_view contents, mode_t mode);

// Creates the directory `path` and every missing parent (as `mkdir -p`), each with `mode`
// less the umask. Existing directories, and links to directories, are fine. Errors:
//   FailedPrecondition "cannot create directory <prefix>: it exists and is not a directory"
//   PermissionDenied / Internal "cannot create directory <prefix>: <reason>"
// where <prefix> is the first component that could not be made. An empty path is OK.
Status MakeDirectories(const std::string& path, mode_t mode = 0755);

}  // namespace tserve
