#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "common/thread_annotations.h"
#include "config/server_config.h"
#include "http/request.h"

namespace tserve::api {

// TorchServe-compatible token authorization (TorchServe 0.11/0.12,
// frontend/server/src/main/java/org/pytorch/serve/util/TokenAuthorization.java and
// http/TokenAuthorizationHandler.java): three keys in key_file.json, sent as
// "Authorization: Bearer <key>". docs/security.md describes the whole model.

// TorchServe's three keys: inference calls, management calls, and the token API
// (GET /token?type=... on the management port), which alone can rotate the other two.
enum class TokenType { kInference, kManagement, kApi };

// "inference", "management", "API": the key_file.json member names.
const char* TokenTypeName(TokenType type);

using AuthClock = std::chrono::system_clock;

// TorchServe's answer to a missing, malformed, wrong or expired token: 400 with the
// InvalidKeyException type (TorchServe maps that ModelException subclass to 400).
inline constexpr int kTokenErrorCode = 400;
inline constexpr std::string_view kTokenErrorType = "InvalidKeyException";
// On the inference and management APIs.
inline constexpr std::string_view kTokenAuthorizationFailed =
    "Token Authorization failed. Token either incorrect, expired, or not provided correctly";
// On GET /token (TorchServe rewraps every failure there, a bad `type` included, with this
// wording).
inline constexpr std::string_view kTokenAuthenticationFailed =
    "Token Authentication failed. Token either incorrect, expired, or not provided correctly";

// {"code": 400, "type": "InvalidKeyException", "message": <message>} as JsonError writes it.
http::Response TokenError(std::string_view message);

// The three keys and the expiry of the two that expire (the API key never does). Plain
// data.
struct KeySet {
  std::string management_key;
  AuthClock::time_point management_expires;
  std::string inference_key;
  AuthClock::time_point inference_expires;
  std::string api_key;
};

// key_file.json as TorchServe writes it (Gson pretty printing, no trailing newline):
//   {
//     "management": {"key": "aadJv_R6", "expiration time": "2024-01-16T22:23:32.952499Z"},
//     "inference": {"key": "poZXAlqe", "expiration time": "..."},
//     "API": {"key": "xryL_Vzs"}
//   }
// (each member on its own line, 2-space indent). Pure.
std::string FormatKeyFile(const KeySet& keys);
// The inverse; InvalidArgument naming what is missing or malformed. Pure.
StatusOr<KeySet> ParseKeyFile(std::string_view json);

// Java's Instant.toString() in UTC: "2024-01-16T22:23:32Z", with 3, 6 or 9 fraction digits
// when the nanoseconds need them (".952Z", ".952499Z", ".952499001Z"). Pure.
std::string FormatInstant(AuthClock::time_point t);
// Reads that format (1 to 9 fraction digits); nullopt when the text is not one. Pure.
std::optional<AuthClock::time_point> ParseInstant(std::string_view text);

// RFC 4648 §5 base64url without padding ("-" and "_" for "+" and "/"). Pure.
std::string Base64Url(std::string_view bytes);

// `bytes` random bytes from the kernel CSPRNG (getrandom(2), else /dev/urandom), in
// base64url. TorchServe uses 6 bytes: an 8-character key. Internal error when the kernel
// gives no randomness; InvalidArgument for 0 or more than 256 bytes.
StatusOr<std::string> GenerateKey(size_t bytes);

// The token of an Authorization value "Bearer <token>" (scheme case-insensitive, one or
// more spaces or tabs, a token without white space; surrounding white space ignored),
// "" when the value has another form. TorchServe's pattern is ^Bearer\s+(\S+)$; this
// accepts the same values plus other casings of the scheme (RFC 9110 §11.1). Pure.
std::string_view BearerToken(std::string_view authorization);

// The one bearer-token check of every listener (the inference and management gates, /token
// and /metrics): whether `authorization` (the raw header value, "" when absent) carries
// `expected` as BearerToken reads it. The comparison takes the same time wherever the
// first differing byte is. False when `expected` is empty. Pure.
bool BearerTokenMatches(std::string_view authorization, std::string_view expected);

// Holds the three keys, writes key_file.json and answers whether a request's
// Authorization header carries the right, unexpired key. Created once at startup (only when
// some listener needs tokens) and shared by the listeners' AuthGates and the /token handler.
// Thread safety: Check may run on many threads at once; Rotate may run concurrently with
// Check and with itself (rotations are serialized; a Check sees the old or the new key).
class TokenAuth {
 public:
  struct Options {
    // Relative paths are taken from the working directory (TorchServe: user.dir).
    std::string key_file = "key_file.json";
    // token_expiration_min: how long an inference or management key lives. Whole seconds
    // count, as in TorchServe (0.25 -> 15 s). Must give at least 1 s and at most 10 years.
    double expiration_minutes = 60.0;
    // Random bytes per key; 6 (8 characters, 48 bits) is TorchServe's length.
    size_t key_bytes = 6;
    // true: start from the keys in an existing key file when it is a regular file (not a
    // symlink) owned by this user with no group/other permissions and parses; expired keys
    // in it are replaced. Otherwise (or false, TorchServe's behaviour) all keys are new.
    bool reuse_key_file = false;
  };

  // Generates (or reuses) the keys and writes the key file with mode 0600 (atomically: a
  // temporary file in the same directory, then rename, so a symlink at the path is
  // replaced, never followed). Errors: InvalidArgument for bad options, Internal for I/O,
  // naming the path.
  static StatusOr<std::unique_ptr<TokenAuth>> Create(Options options,
                                                     AuthClock::time_point now = AuthClock::now());

  // Whether `authorization` (the raw header value, "" when absent) is "Bearer <key>" with
  // the current key of `type`, and that key has not expired at `now` (expired when
  // now >= expiry, as TorchServe's !now.isBefore(expiry)). The comparison takes the same
  // time wherever the first differing byte is.
  bool Check(TokenType type, std::string_view authorization, AuthClock::time_point now) const
      EXCLUDES(mu_);

  // Replaces the inference or management key with a new one expiring token_expiration_min
  // from `now`, and rewrites the key file. The in-memory key changes only once the file is
  // written, so a failure leaves both as they were. InvalidArgument for kApi (TorchServe
  // cannot rotate the API key either); Internal for I/O.
  Status Rotate(TokenType type, AuthClock::time_point now) EXCLUDES(rotate_mu_, mu_);

  KeySet keys() const EXCLUDES(mu_);                     // a copy, for tests and diagnostics
  const std::string& key_file() const { return path_; }  // absolute
  bool reused() const { return reused_; }                // Create started from an existing file

 private:
  TokenAuth(Options options, std::string path, KeySet keys, bool reused)
      : options_(std::move(options)),
        path_(std::move(path)),
        keys_(std::move(keys)),
        reused_(reused) {}
  const Options options_;
  const std::string path_;
  mutable SharedMutex mu_;
  KeySet keys_ GUARDED_BY(mu_);
  // Serializes Rotate, so that file writes happen in rotation order. Taken before mu_.
  Mutex rotate_mu_ ACQUIRED_BEFORE(mu_);
  const bool reused_;
};

// Which listeners require a key. The rule (issue 4, SPEC §6): the inference and management
// listeners require their key when bound beyond loopback unless
// disable_token_authorization=true, and when loopback-only only if
// enable_token_authorization=true; when both flags are true, enable wins (fail closed; a
// startup warning says so). The metrics listener requires metrics_token when one is set
// (MetricsApi checks it). Token authorization *applies* unless it is disabled (issue 8
// #9): then the keys exist and key_file.json is written even where no key is required, and
// a request that presents a key (any Authorization header) must present the valid one, so
// scripts written for TorchServe's default (keys everywhere) work unchanged. Plain data.
struct AuthPolicy {
  bool inference = false;   // the inference key is required
  bool management = false;  // the management key is required
  bool metrics = false;
  // Keys exist: disable_token_authorization is false, or enable_token_authorization is true.
  bool keys = false;
  // A TokenAuth (key file, /token route, gates on both listeners) is needed.
  bool NeedsKeys() const { return keys || inference || management; }
};
AuthPolicy DecideAuth(const ServerConfig& config);

// The lines to log at warn level at startup, one per finding: each listener bound beyond
// loopback that requires no token (the metrics listener without metrics_token included),
// the permissive default allowed_urls when enable_model_api=true, and the contradictory
// enable+disable_token_authorization pair. Empty for the defaults. Pure.
std::vector<std::string> StartupSecurityWarnings(const ServerConfig& config);

// Paths a gated listener answers without a token, as TorchServe does: "/" and
// "/api-description" (its API description handler runs before the token check); on
// management "/token" (HandleTokenRequest checks the API key itself); on inference
// "/ping" (a tserve choice: TorchServe 0.11/0.12 wants the inference key there, which
// breaks health probes, since keys are random and expire).
std::vector<std::string> DefaultExemptPaths(TokenType type);

// Whether an Authorization value presents a key: anything but nothing, blanks, or the bare
// scheme "Bearer" (what a script sends when its token variable is empty). Pure.
bool PresentsKey(std::string_view authorization);

// Wraps a listener's handler: requests to a path outside `exempt_paths` (exact match on
// the undecoded path) must carry the current key of `type`, else they are answered
// TokenError(kTokenAuthorizationFailed) and never reach `next`. With
// Presence::kIfPresented, a request whose Authorization header does not PresentsKey passes;
// one that presents a key is checked like any other, unless `key_ignored(path)` (the
// OpenAI routes: OpenAI clients always send an API key, e.g. "EMPTY", as vLLM accepts
// where it requires none). `auth` may be null (the keys
// could not be written): then every request that must be checked is refused. Holds
// pointers only: `auth` and `next` must outlive it. Thread safety: Handle may run on many
// threads at once.
class AuthGate final : public http::RequestHandler {
 public:
  using NowFn = AuthClock::time_point (*)();
  using PathPredicate = bool (*)(std::string_view path);
  enum class Presence { kRequired, kIfPresented };
  AuthGate(const TokenAuth* auth, TokenType type, http::RequestHandler* next,
           std::vector<std::string> exempt_paths, NowFn now = &AuthClock::now,
           Presence presence = Presence::kRequired, PathPredicate key_ignored = nullptr)
      : auth_(auth),
        type_(type),
        next_(next),
        exempt_(std::move(exempt_paths)),
        now_(now),
        presence_(presence),
        key_ignored_(key_ignored) {}
  void Handle(http::Request& request, http::Responder responder) override;

 private:
  const TokenAuth* auth_;
  TokenType type_;
  http::RequestHandler* next_;
  std::vector<std::string> exempt_;
  NowFn now_;
  Presence presence_;
  PathPredicate key_ignored_;
};

// GET /token?type=management|inference on the management listener (TorchServe's token
// API). Needs the API key; answers 200 with Content-Type application/json and the body "\n"
// (TorchServe's: the new key is read from the key file, never sent), having rotated that
// key. A missing/wrong API key, or a type other than exactly "management" or "inference",
// answers TokenError(kTokenAuthenticationFailed); a key file that cannot be written, 500
// (keys unchanged).
void HandleTokenRequest(TokenAuth& auth, const http::Request& request, http::Responder responder,
                        AuthClock::time_point now = AuthClock::now());

}  // namespace tserve::api
