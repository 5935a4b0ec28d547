#include "serving/model_fetcher.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
// With sanitizers on, GCC 12 reports a false -Wmaybe-uninitialized inside <regex>, which
// -Werror would turn into a build failure; the header is not ours to fix.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <regex>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#include <utility>

#include "common/strings.h"
#include "serving/model_store.h"

namespace tserve::serving {

struct UrlPolicy::Compiled {
  std::vector<std::string> sources;
  std::vector<std::regex> regexes;
};

UrlPolicy::UrlPolicy() : compiled_(std::make_shared<const Compiled>()) {}
UrlPolicy::~UrlPolicy() = default;
UrlPolicy::UrlPolicy(const UrlPolicy&) = default;
UrlPolicy& UrlPolicy::operator=(const UrlPolicy&) = default;

StatusOr<UrlPolicy> UrlPolicy::Create(const std::vector<std::string>& patterns) {
  auto compiled = std::make_shared<Compiled>();
  for (const std::string& p : patterns) {
    try {
      compiled->regexes.emplace_back(p, std::regex::ECMAScript | std::regex::icase);
    } catch (const std::regex_error& e) {
      return Status::InvalidArgument("allowed_urls: regular expression \"" + p +
                                     "\" does not compile: " + e.what());
    }
    compiled->sources.push_back(p);
  }
  UrlPolicy policy;
  policy.compiled_ = std::move(compiled);
  return policy;
}

bool UrlPolicy::Allows(std::string_view url) const {
  for (const std::regex& re : compiled_->regexes) {
    // regex_match: the whole URL must match, as Java's Matcher.matches() in TorchServe.
    if (std::regex_match(url.begin(), url.end(), re)) return true;
  }
  return false;
}

const std::vector<std::string>& UrlPolicy::patterns() const { return compiled_->sources; }

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
    return Status::InvalidArgument("model store " + model_store + ": " + std::strerror(errno));
  }
  struct stat st;
  if (::stat(real.get(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument("model store " + model_store + " is not a folder");
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

// Checks an http(s) URL the way libcurl will read it: it parses, has a host, carries no
// credentials (they would let "http://allowed.example@evil.example/" pass a sloppy pattern),
// and is http or https.
Status CheckHttpUrl(const std::string& url) {
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
      return Status::Internal("cannot create a temporary file in the model store " + dir + ": " +
                              std::strerror(errno));
    }
    path_ = std::move(tmpl);
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
    if (!ok) return Status::Internal("cannot write " + path_ + ": " + std::strerror(err));
    return Status::Ok();
  }
  void Keep() { path_.clear(); }

 private:
  int fd_ = -1;
  std::string path_;
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
  size_t left = n;
  while (left > 0) {
    ssize_t w = ::write(sink->fd, data, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      sink->write_errno = errno;
      return 0;
    }
    data += w;
    left -= static_cast<size_t>(w);
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
      return Status::Internal("cannot move the download into place as " + dest + ": " +
                              std::strerror(errno));
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
    return Status::AlreadyExists("model archive " + name +
                                 " already exists in the model store; not overwriting it");
  }
  return Status::Internal("cannot move the download into place as " + dest + ": " +
                          std::strerror(err));
}

StatusOr<std::string> Download(const FetchRequest& req) {
  const std::string& url = req.url;
  if (Status s = CheckHttpUrl(url); !s.ok()) return s;
  StatusOr<std::string> name = FileNameFromUrl(url);
  if (!name.ok()) return name.status();
  if (req.max_bytes <= 0) {
    return Status::InvalidArgument("the maximum download size must be positive");
  }
  StatusOr<std::string> store = RealStoreDir(req.model_store);
  if (!store.ok()) return store.status();
  const std::string dest = *store + "/" + *name;

  struct stat st;
  if (::lstat(dest.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return Status::AlreadyExists("a folder named " + *name +
                                 " exists in the model store; not replacing it with a download");
  }
  if (!req.overwrite && ::lstat(dest.c_str(), &st) == 0) {
    return Status::AlreadyExists("model archive " + *name +
                                 " already exists in the model store; not overwriting it");
  }

  TempFile tmp;
  if (Status s = tmp.Create(*store, *name); !s.ok()) return s;

  EnsureCurlInitialized();
  CurlPtr easy(curl_easy_init());
  if (!easy) return Status::Internal("cannot initialize libcurl");
  CURL* c = easy.get();
  char errbuf[CURL_ERROR_SIZE] = {};
  Sink sink;
  sink.easy = c;
  sink.fd = tmp.fd();
  sink.max_bytes = req.max_bytes;

  // Redirects are followed by hand so that each target meets the policy (SSRF, TorchServe's
  // CVE-2023-43654); the protocol lists are a second lock on the same door.
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);  // worker threads: no SIGALRM for DNS timeouts
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 1L);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "tserve");
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &WriteBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(req.max_bytes));

  const auto deadline = std::chrono::steady_clock::now() + req.timeout;
  const long connect_ms = static_cast<long>(
      std::min<int64_t>(std::chrono::milliseconds(req.timeout).count(), int64_t{30000}));
  const std::string failed = "Failed to download archive from " + url + ": ";
  std::string current = url;
  for (int hop = 0;; ++hop) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return Status(StatusCode::kDeadlineExceeded,
                    failed + "timed out after " + std::to_string(req.timeout.count()) + " s");
    }
    if (!tmp.Truncate()) {
      return Status::Internal("cannot write " + tmp.path() + ": " + std::strerror(errno));
    }
    sink.written = 0;
    sink.redirect_body = 0;
    sink.not_success = false;
    errbuf[0] = '\0';
    curl_easy_setopt(c, CURLOPT_URL, current.c_str());
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(left.count()));
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                     std::min(connect_ms, static_cast<long>(left.count())));
    CURLcode rc = curl_easy_perform(c);

    if (sink.too_big || rc == CURLE_FILESIZE_EXCEEDED) {
      return Status::InvalidArgument(failed + "the archive exceeds the maximum download size of " +
                                     std::to_string(req.max_bytes) + " bytes");
    }
    if (sink.write_errno != 0) {
      return Status::Internal("cannot write " + tmp.path() + ": " +
                              std::strerror(sink.write_errno));
    }
    if (rc == CURLE_OPERATION_TIMEDOUT) {
      return Status(StatusCode::kDeadlineExceeded,
                    failed + "timed out after " + std::to_string(req.timeout.count()) + " s");
    }
    if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && sink.not_success)) {
      return Status::Unavailable(failed + (errbuf[0] ? errbuf : curl_easy_strerror(rc)));
    }
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 300 && code < 400) {
      if (sink.not_success) {
        return Status::InvalidArgument(failed + "the redirect from " + current +
                                       " has a body over " + std::to_string(kMaxRedirectBody) +
                                       " bytes");
      }
      char* location = nullptr;
      curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &location);
      if (location == nullptr || location[0] == '\0') {
        return Status::InvalidArgument(failed + "HTTP status " + std::to_string(code) + " from " +
                                       current + " without a Location");
      }
      std::string target = location;  // curl made it absolute; copy before the next perform
      if (hop == kMaxDownloadRedirects) {
        return Status::InvalidArgument(failed + "more than " +
                                       std::to_string(kMaxDownloadRedirects) + " redirects");
      }
      if (Status s = CheckHttpUrl(target); !s.ok()) {
        return Status(s.code(), failed + "redirected to a refused URL: " + s.message());
      }
      if (req.policy == nullptr || !req.policy->Allows(target)) {
        return Status::NotFound(NotAllowed(target) + " (redirected from " + current + ")");
      }
      current = std::move(target);
      continue;
    }
    if (code < 200 || code >= 300) {
      return Status::InvalidArgument(failed + "HTTP status " + std::to_string(code) +
                                     (current == url ? "" : " from " + current));
    }
    if (sink.written == 0) return Status::InvalidArgument(failed + "the server sent no content");
    break;
  }

  if (Status s = tmp.Finish(); !s.ok()) return s;
  if (Status s = Publish(tmp, dest, *name, req.overwrite); !s.ok()) return s;
  tmp.Keep();
  return dest;
}

}  // namespace

bool IsDownloadUrl(std::string_view url) {
  std::optional<std::string> scheme = SchemeOf(url);
  return scheme && (*scheme == "http" || *scheme == "https");
}

StatusOr<std::string> FetchModelArchive(const FetchRequest& request) {
  const std::string& url = request.url;
  std::optional<std::string> scheme = SchemeOf(url);
  if (!scheme) return ResolveLocal(request.model_store, url, url);
  if (request.policy == nullptr || !request.policy->Allows(url)) {
    return Status::NotFound(NotAllowed(url));
  }
  if (*scheme == "file") return ResolveFileUrl(request.model_store, url);
  if (*scheme == "http" || *scheme == "https") return Download(request);
  return Status::InvalidArgument("unsupported URL scheme \"" + *scheme + "\" in " + url +
                                 ": tserve registers models from file://, http:// and https:// "
                                 "URLs or paths in the model store");
}

}  // namespace tserve::serving
