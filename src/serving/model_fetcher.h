#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tserve::serving {

// The longest registration URL accepted (8 KiB, as a request line): longer ones are refused
// before anything else reads them, and error messages never echo more than this.
inline constexpr size_t kMaxUrlLength = 8192;

// TorchServe's allowed_urls: a list of regular expressions, case-insensitive, each compiled
// once with RE2, which matches in time linear in the URL and without recursion. RE2 takes
// the Java syntax TorchServe users write (classes, alternation, quantifiers, (?i) flags)
// but not look-arounds or back-references: such a pattern is an error naming it. A URL is
// allowed when one pattern matches the *whole* URL (Java's Matcher.matches()), never a
// substring: "http://a\.com/.*" does not allow "http://evil/?http://a.com/x". An empty list
// allows nothing.
// Thread safety: immutable after Create; Allows may be called from any thread. Copies are
// cheap (they share the compiled patterns).
class UrlPolicy {
 public:
  // A policy that allows no URL.
  UrlPolicy();
  ~UrlPolicy();
  UrlPolicy(const UrlPolicy&);
  UrlPolicy& operator=(const UrlPolicy&);

  // Compiles every pattern. A pattern RE2 cannot compile is InvalidArgument naming it and
  // RE2's reason (the config loader checks them the same way at startup).
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

// What a download may connect to, by the address it resolved to (issue 7 #16).
enum class AddressKind {
  kPublic,
  kLoopback,   // 127.0.0.0/8, ::1
  kPrivate,    // 10/8, 172.16/12, 192.168/16, 100.64/10 (CGNAT), fc00::/7, fec0::/10
  kLinkLocal,  // 169.254/16 (cloud metadata services), fe80::/10
  kReserved,   // 0.0.0.0/8, ::, multicast, 240/4, broadcast, IPv4-compatible ::/96
};

// The class of a numeric IPv4 ("a.b.c.d" exactly) or IPv6 address (no brackets, no zone);
// nullopt for anything else (names included). IPv4 embedded in IPv6 (::ffff:0:0/96 mapped,
// 64:ff9b::/96 NAT64, 2002::/16 6to4) is classified by the IPv4 address. Pure.
std::optional<AddressKind> ClassifyIpAddress(std::string_view ip);

// What FetchModelArchive needs. `policy` is not owned and must outlive the call; null allows
// no URL (plain paths still work). A plain value type.
struct FetchRequest {
  std::string url;          // a path in the store, file://…, http://… or https://…
  std::string model_store;  // the configured model store (need not be a real path)
  const UrlPolicy* policy = nullptr;
  int64_t max_bytes = kDefaultMaxDownloadBytes;  // > 0; bytes one download may have
  bool overwrite = false;  // may a download replace a file of the same name in the store?
  std::chrono::seconds timeout{300};  // a whole download, redirects included
  // Every connection a download makes (each address tried, each redirect; DNS answers are
  // checked as connected, so rebinding does not help) is refused unless allowed here:
  // public addresses always; loopback with allow_loopback; private ranges with
  // allow_private; link-local and reserved never. See AddressKind.
  bool allow_loopback = false;
  bool allow_private = false;
  // Ports of tserve's own listeners: refused on loopback and on every address of this host,
  // whatever the flags above say.
  std::vector<uint16_t> own_ports;
  // Not owned, may be null. Once true, a download in progress stops within about a second,
  // and none starts: Unavailable "... the server is shutting down".
  const std::atomic<bool>* cancel = nullptr;
};

// How every failed download's message begins (TorchServe's DownloadArchiveException words):
// "Failed to download archive from: <url>", and for tserve's own limits ": <which limit>".
// Such a failure is a DownloadFailed status (Status::IsDownloadFailed).
inline constexpr std::string_view kDownloadFailedPrefix = "Failed to download archive from: ";

// True for http:// and https:// URLs (any case): the ones FetchModelArchive downloads, so
// the caller knows the returned file is a copy it may delete when registration fails.
bool IsDownloadUrl(std::string_view url);

// Finds the archive (a .mar or a model folder) a register request names and returns its
// absolute path, always inside the model store. A URL over kMaxUrlLength is InvalidArgument
// first, whatever it is.
//  - a plain path ("resnet18.mar", "sub/x.mar", or an absolute path) is resolved inside the
//    store. As in TorchServe, allowed_urls does not apply to plain paths.
//  - anything with "scheme://" must match the policy first; otherwise ModelNotFound with
//    TorchServe's message "Given URL <url> does not match any allowed URL(s)".
//  - file://<path> (percent-decoded; file:///abs and file://localhost/abs are absolute,
//    file://rel is relative to the store) resolves inside the store like a plain path.
//  - http(s)://…/<name> is downloaded into the store as <name> (the last path segment of the
//    URL as given, percent-decoded; letters, digits, '.', '_', '-', not starting with '.').
//    The body goes to a hidden temporary file in the store, renamed into place only when
//    complete, so a failed download leaves nothing behind. At most max_bytes are accepted
//    (Content-Length and the bytes actually received both count). At most
//    kMaxDownloadRedirects redirects are followed, each target checked against the policy
//    and limited to http/https; credentials in URLs are refused. Proxies from the
//    environment are not used (the address checks must see the real peer). A connection
//    refused by the address rules is InvalidArgument "Download from <url> refused: <address>
//    is a loopback address (set allow_loopback_model_urls=true to allow it)" and the like.
//  - any other scheme is InvalidArgument.
// Plain paths and file:// paths with a ".." component, a NUL byte, or resolving outside the
// store (symlinks included) are InvalidArgument; a missing file is NotFound.
// Download errors: an existing <name> without overwrite → AlreadyExists "Model file already
// exists <name>" (TorchServe's words); HTTP status >= 400, over the cap ("...: the archive
// exceeds the maximum download size of N bytes"), a bad redirect, timeout and network failures
// → DownloadFailed, all reading "Failed to download archive from: <url>" (the cause is
// logged); local I/O → Internal. No message
// names a path on this host other than the URL as given. Thread safety: reentrant; concurrent calls
// for the same name never interleave bytes (the rename is atomic; without overwrite, the second
// rename fails with AlreadyExists).
StatusOr<std::string> FetchModelArchive(const FetchRequest& request);

}  // namespace tserve::serving
