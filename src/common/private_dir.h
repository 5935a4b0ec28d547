#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "common/file.h"
#include "common/status.h"

// Directories and files that no other local user can change or redirect: the extraction
// root of model archives and the pid file's runtime directory (issue 7 #11, #12). A shared
// /tmp lets anyone create a name first, or plant a symbolic link under it; these helpers
// never follow a link they did not make and check ownership before trusting a directory.
// Stateless functions, thread-safe.
namespace tserve {

// Creates a new directory <parent>/<prefix>XXXXXX with mkdtemp: mode 0700, owned by this
// user, a name no one can predict or claim first. Returns its path. Internal on failure,
// with the parent and the reason.
StatusOr<std::string> MakePrivateTempDir(const std::string& parent, std::string_view prefix);

// OK when `path` is a directory only the effective user can change: not a symbolic link
// (checked with lstat, so the path itself is never followed), owned by geteuid(), without
// write permission for group or others. Otherwise NotFound when missing, else
// FailedPrecondition whose one-line message names the path and the problem, e.g.
//   /tmp/x is owned by uid 1001, not by this user (uid 1000): refusing to use it
Status CheckPrivateDir(const std::string& path);

// CheckPrivateDir, creating `path` first (mode 0700) when it does not exist. Its parent must
// exist. A directory someone else made in the meantime is checked like any other.
Status EnsurePrivateDir(const std::string& path);

// Reads a small regular file without following a symbolic link at `path`. NotFound when
// missing; FailedPrecondition for a link or a non-regular file; at most `max_bytes` read.
StatusOr<std::string> ReadFileNoFollow(const std::string& path, size_t max_bytes = 4096);

}  // namespace tserve
