#include "api/auth.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "api/errors.h"
#include "common/file.h"
#include "common/strings.h"

namespace tserve::api {

namespace {

constexpr char kManagement[] = "management";
constexpr char kInference[] = "inference";
constexpr char kApi[] = "API";
constexpr char kKey[] = "key";
constexpr char kExpiration[] = "expiration time";  // TorchServe's member name, space included
constexpr char kDefaultAllowedUrls[] = "file://.*|http(s)?://.*";
constexpr size_t kMaxKeyBytes = 256;  // getrandom() never returns short below this
constexpr off_t kMaxKeyFileSize = off_t{64} * 1024;
// The key file holds secrets: readable and writable by this user only.
constexpr mode_t kKeyFileMode = S_IRUSR | S_IWUSR;

std::string ErrnoText(int err) { return std::strerror(err); }

// Every byte of `expected` is compared whatever `given` holds, so the time taken tells
// nothing about how much of a guess was right. (The lengths are not secret: TorchServe's
// keys are always 8 characters.)
bool ConstantTimeEquals(std::string_view given, std::string_view expected) {
  unsigned diff = given.size() == expected.size() ? 0u : 1u;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff |= static_cast<unsigned>(g ^ static_cast<unsigned char>(expected[i]));
  }
  return diff == 0 && !expected.empty();
}

bool IsKeyChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

bool IsValidKey(std::string_view key) {
  if (key.empty() || key.size() > 2 * kMaxKeyBytes) return false;
  for (char c : key) {
    if (!IsKeyChar(c)) return false;
  }
  return true;
}

Status FillRandom(unsigned char* out, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = getrandom(out + got, n - got, 0);
    if (r > 0) {
      got += static_cast<size_t>(r);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == ENOSYS) break;  // very old kernel: fall back to the device
    return Status::Internal("getrandom: " + ErrnoText(errno));
  }
  if (got == n) return Status::Ok();
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::Internal("/dev/urandom: " + ErrnoText(errno));
  while (got < n) {
    ssize_t r = read(fd, out + got, n - got);
    if (r > 0) {
      got += static_cast<size_t>(r);
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else {
      int err = r < 0 ? errno : EIO;
      close(fd);
      return Status::Internal("/dev/urandom: " + ErrnoText(err));
    }
  }
  close(fd);
  return Status::Ok();
}

std::string AbsolutePath(const std::string& path) {
  std::error_code ec;
  std::filesystem::path abs = std::filesystem::absolute(path, ec);
  return ec ? path : abs.lexically_normal().string();
}

// An existing key file we may trust: a regular file (lstat: a symlink does not count)
// owned by us, readable by nobody else, that parses. nullopt otherwise.
std::optional<KeySet> ReadTrustedKeyFile(const std::string& path) {
  // O_NOFOLLOW, then fstat on the descriptor: what is checked is what is read.
  ScopedFd file(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  const int fd = file.get();
  if (fd < 0) return std::nullopt;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
      (st.st_mode & (S_IRWXG | S_IRWXO)) != 0 || st.st_size > kMaxKeyFileSize) {
    return std::nullopt;
  }
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    text.append(buf, static_cast<size_t>(r));
    if (text.size() > static_cast<size_t>(kMaxKeyFileSize)) break;
  }
  auto keys = ParseKeyFile(text);
  if (!keys.ok()) return std::nullopt;
  return std::move(keys).value();
}

std::string AddressText(const ListenAddress& a) {
  if (!a.original.empty()) return a.original;
  std::string host = a.host.find(':') != std::string::npos ? "[" + a.host + "]" : a.host;
  return a.scheme + "://" + host + ":" + std::to_string(a.port);
}

// TorchServe: Instant.now().plusSeconds((long) (minutes * 60)): whole seconds, and
// Instant.now() has microsecond precision on Linux, so the key file shows 6 fraction digits
// (some ISO-8601 readers, e.g. Python before 3.11, reject 9).
AuthClock::time_point ExpiryAfter(double minutes, AuthClock::time_point now) {
  const auto start = std::chrono::floor<std::chrono::microseconds>(now);
  return std::chrono::time_point_cast<AuthClock::duration>(
      start + std::chrono::seconds(static_cast<int64_t>(minutes * 60.0)));
}

bool ListenerNeedsToken(const ServerConfig& c, const ListenAddress& a) {
  if (c.enable_token_authorization) return true;
  return !a.IsLoopback() && !c.disable_token_authorization;
}

}  // namespace

const char* TokenTypeName(TokenType type) {
  switch (type) {
    case TokenType::kInference:
      return kInference;
    case TokenType::kManagement:
      return kManagement;
    case TokenType::kApi:
      return kApi;
  }
  return kApi;
}

http::Response TokenError(std::string_view message) {
  return JsonError(kTokenErrorCode, kTokenErrorType, message);
}

// ---- key file -------------------------------------------------------------------------

std::string FormatKeyFile(const KeySet& keys) {
  nlohmann::ordered_json j;
  j[kManagement][kKey] = keys.management_key;
  j[kManagement][kExpiration] = FormatInstant(keys.management_expires);
  j[kInference][kKey] = keys.inference_key;
  j[kInference][kExpiration] = FormatInstant(keys.inference_expires);
  j[kApi][kKey] = keys.api_key;
  return j.dump(2);
}

StatusOr<KeySet> ParseKeyFile(std::string_view text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::InvalidArgument("key file is not a JSON object");
  }
  auto key_of = [&j](const char* member, std::string* out) -> Status {
    auto it = j.find(member);
    if (it == j.end() || !it->is_object()) {
      return Status::InvalidArgument(std::string("key file has no \"") + member + "\" object");
    }
    auto k = it->find(kKey);
    if (k == it->end() || !k->is_string() || !IsValidKey(k->get_ref<const std::string&>())) {
      return Status::InvalidArgument(std::string("key file has no valid ") + member + " key");
    }
    *out = k->get<std::string>();
    return Status::Ok();
  };
  auto expiry_of = [&j](const char* member, AuthClock::time_point* out) -> Status {
    const auto& obj = j.at(member);
    auto e = obj.find(kExpiration);
    std::optional<AuthClock::time_point> t;
    if (e != obj.end() && e->is_string()) t = ParseInstant(e->get_ref<const std::string&>());
    if (!t) {
      return Status::InvalidArgument(std::string("key file has no valid ") + member +
                                     " expiration time");
    }
    *out = *t;
    return Status::Ok();
  };
  KeySet keys;
  if (Status s = key_of(kManagement, &keys.management_key); !s.ok()) return s;
  if (Status s = key_of(kInference, &keys.inference_key); !s.ok()) return s;
  if (Status s = key_of(kApi, &keys.api_key); !s.ok()) return s;
  if (Status s = expiry_of(kManagement, &keys.management_expires); !s.ok()) return s;
  if (Status s = expiry_of(kInference, &keys.inference_expires); !s.ok()) return s;
  return keys;
}

std::string FormatInstant(AuthClock::time_point t) {
  using namespace std::chrono;
  const auto ns = time_point_cast<nanoseconds>(t);
  const auto day = floor<days>(ns);
  const year_month_day ymd{day};
  const hh_mm_ss<nanoseconds> hms{ns - day};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                static_cast<int>(hms.seconds().count()));
  std::string out = buf;
  const long long nanos = hms.subseconds().count();
  if (nanos != 0) {
    // Java's DateTimeFormatter.ISO_INSTANT: milli, micro or nano precision as needed.
    if (nanos % 1000000 == 0) {
      std::snprintf(buf, sizeof buf, ".%03lld", nanos / 1000000);
    } else if (nanos % 1000 == 0) {
      std::snprintf(buf, sizeof buf, ".%06lld", nanos / 1000);
    } else {
      std::snprintf(buf, sizeof buf, ".%09lld", nanos);
    }
    out += buf;
  }
  out += 'Z';
  return out;
}

std::optional<AuthClock::time_point> ParseInstant(std::string_view s) {
  using namespace std::chrono;
  // YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z
  auto digits = [&s](size_t pos, size_t n, int* out) {
    if (pos + n > s.size()) return false;
    int v = 0;
    for (size_t i = pos; i < pos + n; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
      v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
  };
  int y, mo, d, h, mi, sec;
  if (s.size() < 20 || !digits(0, 4, &y) || s[4] != '-' || !digits(5, 2, &mo) || s[7] != '-' ||
      !digits(8, 2, &d) || (s[10] != 'T' && s[10] != 't') || !digits(11, 2, &h) || s[13] != ':' ||
      !digits(14, 2, &mi) || s[16] != ':' || !digits(17, 2, &sec)) {
    return std::nullopt;
  }
  size_t pos = 19;
  long long nanos = 0;
  if (s[pos] == '.') {
    ++pos;
    size_t n = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (++n > 9) return std::nullopt;
      nanos = nanos * 10 + (s[pos] - '0');
      ++pos;
    }
    if (n == 0) return std::nullopt;
    for (size_t i = n; i < 9; ++i) nanos *= 10;
  }
  if (pos + 1 != s.size() || (s[pos] != 'Z' && s[pos] != 'z')) return std::nullopt;
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)},
                           day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || sec > 59) return std::nullopt;
  const auto t = sys_days{ymd} + hours{h} + minutes{mi} + seconds{sec} + nanoseconds{nanos};
  return time_point_cast<AuthClock::duration>(t);
}

// ---- keys -----------------------------------------------------------------------------

std::string Base64Url(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  size_t i = 0;
  auto b = [&bytes](size_t k) {
    return static_cast<unsigned>(static_cast<unsigned char>(bytes[k]));
  };
  for (; i + 3 <= bytes.size(); i += 3) {
    const unsigned v = (b(i) << 16) | (b(i + 1) << 8) | b(i + 2);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  const size_t rest = bytes.size() - i;
  if (rest == 1) {
    const unsigned v = b(i) << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
  } else if (rest == 2) {
    const unsigned v = (b(i) << 16) | (b(i + 1) << 8);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
  }
  return out;
}

StatusOr<std::string> GenerateKey(size_t bytes) {
  if (bytes == 0 || bytes > kMaxKeyBytes) {
    return Status::InvalidArgument("key length must be 1 to 256 bytes, not " +
                                   std::to_string(bytes));
  }
  std::string raw(bytes, '\0');
  Status s = FillRandom(reinterpret_cast<unsigned char*>(raw.data()), bytes);
  if (!s.ok()) return s;
  return Base64Url(raw);
}

std::string_view BearerToken(std::string_view authorization) {
  std::string_view v = TrimWhitespace(authorization);
  constexpr std::string_view kScheme = "Bearer";
  if (v.size() <= kScheme.size() || !EqualsIgnoreCase(v.substr(0, kScheme.size()), kScheme)) {
    return {};
  }
  v.remove_prefix(kScheme.size());
  size_t ws = 0;
  while (ws < v.size() && (v[ws] == ' ' || v[ws] == '\t')) ++ws;
  if (ws == 0) return {};  // "Bearerabc"
  v.remove_prefix(ws);
  if (v.empty()) return {};
  for (char c : v) {
    // \S+ in TorchServe's pattern: no white space (and no control characters) inside.
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7F) return {};
  }
  return v;
}

bool BearerTokenMatches(std::string_view authorization, std::string_view expected) {
  return ConstantTimeEquals(BearerToken(authorization), expected);
}

// ---- TokenAuth ------------------------------------------------------------------------

StatusOr<std::unique_ptr<TokenAuth>> TokenAuth::Create(Options options, AuthClock::time_point now) {
  const double seconds = options.expiration_minutes * 60.0;
  if (!std::isfinite(seconds) || seconds < 1.0 || seconds > 10.0 * 366 * 24 * 3600) {
    return Status::InvalidArgument(
        "token_expiration_min must give a lifetime of 1 second to 10 years, not " +
        std::to_string(options.expiration_minutes) + " minutes");
  }
  if (options.key_bytes == 0 || options.key_bytes > kMaxKeyBytes) {
    return Status::InvalidArgument("token key length must be 1 to 256 bytes");
  }
  if (options.key_file.empty()) return Status::InvalidArgument("key_file must not be empty");
  std::string path = AbsolutePath(options.key_file);

  KeySet keys;
  bool reused = false;
  if (options.reuse_key_file) {
    if (auto existing = ReadTrustedKeyFile(path)) {
      keys = std::move(*existing);
      reused = true;
    }
  }
  const double minutes = options.expiration_minutes;
  auto fresh = [&](std::string* key, AuthClock::time_point* expires) -> Status {
    auto k = GenerateKey(options.key_bytes);
    if (!k.ok()) return k.status();
    *key = std::move(k).value();
    if (expires != nullptr) *expires = ExpiryAfter(minutes, now);
    return Status::Ok();
  };
  if (!reused || keys.management_expires <= now) {
    if (Status s = fresh(&keys.management_key, &keys.management_expires); !s.ok()) return s;
  }
  if (!reused || keys.inference_expires <= now) {
    if (Status s = fresh(&keys.inference_key, &keys.inference_expires); !s.ok()) return s;
  }
  if (!reused) {
    if (Status s = fresh(&keys.api_key, nullptr); !s.ok()) return s;
  }
  if (Status s = WriteFileAtomically(path, FormatKeyFile(keys), kKeyFileMode); !s.ok()) return s;
  return std::unique_ptr<TokenAuth>(
      new TokenAuth(std::move(options), std::move(path), std::move(keys), reused));
}

bool TokenAuth::Check(TokenType type, std::string_view authorization,
                      AuthClock::time_point now) const {
  ReaderMutexLock lock(&mu_);
  switch (type) {
    case TokenType::kInference:
      // Both halves are always evaluated (no short circuit on a wrong key).
      return BearerTokenMatches(authorization, keys_.inference_key) &
             (now < keys_.inference_expires);
    case TokenType::kManagement:
      return BearerTokenMatches(authorization, keys_.management_key) &
             (now < keys_.management_expires);
    case TokenType::kApi:
      return BearerTokenMatches(authorization, keys_.api_key);
  }
  return false;
}

Status TokenAuth::Rotate(TokenType type, AuthClock::time_point now) {
  if (type == TokenType::kApi) {
    return Status::InvalidArgument("the API key cannot be rotated; restart to replace it");
  }
  MutexLock rotating(&rotate_mu_);
  KeySet next = keys();
  auto key = GenerateKey(options_.key_bytes);
  if (!key.ok()) return key.status();
  if (type == TokenType::kInference) {
    next.inference_key = std::move(key).value();
    next.inference_expires = ExpiryAfter(options_.expiration_minutes, now);
  } else {
    next.management_key = std::move(key).value();
    next.management_expires = ExpiryAfter(options_.expiration_minutes, now);
  }
  if (Status s = WriteFileAtomically(path_, FormatKeyFile(next), kKeyFileMode); !s.ok()) return s;
  WriterMutexLock lock(&mu_);
  keys_ = std::move(next);
  return Status::Ok();
}

KeySet TokenAuth::keys() const {
  ReaderMutexLock lock(&mu_);
  return keys_;
}

// ---- policy ---------------------------------------------------------------------------

AuthPolicy DecideAuth(const ServerConfig& config) {
  AuthPolicy p;
  p.inference = ListenerNeedsToken(config, config.inference_address);
  p.management = ListenerNeedsToken(config, config.management_address);
  p.metrics = config.enable_metrics_api && !config.metrics_token.empty();
  p.keys = config.enable_token_authorization || !config.disable_token_authorization;
  return p;
}

std::vector<std::string> StartupSecurityWarnings(const ServerConfig& config) {
  std::vector<std::string> out;
  const AuthPolicy policy = DecideAuth(config);
  if (config.enable_token_authorization && config.disable_token_authorization) {
    out.push_back(
        "enable_token_authorization=true and disable_token_authorization=true contradict each "
        "other: tokens are required on the inference and management APIs (enable wins)");
  }
  auto open_listener = [&out](const char* name, const ListenAddress& a, const char* why) {
    out.push_back(std::string(name) + " API listens on " + AddressText(a) +
                  ", beyond loopback, without a token (" + why +
                  "): anyone who can reach it can call it");
  };
  if (!config.inference_address.IsLoopback() && !policy.inference) {
    open_listener("Inference", config.inference_address, "disable_token_authorization=true");
  }
  if (!config.management_address.IsLoopback() && !policy.management) {
    open_listener("Management", config.management_address, "disable_token_authorization=true");
  }
  if (config.enable_metrics_api && !config.metrics_address.IsLoopback() && !policy.metrics) {
    open_listener("Metrics", config.metrics_address, "metrics_token is not set");
  }
  if (config.enable_model_api && config.allowed_urls.size() == 1 &&
      config.allowed_urls[0] == kDefaultAllowedUrls) {
    out.push_back(
        "enable_model_api=true with the default allowed_urls (file://.*|http(s)?://.*): model "
        "registration accepts any http(s) URL; limit allowed_urls to the hosts you trust");
  }
  return out;
}

// ---- HTTP -----------------------------------------------------------------------------

bool PresentsKey(std::string_view authorization) {
  const std::string_view v = TrimWhitespace(authorization);
  return !v.empty() && !EqualsIgnoreCase(v, "Bearer");
}

std::vector<std::string> DefaultExemptPaths(TokenType type) {
  std::vector<std::string> paths{"/", "/api-description"};
  if (type == TokenType::kInference) paths.emplace_back("/ping");
  if (type == TokenType::kManagement) paths.emplace_back("/token");
  return paths;
}

void AuthGate::Handle(http::Request& request, http::Responder responder) {
  for (const std::string& p : exempt_) {
    if (request.path == p) {
      next_->Handle(request, std::move(responder));
      return;
    }
  }
  const std::string_view authorization = request.Header("Authorization");
  if (presence_ == Presence::kIfPresented &&
      (!PresentsKey(authorization) || (key_ignored_ != nullptr && key_ignored_(request.path)))) {
    next_->Handle(request, std::move(responder));
    return;
  }
  if (auth_ == nullptr || !auth_->Check(type_, authorization, now_())) {
    responder.Send(TokenError(kTokenAuthorizationFailed));
    return;
  }
  next_->Handle(request, std::move(responder));
}

void HandleTokenRequest(TokenAuth& auth, const http::Request& request, http::Responder responder,
                        AuthClock::time_point now) {
  if (!auth.Check(TokenType::kApi, request.Header("Authorization"), now)) {
    responder.Send(TokenError(kTokenAuthenticationFailed));
    return;
  }
  std::optional<TokenType> type;
  for (const auto& [name, value] : http::ParseQuery(request.query)) {
    if (name != "type") continue;
    if (value == kManagement) type = TokenType::kManagement;
    if (value == kInference) type = TokenType::kInference;
    break;  // TorchServe reads the first `type` only
  }
  if (!type) {
    responder.Send(TokenError(kTokenAuthenticationFailed));
    return;
  }
  if (Status s = auth.Rotate(*type, now); !s.ok()) {
    responder.Send(ErrorForStatus(500, "Failed to update the key file"));
    return;
  }
  http::Response r;
  r.status = 200;
  r.content_type = "application/json";
  r.body = "\n";  // TorchServe sends an empty JSON string plus its newline
  responder.Send(std::move(r));
}

}  // namespace tserve::api
