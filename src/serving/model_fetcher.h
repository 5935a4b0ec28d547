#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tserve::serving {

// TorchServe's allowed_urls: a list of regular expressions (ECMAScript, case-insensitive),
// each compiled once. A URL is allowed when one pattern matches the *whole* URL (Java's
// Matcher.matches(), std::regex_match), never a substring: "http://a\.com/.*" does not allow
// "http://evil/?http://a.com/x". An empty list allows nothing.
// Thread safety: immutable after Create; Allows may be called from any thread. Copies are
// cheap (they share the compiled patterns).
class UrlPolicy {
 public:
  // A policy that allows no URL.
  UrlPolicy();
  ~UrlPolicy();
  UrlPolicy(const UrlPolicy&);
  UrlPolicy& operator=(const UrlPolicy&);

  // Compiles every pattern. An invalid pattern is InvalidArgument naming it (the config
  // loader checks them too, so this fails only for lists built elsewhere).
  static StatusOr<UrlPolicy> Create(const std::vector<std::string>& patterns);

  bool Allows(std::string_view url) const;
  const std::vector<std::string>& patterns() const;

 private:
  struct Compiled;
  std::shared_ptr<const Compiled> compiled_;
};

// A fetcher's default cap on one download (4 GiB).
inline constexpr int64_t kDefaultMaxDownloadBytes = int64_t{4} << 30;
// Redirects followed by one download; each target is checked against the policy.
inline constexpr int kMaxDownloadRedirects = 3;

// What FetchModelArchive needs. `policy` is not owned and must outlive the call; null allows
// no URL (plain paths still work). A plain value type.
struct FetchRequest {
  std::string url;          // a path in the store, file://…, http://… or https://…
  std::string model_store;  // the configured model store (need not be a real path)
  const UrlPolicy* policy = nullptr;
  int64_t max_bytes = kDefaultMaxDownloadBytes;  // > 0; bytes one download may have
  bool overwrite = false;  // may a download replace a file of the same name in the store?
  std::chrono::seconds timeout{300};  // a whole download, redirects included
};

// True for http:// and https:// URLs (any case): the ones FetchModelArchive downloads, so
// the caller knows the returned file is a copy it may delete when registration fails.
bool IsDownloadUrl(std::string_view url);

// Finds the archive (a .mar or a model folder) a register request names and returns its
// absolute path, always inside the model store:
//  - a plain path ("resnet18.mar", "sub/x.mar", or an absolute path) is resolved inside the
//    store. As in TorchServe, allowed_urls does not apply to plain paths.
//  - anything with "scheme://" must match the policy first; otherwise NotFound with
//    TorchServe's message "Given URL <url> does not match any allowed URL(s)".
//  - file://<path> (percent-decoded; file:///abs and file://localhost/abs are absolute,
//    file://rel is relative to the store) resolves inside the store like a plain path.
//  - http(s)://…/<name> is downloaded into the store as <name> (the last path segment of the
//    URL as given, percent-decoded; letters, digits, '.', '_', '-', not starting with '.').
//    The body goes to a hidden temporary file in the store, renamed into place only when
//    complete, so a failed download leaves nothing behind. At most max_bytes are accepted
//    (Content-Length and the bytes actually received both count). At most
//    kMaxDownloadRedirects redirects are followed, each target checked against the policy
//    and limited to http/https; credentials in URLs are refused.
//  - any other scheme is InvalidArgument.
// Plain paths and file:// paths with a ".." component, a NUL byte, or resolving outside the
// store (symlinks included) are InvalidArgument; a missing file is NotFound.
// Download errors: an existing <name> without overwrite → AlreadyExists naming it; HTTP
// status >= 400 → InvalidArgument naming the status; over the cap → InvalidArgument
// "... exceeds the maximum download size of N bytes"; timeout → DeadlineExceeded; network
// failures → Unavailable; local I/O → Internal.
// Thread safety: reentrant; concurrent calls for the same name never interleave bytes (the
// rename is atomic; without overwrite, the second rename fails with AlreadyExists).
StatusOr<std::string> FetchModelArchive(const FetchRequest& request);

}  // namespace tserve::serving
