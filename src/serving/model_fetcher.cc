#include "serving/model_fetcher.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <re2/re2.h>
#include <spdlog/spdlog.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <utility>

#include "common/file.h"
#include "common/strings.h"
#include "serving/model_store.h"

namespace tserve::serving {

struct UrlPolicy::Compiled {
  std::vector<std::string> sources;
  std::vector<std::unique_ptr<const RE2>> regexes;
};

UrlPolicy::UrlPolicy() : compiled_(std::make_shared<const Compiled>()) {}
UrlPolicy::~UrlPolicy() = default;
UrlPolicy::UrlPolicy(const UrlPolicy&) = default;
UrlPolicy& UrlPolicy::operator=(const UrlPolicy&) = default;

StatusOr<UrlPolicy> UrlPolicy::Create(const std::vector<std::string>& patterns) {
  auto compiled = std::make_shared<Compiled>();
  RE2::Options options;
  options.set_case_sensitive(false);
  options.set_log_errors(false);
  for (const std::string& p : patterns) {
    auto re = std::make_unique<const RE2>(p, options);
    if (!re->ok()) {
      return Status::InvalidArgument("allowed_urls: regular expression \"" + p +
                                     "\" does not compile: " + re->error());
    }
    compiled->regexes.push_back(std::move(re));
    compiled->sources.push_back(p);
  }
  UrlPolicy policy;
  policy.compiled_ = std::move(compiled);
  return policy;
}

bool UrlPolicy::Allows(std::string_view url) const {
  for (const auto& re : compiled_->regexes) {
    // FullMatch: the whole URL must match, as Java's Matcher.matches() in TorchServe.
    if (RE2::FullMatch(re2::StringPiece(url.data(), url.size()), *re)) return true;
  }
  return false;
}

const std::vector<std::string>& UrlPolicy::patterns() const { return compiled_->sources; }

namespace {

// An address as 16 bytes: IPv6, or IPv4 in its mapped form (::ffff:a.b.c.d).
using Ip16 = std::array<uint8_t, 16>;

Ip16 MappedV4(const uint8_t v4[4]) {
  Ip16 ip{};
  ip[10] = ip[11] = 0xff;
  std::copy(v4, v4 + 4, ip.begin() + 12);
  return ip;
}

AddressKind ClassifyV4(const uint8_t* a) {
  if (a[0] == 127) return AddressKind::kLoopback;
  if (a[0] == 10 || (a[0] == 172 && (a[1] & 0xf0) == 16) || (a[0] == 192 && a[1] == 168) ||
      (a[0] == 100 && (a[1] & 0xc0) == 64)) {
    return AddressKind::kPrivate;
  }
  if (a[0] == 169 && a[1] == 254) return AddressKind::kLinkLocal;
  if (a[0] == 0 || a[0] >= 224) return AddressKind::kReserved;  // this network; 224/4; 240/4
  return AddressKind::kPublic;
}

AddressKind Classify(const Ip16& a) {
  static constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  static constexpr uint8_t kNat64Prefix[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
  if (std::equal(a.begin(), a.begin() + 12, kMappedPrefix) ||
      std::equal(a.begin(), a.begin() + 12, kNat64Prefix)) {
    return ClassifyV4(a.data() + 12);
  }
  if (a[0] == 0x20 && a[1] == 0x02) return ClassifyV4(a.data() + 2);  // 6to4
  if (std::all_of(a.begin(), a.begin() + 15, [](uint8_t b) { return b == 0; })) {
    return a[15] == 1 ? AddressKind::kLoopback : AddressKind::kReserved;  // ::1, ::
  }
  if (std::all_of(a.begin(), a.begin() + 12, [](uint8_t b) { return b == 0; })) {
    return AddressKind::kReserved;  // IPv4-compatible (deprecated)
  }
  if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) return AddressKind::kLinkLocal;  // fe80::/10
  if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0) return AddressKind::kPrivate;    // fec0::/10
  if ((a[0] & 0xfe) == 0xfc) return AddressKind::kPrivate;                    // fc00::/7
  if (a[0] == 0xff) return AddressKind::kReserved;                            // multicast
  return AddressKind::kPublic;
}

// The address and port of a socket address, or nullopt for another family.
std::optional<std::pair<Ip16, uint16_t>> FromSockaddr(const sockaddr* sa, size_t len) {
  if (sa->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
    sockaddr_in in;
    std::memcpy(&in, sa, sizeof(in));
    uint8_t v4[4];
    std::memcpy(v4, &in.sin_addr, 4);
    return std::pair{MappedV4(v4), ntohs(in.sin_port)};
  }
  if (sa->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
    sockaddr_in6 in6;
    std::memcpy(&in6, sa, sizeof(in6));
    Ip16 ip;
    std::memcpy(ip.data(), &in6.sin6_addr, 16);
    return std::pair{ip, ntohs(in6.sin6_port)};
  }
  return std::nullopt;
}

std::string IpText(const Ip16& ip) {
  char buf[INET6_ADDRSTRLEN] = {};
  static constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::equal(ip.begin(), ip.begin() + 12, kMappedPrefix)) {
    ::inet_ntop(AF_INET, ip.data() + 12, buf, sizeof(buf));
  } else {
    ::inet_ntop(AF_INET6, ip.data(), buf, sizeof(buf));
  }
  return buf;
}

// This host's interface addresses (for "tserve's own listeners" on a wildcard bind).
std::vector<Ip16> LocalAddresses() {
  std::vector<Ip16> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    size_t len = i->ifa_addr->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    if (auto a = FromSockaddr(i->ifa_addr, len)) out.push_back(a->first);
  }
  ::freeifaddrs(list);
  return out;
}

// Decides every connection a download opens (CURLOPT_OPENSOCKETFUNCTION) and remembers why
// the last refused one was refused.
struct ConnectGuard {
  const FetchRequest* req = nullptr;
  std::vector<Ip16> local;  // filled only when own_ports is not empty
  std::string refused;

  // Empty when the connection may be made.
  std::string Check(const Ip16& ip, uint16_t port) const {
    const std::string text = IpText(ip);
    switch (Classify(ip)) {
      case AddressKind::kLinkLocal:
        return text +
               " is a link-local address (where cloud metadata services answer); never "
               "allowed";
      case AddressKind::kReserved:
        return text + " is an unspecified, multicast or reserved address; never allowed";
      case AddressKind::kLoopback:
        if (!req->allow_loopback) {
          return text + " is a loopback address (set allow_loopback_model_urls=true to allow it)";
        }
        break;
      case AddressKind::kPrivate:
        if (!req->allow_private) {
          return text + " is a private address (set allow_private_model_urls=true to allow it)";
        }
        break;
      case AddressKind::kPublic:
        break;
    }
    if (std::find(req->own_ports.begin(), req->own_ports.end(), port) != req->own_ports.end() &&
        (Classify(ip) == AddressKind::kLoopback ||
         std::find(local.begin(), local.end(), ip) != local.end())) {
      return text + ":" + std::to_string(port) +
             " is tserve's own listener; models are never downloaded from tserve itself";
    }
    return "";
  }
};

curl_socket_t OpenSocket(void* user, curlsocktype /*purpose*/, curl_sockaddr* address) {
  auto* guard = static_cast<ConnectGuard*>(user);
  auto ip = FromSockaddr(&address->addr, address->addrlen);
  std::string why = ip ? guard->Check(ip->first, ip->second)
                       : "address family " + std::to_string(address->family) + " is not IP";
  if (!why.empty()) {
    guard->refused = std::move(why);
    return CURL_SOCKET_BAD;
  }
  return ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

// CURLOPT_XFERINFOFUNCTION: non-zero aborts the transfer (CURLE_ABORTED_BY_CALLBACK).
int CheckCancel(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  const auto* cancel = static_cast<const std::atomic<bool>*>(user);
  return cancel != nullptr && cancel->load(std::memory_order_relaxed) ? 1 : 0;
}

}  // namespace

std::optional<AddressKind> ClassifyIpAddress(std::string_view ip) {
  if (ip.empty() || ip.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  const std::string text(ip);
  uint8_t v4[4];
  if (::inet_pton(AF_INET, text.c_str(), v4) == 1) return ClassifyV4(v4);
  Ip16 v6;
  if (::inet_pton(AF_INET6, text.c_str(), v6.data()) == 1) return Classify(v6);
  return std::nullopt;
}

namespace {

struct FreeDeleter {
  void operator()(char* p) const { ::free(p); }
};

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
using CurlPtr = std::unique_ptr<CURL, CurlDeleter>;

struct CurlUrlDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};

struct CurlStrDeleter {
  void operator()(char* s) const { curl_free(s); }
};
using CurlStr = std::unique_ptr<char, CurlStrDeleter>;

// curl_global_init is not guaranteed thread-safe on every libcurl build; do it once.
void EnsureCurlInitialized() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string NotAllowed(std::string_view url) {
  return "Given URL " + std::string(url) + " does not match any allowed URL(s)";
}

// The scheme of "scheme://rest", lower-cased; nullopt when there is no "://" (a plain path).
// A malformed scheme ("a b://x") comes back as is, and is then unsupported.
std::optional<std::string> SchemeOf(std::string_view url) {
  size_t pos = url.find("://");
  if (pos == std::string_view::npos) return std::nullopt;
  return ToLower(url.substr(0, pos));
}

bool HasControlOrSpace(std::string_view s) {
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return true;
  }
  return false;
}

StatusOr<std::string> RealStoreDir(const std::string& model_store) {
  if (model_store.empty()) {
    return Status::InvalidArgument("no model store configured (set model_store or --model-store)");
  }
  std::unique_ptr<char, FreeDeleter> real(::realpath(model_store.c_str(), nullptr));
  if (!real) {
    return Status::InvalidArgument(std::string("the model store is not usable: ") +
                                   std::strerror(errno));
  }
  struct stat st;
  if (::stat(real.get(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument("the model store is not a folder");
  }
  return std::string(real.get());
}

// A plain or file:// path: no ".." component and no NUL (either could be smuggled in
// percent-encoded), then realpath containment in the store.
StatusOr<std::string> ResolveLocal(const std::string& model_store, const std::string& path,
                                   std::string_view url) {
  if (path.empty()) return Status::InvalidArgument("empty model path in url: " + std::string(url));
  if (path.find('\0') != std::string::npos) {
    return Status::InvalidArgument("NUL byte in url: " + std::string(url));
  }
  for (std::string_view part : SplitString(path, '/')) {
    if (part == "..") {
      // TorchServe's wording for the same refusal.
      return Status::InvalidArgument("Relative path is not allowed in url: " + std::string(url));
    }
  }
  return ResolveInsideStore(model_store, path);
}

StatusOr<std::string> ResolveFileUrl(const std::string& model_store, std::string_view url) {
  std::string_view rest = url.substr(std::string_view("file://").size());
  if (rest.find_first_of("?#") != std::string_view::npos) {
    return Status::InvalidArgument("file URL " + std::string(url) +
                                   " must not have a query or fragment (encode '?' as %3F, "
                                   "'#' as %23)");
  }
  // file://localhost/abs is file:///abs (RFC 8089); any other "host" is read as the first
  // folder of a path relative to the store, which is what "file://model.mar" means to users.
  if (rest.size() >= 10 && EqualsIgnoreCase(rest.substr(0, 10), "localhost/")) {
    rest.remove_prefix(9);
  }
  return ResolveLocal(model_store, PercentDecode(rest, /*plus_as_space=*/false), url);
}

// Before anything reads a URL further (a pattern, a parser, an error message).
Status CheckUrlLength(std::string_view url) {
  if (url.size() <= kMaxUrlLength) return Status::Ok();
  return Status::InvalidArgument("URL of " + std::to_string(url.size()) +
                                 " characters refused: at most " + std::to_string(kMaxUrlLength) +
                                 " are accepted");
}

// Checks an http(s) URL the way libcurl will read it: it parses, has a host, carries no
// credentials (they would let "http://allowed.example@evil.example/" pass a sloppy pattern),
// and is http or https.
Status CheckHttpUrl(const std::string& url) {
  if (Status s = CheckUrlLength(url); !s.ok()) return s;
  if (HasControlOrSpace(url)) {
    return Status::InvalidArgument("URL " + url + " contains spaces or control characters");
  }
  std::unique_ptr<CURLU, CurlUrlDeleter> h(curl_url());
  if (!h) return Status::Internal("out of memory parsing URL " + url);
  if (CURLUcode rc = curl_url_set(h.get(), CURLUPART_URL, url.c_str(), 0); rc != CURLUE_OK) {
    return Status::InvalidArgument("malformed URL " + url + ": " + curl_url_strerror(rc));
  }
  char* raw = nullptr;
  if (curl_url_get(h.get(), CURLUPART_SCHEME, &raw, 0) != CURLUE_OK) {
    return Status::InvalidArgument("malformed URL " + url + ": no scheme");
  }
  CurlStr scheme(raw);
  std::string s = ToLower(scheme.get());
  if (s != "http" && s != "https") {
    return Status::InvalidArgument("unsupported URL scheme in " + url +
                                   ": tserve downloads only http:// and https://");
  }
  raw = nullptr;
  if (curl_url_get(h.get(), CURLUPART_HOST, &raw, 0) != CURLUE_OK) {
    return Status::InvalidArgument("malformed URL " + url + ": no host");
  }
  CurlStr host(raw);
  raw = nullptr;
  if (curl_url_get(h.get(), CURLUPART_USER, &raw, 0) == CURLUE_OK) {
    CurlStr user(raw);
    return Status::InvalidArgument("URL " + url +
                                   " carries credentials (user@host), which are not accepted");
  }
  raw = nullptr;
  if (curl_url_get(h.get(), CURLUPART_PASSWORD, &raw, 0) == CURLUE_OK) {
    CurlStr password(raw);
    return Status::InvalidArgument("URL " + url +
                                   " carries credentials (user@host), which are not accepted");
  }
  return Status::Ok();
}

bool IsSafeFileName(std::string_view name) {
  if (name.empty() || name.size() > 255 || name[0] == '.') return false;
  for (char c : name) {
    auto u = static_cast<unsigned char>(c);
    if (!std::isalnum(u) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

// The last path segment of the URL as given (query and fragment dropped), percent-decoded.
StatusOr<std::string> FileNameFromUrl(std::string_view url) {
  size_t start = url.find("://") + 3;
  size_t end = url.find_first_of("?#", start);
  std::string_view path = url.substr(start, end == std::string_view::npos ? url.npos : end - start);
  size_t slash = path.find('/');
  std::string_view segment;
  if (slash != std::string_view::npos) {
    path.remove_prefix(slash);
    segment = path.substr(path.rfind('/') + 1);
  }
  std::string name = PercentDecode(segment, /*plus_as_space=*/false);
  if (!IsSafeFileName(name)) {
    return Status::InvalidArgument(
        "cannot name the download after URL " + std::string(url) + ": its last path segment \"" +
        name +
        "\" must be a file name of letters, digits, '.', '_' or '-', not starting "
        "with '.'");
  }
  return name;
}

// The temporary file a download is written to; unlinked on scope exit unless Keep() was
// called after the rename.
class TempFile {
 public:
  TempFile() = default;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  Status Create(const std::string& dir, const std::string& name) {
    std::string tmpl = dir + "/." + name + ".download-XXXXXX";
    fd_ = ::mkostemp(tmpl.data(), O_CLOEXEC);
    if (fd_ < 0) {
      return Status::Internal("cannot create a temporary file in the model store for " + name +
                              ": " + std::strerror(errno));
    }
    path_ = std::move(tmpl);
    name_ = name;
    return Status::Ok();
  }
  // Empties the file for the next response (a redirect's body is never written, but a
  // retry must not append to anything).
  bool Truncate() { return ::ftruncate(fd_, 0) == 0 && ::lseek(fd_, 0, SEEK_SET) == 0; }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  // Flushes, sets the usual file mode, closes.
  Status Finish() {
    int fd = std::exchange(fd_, -1);
    bool ok = ::fchmod(fd, 0644) == 0 && ::fsync(fd) == 0;
    int err = errno;
    if (::close(fd) != 0 && ok) {
      ok = false;
      err = errno;
    }
    if (!ok) return Status::Internal(WriteError(err));
    return Status::Ok();
  }
  void Keep() { path_.clear(); }
  // Names the download, not where it is kept on this host.
  std::string WriteError(int err) const {
    return "cannot write the download of " + name_ + " to the model store: " + std::strerror(err);
  }

 private:
  int fd_ = -1;
  std::string path_;
  std::string name_;
};

// The most a redirect response's body may hold; they are short HTML notes in practice.
constexpr int64_t kMaxRedirectBody = int64_t{64} << 10;

// Where curl's write callback puts one response's body.
struct Sink {
  CURL* easy = nullptr;
  int fd = -1;
  int64_t max_bytes = 0;
  int64_t written = 0;
  bool too_big = false;
  int64_t redirect_body = 0;  // bytes of a 3xx body, read and dropped
  bool not_success = false;   // a non-2xx body: the transfer was stopped on purpose
  int write_errno = 0;
};

size_t WriteBody(char* data, size_t size, size_t nmemb, void* user) {
  auto* sink = static_cast<Sink*>(user);
  const size_t n = size * nmemb;
  long code = 0;
  curl_easy_getinfo(sink->easy, CURLINFO_RESPONSE_CODE, &code);
  // Only a 2xx body is the archive. An error page is not read at all. A redirect's body is
  // read and dropped (libcurl computes CURLINFO_REDIRECT_URL only for a completed transfer),
  // but only up to a small limit.
  if (code >= 300 && code < 400) {
    sink->redirect_body += static_cast<int64_t>(n);
    if (sink->redirect_body > kMaxRedirectBody) {
      sink->not_success = true;
      return 0;
    }
    return n;
  }
  if (code < 200 || code >= 300) {
    sink->not_success = true;
    return 0;
  }
  // The counter catches servers that send no Content-Length or more than they announced.
  if (static_cast<int64_t>(n) > sink->max_bytes - sink->written) {
    sink->too_big = true;
    return 0;
  }
  if (const int err = WriteFully(sink->fd, std::string_view(data, n)); err != 0) {
    sink->write_errno = err;
    return 0;
  }
  sink->written += static_cast<int64_t>(n);
  return n;
}

// Moves the finished download into place; without overwrite an existing file (even one
// created since the first check) is never replaced.
Status Publish(const TempFile& tmp, const std::string& dest, const std::string& name,
               bool overwrite) {
  if (overwrite) {
    if (::rename(tmp.path().c_str(), dest.c_str()) != 0) {
      return Status::Internal("cannot move the download of " + name +
                              " into place: " + std::strerror(errno));
    }
    return Status::Ok();
  }
  if (::renameat2(AT_FDCWD, tmp.path().c_str(), AT_FDCWD, dest.c_str(), RENAME_NOREPLACE) == 0) {
    return Status::Ok();
  }
  int err = errno;
  if (err == EINVAL || err == ENOSYS) {
    // A file system without RENAME_NOREPLACE: link(2) refuses to replace too.
    if (::link(tmp.path().c_str(), dest.c_str()) == 0) {
      ::unlink(tmp.path().c_str());
      return Status::Ok();
    }
    err = errno;
  }
  if (err == EEXIST) {
    return Status::AlreadyExists("Model file already exists " + name);
  }
  return Status::Internal("cannot move the download of " + name +
                          " into place: " + std::strerror(err));
}

// Where a download goes in the store, checked before any byte is fetched.
struct Destination {
  std::string store;  // the store's real path
  std::string name;   // the file name, from the URL
  std::string path;   // store/name
};

// Checks the request (URL, size limit) and the target (not a folder; not an existing file
// unless overwrite) and names the file.
StatusOr<Destination> PrepareDestination(const FetchRequest& req) {
  if (Status s = CheckHttpUrl(req.url); !s.ok()) return s;
  StatusOr<std::string> name = FileNameFromUrl(req.url);
  if (!name.ok()) return name.status();
  if (req.max_bytes <= 0) {
    return Status::InvalidArgument("the maximum download size must be positive");
  }
  StatusOr<std::string> store = RealStoreDir(req.model_store);
  if (!store.ok()) return store.status();
  Destination d{*store, *name, *store + "/" + *name};
  struct stat st;
  if (::lstat(d.path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return Status::AlreadyExists("a folder named " + d.name +
                                 " exists in the model store; not replacing it with a download");
  }
  if (!req.overwrite && ::lstat(d.path.c_str(), &st) == 0) {
    return Status::AlreadyExists("Model file already exists " + d.name);
  }
  return d;
}

// One download's libcurl transfer, hop by hop (redirects are followed by hand so that each
// target meets the policy: SSRF, TorchServe's CVE-2023-43654). Holds the handle and what
// its callbacks write; the body goes to `tmp`. One use, one thread.
class Transfer {
 public:
  Transfer(const FetchRequest& req, TempFile* tmp)
      : req_(req),
        tmp_(tmp),
        aborted_("Download from " + req.url + " aborted: the server is shutting down"),
        failed_(std::string(kDownloadFailedPrefix) + req.url + ": ") {}

  // Creates and configures the handle.
  Status Init();
  // Fetches req.url, following redirects, until the archive's body is in the temporary
  // file or the deadline passes.
  Status Run();

 private:
  // One GET of `url` with `left` to go. OK "" when the archive's body was written, OK
  // <target> for a redirect to follow (checked against the policy), else the error.
  StatusOr<std::string> Hop(const std::string& url, int hop, std::chrono::milliseconds left);
  // The checked target of the redirect response just received from `current`.
  StatusOr<std::string> RedirectTarget(const std::string& current, long code, int hop);
  // TorchServe's words for every failed download (DownloadArchiveException): DownloadFailed;
  // the cause goes to the log.
  Status Fail(const std::string& why) const {
    spdlog::warn("Failed to download archive from {}: {}", req_.url, why);
    return Status::DownloadFailed(std::string(kDownloadFailedPrefix) + req_.url);
  }
  Status TimedOut() const {
    return Fail("timed out after " + std::to_string(req_.timeout.count()) + " s");
  }

  const FetchRequest& req_;
  TempFile* const tmp_;
  const std::string aborted_;
  // tserve's own refusals (limits TorchServe lacks) say which limit, after the same words.
  const std::string failed_;
  CurlPtr easy_;
  char errbuf_[CURL_ERROR_SIZE] = {};
  Sink sink_;
  ConnectGuard guard_;
};

Status Transfer::Init() {
  EnsureCurlInitialized();
  easy_.reset(curl_easy_init());
  if (!easy_) return Status::Internal("cannot initialize libcurl");
  CURL* c = easy_.get();
  sink_.easy = c;
  sink_.fd = tmp_->fd();
  sink_.max_bytes = req_.max_bytes;

  // Redirects by hand (see the class comment); the protocol lists are a second lock on the
  // same door.
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);  // worker threads: no SIGALRM for DNS timeouts
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 1L);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "tserve");
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf_);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &WriteBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink_);
  curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(req_.max_bytes));
  // Every address is checked as it is connected to (after DNS, on every redirect); a proxy
  // would hide the real peer, so none is used.
  guard_.req = &req_;
  if (!req_.own_ports.empty()) guard_.local = LocalAddresses();
  curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, &OpenSocket);
  curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, &guard_);
  curl_easy_setopt(c, CURLOPT_PROXY, "");
  if (req_.cancel != nullptr) {
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, &CheckCancel);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, req_.cancel);
  }
  return Status::Ok();
}

Status Transfer::Run() {
  const auto deadline = std::chrono::steady_clock::now() + req_.timeout;
  std::string current = req_.url;
  for (int hop = 0;; ++hop) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return TimedOut();
    StatusOr<std::string> next = Hop(current, hop, left);
    if (!next.ok()) return next.status();
    if (next->empty()) return Status::Ok();
    current = std::move(next).value();
  }
}

StatusOr<std::string> Transfer::Hop(const std::string& current, int hop,
                                    std::chrono::milliseconds left) {
  CURL* c = easy_.get();
  const long connect_ms = static_cast<long>(
      std::min<int64_t>(std::chrono::milliseconds(req_.timeout).count(), int64_t{30000}));
  if (!tmp_->Truncate()) return Status::Internal(tmp_->WriteError(errno));
  sink_.written = 0;
  sink_.redirect_body = 0;
  sink_.not_success = false;
  errbuf_[0] = '\0';
  curl_easy_setopt(c, CURLOPT_URL, current.c_str());
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(left.count()));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                   std::min(connect_ms, static_cast<long>(left.count())));
  guard_.refused.clear();
  const CURLcode rc = curl_easy_perform(c);

  if (rc == CURLE_ABORTED_BY_CALLBACK) return Status::Unavailable(aborted_);
  if (rc == CURLE_COULDNT_CONNECT && !guard_.refused.empty()) {
    return Status::InvalidArgument("Download from " + current + " refused: " + guard_.refused);
  }
  if (sink_.too_big || rc == CURLE_FILESIZE_EXCEEDED) {
    return Status::DownloadFailed(failed_ + "the archive exceeds the maximum download size of " +
                                  std::to_string(req_.max_bytes) + " bytes");
  }
  if (sink_.write_errno != 0) return Status::Internal(tmp_->WriteError(sink_.write_errno));
  if (rc == CURLE_OPERATION_TIMEDOUT) return TimedOut();
  if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && sink_.not_success)) {
    return Fail(errbuf_[0] ? errbuf_ : curl_easy_strerror(rc));
  }
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  if (code >= 300 && code < 400) return RedirectTarget(current, code, hop);
  if (code < 200 || code >= 300) {
    return Fail("HTTP status " + std::to_string(code) +
                (current == req_.url ? "" : " from " + current));
  }
  if (sink_.written == 0) return Fail("the server sent no content");
  return std::string();
}

StatusOr<std::string> Transfer::RedirectTarget(const std::string& current, long code, int hop) {
  if (sink_.not_success) {
    return Status::DownloadFailed(failed_ + "the redirect from " + current + " has a body over " +
                                  std::to_string(kMaxRedirectBody) + " bytes");
  }
  char* location = nullptr;
  curl_easy_getinfo(easy_.get(), CURLINFO_REDIRECT_URL, &location);
  if (location == nullptr || location[0] == '\0') {
    return Fail("HTTP status " + std::to_string(code) + " from " + current + " without a Location");
  }
  std::string target = location;  // curl made it absolute; copy before the next perform
  if (hop == kMaxDownloadRedirects) {
    return Fail("more than " + std::to_string(kMaxDownloadRedirects) + " redirects");
  }
  if (Status s = CheckHttpUrl(target); !s.ok()) {
    return Status::DownloadFailed(failed_ + "redirected to a refused URL: " + s.message());
  }
  if (req_.policy == nullptr || !req_.policy->Allows(target)) {
    return Status::ModelNotFound(NotAllowed(target) + " (redirected from " + current + ")");
  }
  return target;
}

StatusOr<std::string> Download(const FetchRequest& req) {
  StatusOr<Destination> dest = PrepareDestination(req);
  if (!dest.ok()) return dest.status();
  if (req.cancel != nullptr && req.cancel->load()) {
    return Status::Unavailable("Download from " + req.url +
                               " aborted: the server is shutting down");
  }
  TempFile tmp;
  if (Status s = tmp.Create(dest->store, dest->name); !s.ok()) return s;
  Transfer transfer(req, &tmp);
  if (Status s = transfer.Init(); !s.ok()) return s;
  if (Status s = transfer.Run(); !s.ok()) return s;
  if (Status s = tmp.Finish(); !s.ok()) return s;
  if (Status s = Publish(tmp, dest->path, dest->name, req.overwrite); !s.ok()) return s;
  tmp.Keep();
  return dest->path;
}

}  // namespace

bool IsDownloadUrl(std::string_view url) {
  std::optional<std::string> scheme = SchemeOf(url);
  return scheme && (*scheme == "http" || *scheme == "https");
}

StatusOr<std::string> FetchModelArchive(const FetchRequest& request) {
  const std::string& url = request.url;
  if (Status s = CheckUrlLength(url); !s.ok()) return s;
  std::optional<std::string> scheme = SchemeOf(url);
  if (!scheme) return ResolveLocal(request.model_store, url, url);
  if (request.policy == nullptr || !request.policy->Allows(url)) {
    return Status::ModelNotFound(NotAllowed(url));
  }
  if (*scheme == "file") return ResolveFileUrl(request.model_store, url);
  if (*scheme == "http" || *scheme == "https") return Download(request);
  return Status::InvalidArgument("unsupported URL scheme \"" + *scheme + "\" in " + url +
                                 ": tserve registers models from file://, http:// and https:// "
                                 "URLs or paths in the model store");
}

}  // namespace tserve::serving
