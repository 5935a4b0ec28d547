#include "api/auth.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/strings.h"

namespace tserve::api {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;

constexpr const char* kAuthorizationFailedBody =
    "{\n  \"code\": 400,\n  \"type\": \"InvalidKeyException\",\n  \"message\": \"Token "
    "Authorization failed. Token either incorrect, expired, or not provided correctly\"\n}\n";
constexpr const char* kAuthenticationFailedBody =
    "{\n  \"code\": 400,\n  \"type\": \"InvalidKeyException\",\n  \"message\": \"Token "
    "Authentication failed. Token either incorrect, expired, or not provided correctly\"\n}\n";

// 2024-01-16T22:23:32Z, TorchServe's documentation example.
const AuthClock::time_point kT0 = AuthClock::time_point(seconds(1705443812));

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "auth_test.XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
  return st.st_mode;
}

std::unique_ptr<TokenAuth> MakeAuth(const TempDir& dir, AuthClock::time_point now = kT0,
                                    double expiration_minutes = 60) {
  TokenAuth::Options o;
  o.key_file = dir.File("key_file.json");
  o.expiration_minutes = expiration_minutes;
  auto auth = TokenAuth::Create(o, now);
  EXPECT_TRUE(auth.ok()) << auth.status().message();
  return auth.ok() ? std::move(auth).value() : nullptr;
}

std::string Bearer(const std::string& key) { return "Bearer " + key; }

bool IsKeyAlphabet(const std::string& key) {
  for (char c : key) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return false;
  }
  return true;
}

// ---- HTTP plumbing ----------------------------------------------------------------------

class CaptureTarget final : public http::ResponseTarget {
 public:
  void Deliver(http::Response response) override {
    ++deliveries;
    last = std::move(response);
  }
  int deliveries = 0;
  http::Response last;
};

using Headers = std::map<std::string, std::string>;

std::string_view LookupHeader(const void* native, std::string_view name) {
  for (const auto& [key, value] : *static_cast<const Headers*>(native)) {
    if (EqualsIgnoreCase(key, name)) return value;
  }
  return {};
}

// A request with its header storage; views point into `target` and `headers`.
struct FakeRequest {
  FakeRequest(http::Method method, std::string target_text, Headers h = {})
      : target(std::move(target_text)), headers(std::move(h)) {
    request.method = method;
    request.target = target;
    size_t q = target.find('?');
    request.path = std::string_view(target).substr(0, q);
    request.query =
        q == std::string::npos ? std::string_view() : std::string_view(target).substr(q + 1);
    request.BindHeaders(&LookupHeader, &headers);
  }
  std::string target;
  Headers headers;
  http::Request request;
};

// The wrapped handler: records what reached it and answers 200 "next".
class NextHandler final : public http::RequestHandler {
 public:
  void Handle(http::Request& request, http::Responder responder) override {
    ++calls;
    last_path = std::string(request.path);
    http::Response r;
    r.body = "next";
    responder.Send(std::move(r));
  }
  int calls = 0;
  std::string last_path;
};

http::Response Handle(http::RequestHandler& handler, http::Request& request) {
  auto target = std::make_shared<CaptureTarget>();
  handler.Handle(request, http::Responder(target));
  EXPECT_EQ(target->deliveries, 1);
  return target->last;
}

http::Response RunToken(TokenAuth& auth, const http::Request& request, AuthClock::time_point now) {
  auto target = std::make_shared<CaptureTarget>();
  HandleTokenRequest(auth, request, http::Responder(target), now);
  EXPECT_EQ(target->deliveries, 1);
  return target->last;
}

// ---- pure helpers -----------------------------------------------------------------------

TEST(TokenAuthTest, Base64UrlMatchesRfc4648Vectors) {
  EXPECT_EQ(Base64Url(""), "");
  EXPECT_EQ(Base64Url("f"), "Zg");
  EXPECT_EQ(Base64Url("fo"), "Zm8");
  EXPECT_EQ(Base64Url("foo"), "Zm9v");
  EXPECT_EQ(Base64Url("foob"), "Zm9vYg");
  EXPECT_EQ(Base64Url("fooba"), "Zm9vYmE");
  EXPECT_EQ(Base64Url("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64Url(std::string("\xfb\xff\xbf", 3)), "-_-_");  // URL-safe alphabet
}

TEST(TokenAuthTest, GeneratedKeysHaveTorchServesLengthAndAlphabet) {
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    auto key = GenerateKey(6);
    ASSERT_TRUE(key.ok()) << key.status().message();
    EXPECT_EQ(key->size(), 8u);
    EXPECT_TRUE(IsKeyAlphabet(*key)) << *key;
    seen.insert(*key);
  }
  EXPECT_EQ(seen.size(), 200u);  // 48 random bits: a repeat would mean no randomness
  auto longer = GenerateKey(24);
  ASSERT_TRUE(longer.ok());
  EXPECT_EQ(longer->size(), 32u);
  EXPECT_FALSE(GenerateKey(0).ok());
  EXPECT_FALSE(GenerateKey(257).ok());
}

TEST(TokenAuthTest, FormatInstantIsJavasInstantToString) {
  EXPECT_EQ(FormatInstant(AuthClock::time_point()), "1970-01-01T00:00:00Z");
  EXPECT_EQ(FormatInstant(kT0), "2024-01-16T22:23:32Z");
  EXPECT_EQ(FormatInstant(kT0 + std::chrono::milliseconds(952)), "2024-01-16T22:23:32.952Z");
  EXPECT_EQ(FormatInstant(kT0 + std::chrono::microseconds(952499)), "2024-01-16T22:23:32.952499Z");
  EXPECT_EQ(FormatInstant(kT0 + std::chrono::nanoseconds(952499001)),
            "2024-01-16T22:23:32.952499001Z");
  EXPECT_EQ(FormatInstant(kT0 + std::chrono::microseconds(1)), "2024-01-16T22:23:32.000001Z");
}

TEST(TokenAuthTest, ParseInstantReadsWhatFormatInstantWrites) {
  for (auto t : {kT0, kT0 + std::chrono::milliseconds(952), kT0 + std::chrono::microseconds(952499),
                 kT0 + std::chrono::nanoseconds(952499001), AuthClock::time_point()}) {
    auto back = ParseInstant(FormatInstant(t));
    ASSERT_TRUE(back.has_value()) << FormatInstant(t);
    EXPECT_EQ(*back, t);
  }
  EXPECT_EQ(ParseInstant("2024-01-16T22:23:32.9Z"), kT0 + std::chrono::milliseconds(900));
  for (const char* bad :
       {"", "2024-01-16", "2024-01-16T22:23:32", "2024-01-16 22:23:32Z", "2024-02-30T00:00:00Z",
        "2024-01-16T24:00:00Z", "2024-01-16T22:23:32.Z", "2024-01-16T22:23:32.1234567890Z",
        "2024-01-16T22:23:32Zx", "2024-01-16T22:23:32+01:00"}) {
    EXPECT_FALSE(ParseInstant(bad).has_value()) << bad;
  }
}

TEST(TokenAuthTest, BearerTokenAcceptsTorchServesPattern) {
  EXPECT_EQ(BearerToken("Bearer abc_-12"), "abc_-12");
  EXPECT_EQ(BearerToken("Bearer   abc"), "abc");
  EXPECT_EQ(BearerToken("Bearer\tabc"), "abc");
  EXPECT_EQ(BearerToken("  Bearer abc  "), "abc");
  EXPECT_EQ(BearerToken("bearer abc"), "abc");  // RFC 9110: the scheme is case-insensitive
  EXPECT_EQ(BearerToken("BEARER abc"), "abc");
  for (const char* bad : {"", "Bearer", "Bearer ", "Bearerabc", "Basic abc", "abc", "Bearer a b",
                          "Bearer a\tb", "Token abc"}) {
    EXPECT_EQ(BearerToken(bad), "") << bad;
  }
}

TEST(TokenAuthTest, KeyFileRoundTripsAndHasTorchServesShape) {
  KeySet keys{"aadJv_R6", kT0 + std::chrono::microseconds(952499), "poZXAlqe",
              kT0 + seconds(18) + std::chrono::microseconds(621298), "xryL_Vzs"};
  const std::string text = FormatKeyFile(keys);
  EXPECT_EQ(text,
            "{\n"
            "  \"management\": {\n"
            "    \"key\": \"aadJv_R6\",\n"
            "    \"expiration time\": \"2024-01-16T22:23:32.952499Z\"\n"
            "  },\n"
            "  \"inference\": {\n"
            "    \"key\": \"poZXAlqe\",\n"
            "    \"expiration time\": \"2024-01-16T22:23:50.621298Z\"\n"
            "  },\n"
            "  \"API\": {\n"
            "    \"key\": \"xryL_Vzs\"\n"
            "  }\n"
            "}");
  auto back = ParseKeyFile(text);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->management_key, keys.management_key);
  EXPECT_EQ(back->management_expires, keys.management_expires);
  EXPECT_EQ(back->inference_key, keys.inference_key);
  EXPECT_EQ(back->inference_expires, keys.inference_expires);
  EXPECT_EQ(back->api_key, keys.api_key);
}

TEST(TokenAuthTest, ParseKeyFileRejectsIncompleteFiles) {
  EXPECT_FALSE(ParseKeyFile("").ok());
  EXPECT_FALSE(ParseKeyFile("[]").ok());
  EXPECT_FALSE(
      ParseKeyFile(R"({"management": {"key": "a", "expiration time": "2024-01-16T22:23:32Z"},
      "inference": {"key": "b", "expiration time": "2024-01-16T22:23:32Z"}})")
          .ok());  // no API key
  auto no_expiry = ParseKeyFile(R"({"management": {"key": "a"},
      "inference": {"key": "b", "expiration time": "2024-01-16T22:23:32Z"}, "API": {"key": "c"}})");
  ASSERT_FALSE(no_expiry.ok());
  EXPECT_EQ(no_expiry.status().message(), "key file has no valid management expiration time");
  auto bad_key =
      ParseKeyFile(R"({"management": {"key": "a b", "expiration time": "2024-01-16T22:23:32Z"},
      "inference": {"key": "b", "expiration time": "2024-01-16T22:23:32Z"}, "API": {"key": "c"}})");
  ASSERT_FALSE(bad_key.ok());
  EXPECT_EQ(bad_key.status().message(), "key file has no valid management key");
}

// ---- TokenAuth --------------------------------------------------------------------------

TEST(TokenAuthTest, CreateWritesAPrivateKeyFileWithThreeKeys) {
  TempDir dir;
  auto auth = MakeAuth(dir);
  ASSERT_NE(auth, nullptr);
  EXPECT_EQ(auth->key_file(), dir.File("key_file.json"));
  const mode_t mode = ModeOf(auth->key_file());
  EXPECT_TRUE(S_ISREG(mode));
  EXPECT_EQ(mode & 0777, 0600u);

  const KeySet keys = auth->keys();
  for (const std::string* k : {&keys.management_key, &keys.inference_key, &keys.api_key}) {
    EXPECT_EQ(k->size(), 8u);
    EXPECT_TRUE(IsKeyAlphabet(*k)) << *k;
  }
  EXPECT_NE(keys.management_key, keys.inference_key);
  EXPECT_NE(keys.management_key, keys.api_key);
  EXPECT_NE(keys.inference_key, keys.api_key);
  EXPECT_EQ(keys.management_expires, kT0 + minutes(60));
  EXPECT_EQ(keys.inference_expires, kT0 + minutes(60));

  auto j = nlohmann::ordered_json::parse(ReadFile(auth->key_file()));
  std::vector<std::string> members;
  for (auto& [name, value] : j.items()) members.push_back(name);
  EXPECT_EQ(members, (std::vector<std::string>{"management", "inference", "API"}));
  EXPECT_EQ(j["management"]["key"], keys.management_key);
  EXPECT_EQ(j["management"]["expiration time"], "2024-01-16T23:23:32Z");
  EXPECT_EQ(j["inference"]["key"], keys.inference_key);
  EXPECT_EQ(j["inference"]["expiration time"], "2024-01-16T23:23:32Z");
  EXPECT_EQ(j["API"].size(), 1u);
  EXPECT_EQ(j["API"]["key"], keys.api_key);

  // No temporary file is left beside it.
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

TEST(TokenAuthTest, ExpirationCountsWholeSecondsAsTorchServe) {
  TempDir dir;
  auto auth = MakeAuth(dir, kT0, 0.25);
  ASSERT_NE(auth, nullptr);
  EXPECT_EQ(auth->keys().inference_expires, kT0 + seconds(15));
}

TEST(TokenAuthTest, ExpiryHasMicrosecondPrecisionAsJava) {
  TempDir dir;
  auto auth = MakeAuth(dir, kT0 + std::chrono::nanoseconds(952499123));
  ASSERT_NE(auth, nullptr);
  EXPECT_EQ(FormatInstant(auth->keys().inference_expires), "2024-01-16T23:23:32.952499Z");
}

TEST(TokenAuthTest, CreateRejectsBadOptions) {
  TempDir dir;
  TokenAuth::Options o;
  o.key_file = dir.File("key_file.json");
  o.expiration_minutes = 0;
  EXPECT_EQ(TokenAuth::Create(o, kT0).status().code(), StatusCode::kInvalidArgument);
  o.expiration_minutes = 0.01;  // 0.6 s
  EXPECT_EQ(TokenAuth::Create(o, kT0).status().code(), StatusCode::kInvalidArgument);
  o.expiration_minutes = -5;
  EXPECT_EQ(TokenAuth::Create(o, kT0).status().code(), StatusCode::kInvalidArgument);
  o.expiration_minutes = 60;
  o.key_bytes = 0;
  EXPECT_EQ(TokenAuth::Create(o, kT0).status().code(), StatusCode::kInvalidArgument);
  o.key_bytes = 6;
  o.key_file = "";
  EXPECT_EQ(TokenAuth::Create(o, kT0).status().code(), StatusCode::kInvalidArgument);
}

TEST(TokenAuthTest, CreateFailsWithThePathWhenTheDirectoryIsMissing) {
  TempDir dir;
  TokenAuth::Options o;
  o.key_file = dir.File("missing/key_file.json");
  auto auth = TokenAuth::Create(o, kT0);
  ASSERT_FALSE(auth.ok());
  EXPECT_EQ(auth.status().code(), StatusCode::kInternal);
  EXPECT_NE(auth.status().message().find(dir.File("missing/key_file.json")), std::string::npos)
      << auth.status().message();
}

TEST(TokenAuthTest, RelativeKeyFileIsTakenFromTheWorkingDirectory) {
  TempDir dir;
  const auto old_cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir.path());
  TokenAuth::Options o;  // default: key_file.json
  auto auth = TokenAuth::Create(o, kT0);
  std::filesystem::current_path(old_cwd);
  ASSERT_TRUE(auth.ok()) << auth.status().message();
  EXPECT_EQ((*auth)->key_file(),
            (std::filesystem::canonical(dir.path()) / "key_file.json").string());
  EXPECT_TRUE(std::filesystem::exists(dir.File("key_file.json")));
}

TEST(TokenAuthTest, ASymlinkAtTheKeyFilePathIsReplacedNotFollowed) {
  TempDir dir;
  const std::string victim = dir.File("victim.txt");
  { std::ofstream(victim) << "do not touch"; }
  ASSERT_EQ(symlink(victim.c_str(), dir.File("key_file.json").c_str()), 0);
  auto auth = MakeAuth(dir);
  ASSERT_NE(auth, nullptr);
  EXPECT_EQ(ReadFile(victim), "do not touch");
  EXPECT_TRUE(S_ISREG(ModeOf(dir.File("key_file.json"))));
}

TEST(TokenAuthTest, CheckAcceptsOnlyTheRightUnexpiredKeyOfItsType) {
  TempDir dir;
  auto auth = MakeAuth(dir);
  ASSERT_NE(auth, nullptr);
  const KeySet k = auth->keys();
  const auto now = kT0 + minutes(1);

  EXPECT_TRUE(auth->Check(TokenType::kInference, Bearer(k.inference_key), now));
  EXPECT_TRUE(auth->Check(TokenType::kManagement, Bearer(k.management_key), now));
  EXPECT_TRUE(auth->Check(TokenType::kApi, Bearer(k.api_key), now));

  // Missing, malformed, wrong.
  EXPECT_FALSE(auth->Check(TokenType::kInference, "", now));
  EXPECT_FALSE(auth->Check(TokenType::kInference, "Bearer", now));
  EXPECT_FALSE(auth->Check(TokenType::kInference, k.inference_key, now));  // no scheme
  EXPECT_FALSE(auth->Check(TokenType::kInference, "Basic " + k.inference_key, now));
  EXPECT_FALSE(auth->Check(TokenType::kInference, "Bearer abcd1234", now));
  EXPECT_FALSE(auth->Check(TokenType::kInference, Bearer(k.inference_key + "x"), now));
  EXPECT_FALSE(auth->Check(TokenType::kInference, Bearer(k.inference_key.substr(0, 7)), now));

  // Another listener's key.
  EXPECT_FALSE(auth->Check(TokenType::kInference, Bearer(k.management_key), now));
  EXPECT_FALSE(auth->Check(TokenType::kInference, Bearer(k.api_key), now));
  EXPECT_FALSE(auth->Check(TokenType::kManagement, Bearer(k.inference_key), now));
  EXPECT_FALSE(auth->Check(TokenType::kManagement, Bearer(k.api_key), now));
  EXPECT_FALSE(auth->Check(TokenType::kApi, Bearer(k.management_key), now));
}

TEST(TokenAuthTest, KeysExpireExceptTheApiKey) {
  TempDir dir;
  auto auth = MakeAuth(dir);
  ASSERT_NE(auth, nullptr);
  const KeySet k = auth->keys();
  const auto expiry = kT0 + minutes(60);
  EXPECT_TRUE(auth->Check(TokenType::kInference, Bearer(k.inference_key), expiry - seconds(1)));
  EXPECT_FALSE(auth->Check(TokenType::kInference, Bearer(k.inference_key), expiry));
  EXPECT_TRUE(auth->Check(TokenType::kManagement, Bearer(k.management_key), expiry - seconds(1)));
  EXPECT_FALSE(auth->Check(TokenType::kManagement, Bearer(k.management_key), expiry));
  EXPECT_TRUE(auth->Check(TokenType::kApi, Bearer(k.api_key), kT0 + hours(24 * 3650)));
}

TEST(TokenAuthTest, RotateReplacesOneKeyAndRewritesTheFile) {
  TempDir dir;
  auto auth = MakeAuth(dir);
  ASSERT_NE(auth, nullptr);
  const KeySet before = auth->keys();
  const auto later = kT0 + minutes(90);  // both keys have expired by now

  ASSERT_TRUE(auth->Rotate(TokenType::kInference, later).ok());
  const KeySet after = auth->keys();
  EXPECT_NE(after.inference_key, before.inference_key);
  EXPECT_EQ(after.inference_expires, later + minutes(60));
  EXPECT_EQ(after.management_key, before.management_key);
  EXPECT_EQ(after.management_expires, before.management_expires);
  EXPECT_EQ(after.api_key, before.api_key);
  EXPECT_FALSE(auth->Check(TokenType::kInference, Bearer(before.inference_key), later));
  EXPECT_TRUE(auth->Check(TokenType::kInference, Bearer(after.inference_key), later));
  EXPECT_FALSE(auth->Check(TokenType::kManagement, Bearer(before.management_key), later));

  ASSERT_TRUE(auth->Rotate(TokenType::kManagement, later).ok());
  EXPECT_NE(auth->keys().management_key, before.management_key);
  EXPECT_TRUE(auth->Check(TokenType::kManagement, Bearer(auth->keys().management_key), later));

  auto file = ParseKeyFile(ReadFile(auth->key_file()));
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->inference_key, auth->keys().inference_key);
  EXPECT_EQ(file->management_key, auth->keys().management_key);
  EXPECT_EQ(file->api_key, before.api_key);
  EXPECT_EQ(ModeOf(auth->key_file()) & 0777, 0600u);

  EXPECT_EQ(auth->Rotate(TokenType::kApi, later).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(auth->keys().api_key, before.api_key);
}

TEST(TokenAuthTest, FailedRotationKeepsTheOldKeys) {
  auto dir = std::make_unique<TempDir>();
  auto auth = MakeAuth(*dir);
  ASSERT_NE(auth, nullptr);
  const KeySet before = auth->keys();
  dir.reset();  // the key file's directory is gone: the rewrite must fail
  Status s = auth->Rotate(TokenType::kInference, kT0);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_EQ(auth->keys().inference_key, before.inference_key);
  EXPECT_TRUE(auth->Check(TokenType::kInference, Bearer(before.inference_key), kT0));
}

TEST(TokenAuthTest, ReuseKeepsKeysFromAPrivateKeyFileAndRenewsExpiredOnes) {
  TempDir dir;
  auto first = MakeAuth(dir);
  ASSERT_NE(first, nullptr);
  const KeySet k = first->keys();

  TokenAuth::Options o;
  o.key_file = dir.File("key_file.json");
  o.reuse_key_file = true;
  auto again = TokenAuth::Create(o, kT0 + minutes(10));
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE((*again)->reused());
  EXPECT_EQ((*again)->keys().inference_key, k.inference_key);
  EXPECT_EQ((*again)->keys().management_key, k.management_key);
  EXPECT_EQ((*again)->keys().api_key, k.api_key);
  EXPECT_EQ((*again)->keys().inference_expires, k.inference_expires);

  auto much_later = TokenAuth::Create(o, kT0 + minutes(61));
  ASSERT_TRUE(much_later.ok());
  EXPECT_TRUE((*much_later)->reused());
  EXPECT_EQ((*much_later)->keys().api_key, k.api_key);
  EXPECT_NE((*much_later)->keys().inference_key, k.inference_key);
  EXPECT_NE((*much_later)->keys().management_key, k.management_key);
  EXPECT_EQ((*much_later)->keys().inference_expires, kT0 + minutes(121));
}

TEST(TokenAuthTest, ReuseIgnoresAKeyFileOthersCanRead) {
  TempDir dir;
  auto first = MakeAuth(dir);
  ASSERT_NE(first, nullptr);
  ASSERT_EQ(chmod(first->key_file().c_str(), 0644), 0);
  TokenAuth::Options o;
  o.key_file = dir.File("key_file.json");
  o.reuse_key_file = true;
  auto again = TokenAuth::Create(o, kT0);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE((*again)->reused());
  EXPECT_NE((*again)->keys().api_key, first->keys().api_key);
  EXPECT_EQ(ModeOf(o.key_file) & 0777, 0600u);
}

TEST(TokenAuthTest, ReuseIgnoresAGarbledKeyFile) {
  TempDir dir;
  const std::string path = dir.File("key_file.json");
  { std::ofstream(path) << "{not json"; }
  ASSERT_EQ(chmod(path.c_str(), 0600), 0);
  TokenAuth::Options o;
  o.key_file = path;
  o.reuse_key_file = true;
  auto auth = TokenAuth::Create(o, kT0);
  ASSERT_TRUE(auth.ok());
  EXPECT_FALSE((*auth)->reused());
  EXPECT_TRUE(ParseKeyFile(ReadFile(path)).ok());
}

TEST(TokenAuthTest, ChecksRunSafelyDuringRotations) {
  TempDir dir;
  auto auth = MakeAuth(dir);
  ASSERT_NE(auth, nullptr);
  const std::string management = Bearer(auth->keys().management_key);
  std::atomic<bool> stop{false};
  std::atomic<int> management_failures{0};
  std::vector<std::thread> readers;
  readers.reserve(3);
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        auth->Check(TokenType::kInference, "Bearer whatever", kT0);
        if (!auth->Check(TokenType::kManagement, management, kT0)) ++management_failures;
      }
    });
  }
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(auth->Rotate(TokenType::kInference, kT0).ok());
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(management_failures.load(), 0);  // rotating one key never disturbs the other
}

// ---- policy and warnings ----------------------------------------------------------------

ServerConfig Config() { return ServerConfig{}; }

void BindAll(ListenAddress* a) {
  a->host = "0.0.0.0";
  a->original = "http://0.0.0.0:" + std::to_string(a->port);
}

TEST(TokenAuthTest, DecideAuthDefaultsNeedNoToken) {
  AuthPolicy p = DecideAuth(Config());
  EXPECT_FALSE(p.inference);
  EXPECT_FALSE(p.management);
  EXPECT_FALSE(p.metrics);
  // Issue 8 #9: the keys exist (key_file.json for TorchServe's scripts) though none is
  // required on loopback.
  EXPECT_TRUE(p.keys);
  EXPECT_TRUE(p.NeedsKeys());
}

TEST(TokenAuthTest, DecideAuthRequiresTokensBeyondLoopback) {
  ServerConfig c = Config();
  BindAll(&c.inference_address);
  AuthPolicy p = DecideAuth(c);
  EXPECT_TRUE(p.inference);
  EXPECT_FALSE(p.management);
  EXPECT_TRUE(p.NeedsKeys());

  c = Config();
  BindAll(&c.management_address);
  p = DecideAuth(c);
  EXPECT_FALSE(p.inference);
  EXPECT_TRUE(p.management);

  c = Config();
  c.inference_address.host = "::";
  c.management_address.host = "10.1.2.3";
  p = DecideAuth(c);
  EXPECT_TRUE(p.inference);
  EXPECT_TRUE(p.management);

  c = Config();
  c.inference_address.host = "::1";
  c.management_address.host = "localhost";
  p = DecideAuth(c);
  EXPECT_FALSE(p.inference);
  EXPECT_FALSE(p.management);
}

TEST(TokenAuthTest, DecideAuthHonoursDisableAndEnable) {
  ServerConfig c = Config();
  BindAll(&c.inference_address);
  BindAll(&c.management_address);
  c.disable_token_authorization = true;
  EXPECT_FALSE(DecideAuth(c).NeedsKeys());

  c = Config();
  c.enable_token_authorization = true;  // loopback-only, but asked for
  AuthPolicy p = DecideAuth(c);
  EXPECT_TRUE(p.inference);
  EXPECT_TRUE(p.management);

  c.disable_token_authorization = true;  // both: enable wins
  p = DecideAuth(c);
  EXPECT_TRUE(p.inference);
  EXPECT_TRUE(p.management);

  c = Config();
  c.disable_token_authorization = true;  // loopback and disabled: nothing
  EXPECT_FALSE(DecideAuth(c).NeedsKeys());

  c.enable_token_authorization = true;  // enable wins over disable for the keys too
  EXPECT_TRUE(DecideAuth(c).keys);
}

TEST(TokenAuthTest, DecideAuthMetricsFollowsMetricsToken) {
  ServerConfig c = Config();
  c.metrics_token = "s3cret";
  EXPECT_TRUE(DecideAuth(c).metrics);
  EXPECT_FALSE(DecideAuth(c).inference);  // metrics_token is not a key_file key
  EXPECT_FALSE(DecideAuth(c).management);
  c.enable_metrics_api = false;
  EXPECT_FALSE(DecideAuth(c).metrics);
}

TEST(TokenAuthTest, NoWarningsForTheDefaults) {
  EXPECT_TRUE(StartupSecurityWarnings(Config()).empty());
}

TEST(TokenAuthTest, NoWarningWhenExposedListenersRequireTokens) {
  ServerConfig c = Config();
  BindAll(&c.inference_address);
  BindAll(&c.management_address);
  BindAll(&c.metrics_address);
  c.metrics_token = "s3cret";
  EXPECT_TRUE(StartupSecurityWarnings(c).empty());
}

TEST(TokenAuthTest, WarnsForEachListenerExposedWithoutToken) {
  ServerConfig c = Config();
  BindAll(&c.inference_address);
  BindAll(&c.management_address);
  BindAll(&c.metrics_address);
  c.disable_token_authorization = true;
  EXPECT_EQ(StartupSecurityWarnings(c),
            (std::vector<std::string>{
                "Inference API listens on http://0.0.0.0:8080, beyond loopback, without a token "
                "(disable_token_authorization=true): anyone who can reach it can call it",
                "Management API listens on http://0.0.0.0:8081, beyond loopback, without a token "
                "(disable_token_authorization=true): anyone who can reach it can call it",
                "Metrics API listens on http://0.0.0.0:8082, beyond loopback, without a token "
                "(metrics_token is not set): anyone who can reach it can call it",
            }));
  c.enable_metrics_api = false;  // no metrics listener at all: nothing to warn about
  EXPECT_EQ(StartupSecurityWarnings(c).size(), 2u);
}

TEST(TokenAuthTest, WarningUsesTheAddressAsConfiguredOrBuildsIt) {
  ServerConfig c = Config();
  c.metrics_address.host = "::";
  c.metrics_address.original = "";
  EXPECT_EQ(StartupSecurityWarnings(c),
            (std::vector<std::string>{
                "Metrics API listens on http://[::]:8082, beyond loopback, without a token "
                "(metrics_token is not set): anyone who can reach it can call it"}));
}

TEST(TokenAuthTest, WarnsForDefaultAllowedUrlsOnlyWithModelApi) {
  ServerConfig c = Config();
  EXPECT_TRUE(StartupSecurityWarnings(c).empty());
  c.enable_model_api = true;
  EXPECT_EQ(StartupSecurityWarnings(c),
            (std::vector<std::string>{
                "enable_model_api=true with the default allowed_urls (file://.*|http(s)?://.*): "
                "model registration accepts any http(s) URL; limit allowed_urls to the hosts you "
                "trust"}));
  c.allowed_urls = {"https://models\\.example\\.com/.*"};
  EXPECT_TRUE(StartupSecurityWarnings(c).empty());
}

TEST(TokenAuthTest, WarnsWhenEnableAndDisableContradict) {
  ServerConfig c = Config();
  c.enable_token_authorization = true;
  c.disable_token_authorization = true;
  EXPECT_EQ(StartupSecurityWarnings(c),
            (std::vector<std::string>{
                "enable_token_authorization=true and disable_token_authorization=true contradict "
                "each other: tokens are required on the inference and management APIs (enable "
                "wins)"}));
}

// ---- AuthGate and /token ----------------------------------------------------------------

AuthClock::time_point FixedNow() { return kT0 + minutes(1); }
AuthClock::time_point LateNow() { return kT0 + hours(2); }

TEST(TokenAuthTest, GateAnswersTorchServesErrorWithoutAToken) {
  TempDir dir;
  auto auth = MakeAuth(dir);
  ASSERT_NE(auth, nullptr);
  NextHandler next;
  AuthGate gate(auth.get(), TokenType::kInference, &next, DefaultExemptPaths(TokenType::kInference),
                &FixedNow);

  FakeRequest missing(http::Method::kPost, "/predictions/m");
  http::Response r = Handle(gate, missing.request);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body, kAuthorizationFailedBody);
  EXPECT_EQ(next.calls, 0);

  FakeRequest wrong(http::Method::kPost, "/predictions/m", {{"Authorization", "Bearer abcd1234"}});
  EXPECT_EQ(Handle(gate, wrong.request).body, kAuthorizationFailedBody);
  FakeRequest other(http::Method::kPost, "/predictions/m",
                    {{"Authorization", Bearer(auth->keys().management_key)}});
  EXPECT_EQ(Handle(gate, other.request).status, 400);
  EXPECT_EQ(next.calls, 0);
}

TEST(TokenAuthTest, GateForwardsTheRightToken) {
  TempDir dir;
  auto auth = MakeAuth(dir);
  ASSERT_NE(auth, nullptr);
  NextHandler next;
  AuthGate gate(auth.get(), TokenType::kManagement, &next,
                DefaultExemptPaths(TokenType::kManagement), &FixedNow);
  FakeRequest ok(http::Method::kGet, "/models?limit=5",
                 {{"authorization", Bearer(auth->keys().management_key)}});
  http::Response r = Handle(gate, ok.request);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "next");
  EXPECT_EQ(next.calls, 1);
  EXPECT_EQ(next.last_path, "/models");
}

// Issue 8 #9: where no key is required, a request without one passes, but one that presents
// a key must present the valid one.
TEST(TokenAuthTest, GateIfPresentedChecksOnlyPresentedKeys) {
  TempDir dir;
  auto auth = MakeAuth(dir);
  ASSERT_NE(auth, nullptr);
  NextHandler next;
  AuthGate gate(auth.get(), TokenType::kInference, &next, DefaultExemptPaths(TokenType::kInference),
                &FixedNow, AuthGate::Presence::kIfPresented);
  for (const char* value : {"", "  ", "Bearer", "bearer  "}) {
    FakeRequest none(http::Method::kPost, "/predictions/m", {{"Authorization", value}});
    EXPECT_EQ(Handle(gate, none.request).body, "next") << '"' << value << '"';
  }
  FakeRequest absent(http::Method::kPost, "/predictions/m");
  EXPECT_EQ(Handle(gate, absent.request).body, "next");
  EXPECT_EQ(next.calls, 5);
  for (std::string value : {std::string("Bearer abcd1234"), std::string("Basic dXNlcjpwdw=="),
                            Bearer(auth->keys().management_key)}) {
    FakeRequest wrong(http::Method::kPost, "/predictions/m", {{"Authorization", value}});
    http::Response r = Handle(gate, wrong.request);
    EXPECT_EQ(r.status, 400) << value;
    EXPECT_EQ(r.body, kAuthorizationFailedBody) << value;
  }
  EXPECT_EQ(next.calls, 5);
  FakeRequest right(http::Method::kPost, "/predictions/m",
                    {{"Authorization", Bearer(auth->keys().inference_key)}});
  EXPECT_EQ(Handle(gate, right.request).body, "next");
}

// Where no key is required, the OpenAI routes ignore a presented key (clients always send
// one); other paths still check it. Where a key is required, the predicate changes nothing.
TEST(TokenAuthTest, GateIgnoresAPresentedKeyOnlyOnThePathsItIsToldToAndOnlyIfNotRequired) {
  TempDir dir;
  auto auth = MakeAuth(dir);
  ASSERT_NE(auth, nullptr);
  auto openai = [](std::string_view path) { return path.starts_with("/v1/"); };
  NextHandler next;
  AuthGate optional(auth.get(), TokenType::kInference, &next,
                    DefaultExemptPaths(TokenType::kInference), &FixedNow,
                    AuthGate::Presence::kIfPresented, openai);
  FakeRequest placeholder(http::Method::kPost, "/v1/completions",
                          {{"Authorization", "Bearer EMPTY"}});
  EXPECT_EQ(Handle(optional, placeholder.request).body, "next");
  FakeRequest predictions(http::Method::kPost, "/predictions/m",
                          {{"Authorization", "Bearer EMPTY"}});
  EXPECT_EQ(Handle(optional, predictions.request).status, 400);
  AuthGate required(auth.get(), TokenType::kInference, &next,
                    DefaultExemptPaths(TokenType::kInference), &FixedNow,
                    AuthGate::Presence::kRequired, openai);
  EXPECT_EQ(Handle(required, placeholder.request).status, 400);
  FakeRequest right(http::Method::kPost, "/v1/completions",
                    {{"Authorization", Bearer(auth->keys().inference_key)}});
  EXPECT_EQ(Handle(required, right.request).body, "next");
  EXPECT_EQ(next.calls, 2);
}

TEST(TokenAuthTest, GateWithoutKeysRefusesEveryPresentedKey) {
  NextHandler next;
  AuthGate gate(nullptr, TokenType::kManagement, &next, DefaultExemptPaths(TokenType::kManagement),
                &FixedNow, AuthGate::Presence::kIfPresented);
  FakeRequest absent(http::Method::kGet, "/models");
  EXPECT_EQ(Handle(gate, absent.request).body, "next");
  FakeRequest sent(http::Method::kGet, "/models", {{"Authorization", "Bearer abcd1234"}});
  EXPECT_EQ(Handle(gate, sent.request).body, kAuthorizationFailedBody);
  EXPECT_EQ(next.calls, 1);
}

TEST(TokenAuthTest, GateUsesTheSystemClockByDefault) {
  TempDir dir;
  auto auth = MakeAuth(dir, AuthClock::now());
  ASSERT_NE(auth, nullptr);
  NextHandler next;
  AuthGate gate(auth.get(), TokenType::kInference, &next, {});
  FakeRequest req(http::Method::kPost, "/predictions/m",
                  {{"Authorization", Bearer(auth->keys().inference_key)}});
  EXPECT_EQ(Handle(gate, req.request).body, "next");
}

TEST(TokenAuthTest, GateRefusesAnExpiredToken) {
  TempDir dir;
  auto auth = MakeAuth(dir);
  ASSERT_NE(auth, nullptr);
  NextHandler next;
  AuthGate gate(auth.get(), TokenType::kInference, &next, {}, &LateNow);
  FakeRequest req(http::Method::kPost, "/predictions/m",
                  {{"Authorization", Bearer(auth->keys().inference_key)}});
  EXPECT_EQ(Handle(gate, req.request).body, kAuthorizationFailedBody);
  EXPECT_EQ(next.calls, 0);
}

TEST(TokenAuthTest, GateLetsExemptPathsThroughExactlyAsWritten) {
  TempDir dir;
  auto auth = MakeAuth(dir);
  ASSERT_NE(auth, nullptr);
  NextHandler next;
  AuthGate inference(auth.get(), TokenType::kInference, &next,
                     DefaultExemptPaths(TokenType::kInference), &FixedNow);
  for (const char* path : {"/", "/api-description", "/ping", "/ping?x=1"}) {
    FakeRequest req(http::Method::kGet, path);
    EXPECT_EQ(Handle(inference, req.request).body, "next") << path;
  }
  for (const char* path : {"/ping/", "//ping", "/%70ing", "/token", "/pingx"}) {
    FakeRequest req(http::Method::kGet, path);
    EXPECT_EQ(Handle(inference, req.request).status, 400) << path;
  }
  AuthGate management(auth.get(), TokenType::kManagement, &next,
                      DefaultExemptPaths(TokenType::kManagement), &FixedNow);
  FakeRequest token(http::Method::kGet, "/token?type=inference");
  EXPECT_EQ(Handle(management, token.request).body, "next");  // HandleTokenRequest checks it
  FakeRequest ping(http::Method::kGet, "/ping");
  EXPECT_EQ(Handle(management, ping.request).status, 400);
}

TEST(TokenAuthTest, TokenApiRotatesWithTheApiKey) {
  TempDir dir;
  auto auth = MakeAuth(dir);
  ASSERT_NE(auth, nullptr);
  const KeySet before = auth->keys();
  const auto now = kT0 + minutes(5);

  FakeRequest inference(http::Method::kGet, "/token?type=inference",
                        {{"Authorization", Bearer(before.api_key)}});
  http::Response r = RunToken(*auth, inference.request, now);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body, "\n");
  EXPECT_NE(auth->keys().inference_key, before.inference_key);
  EXPECT_EQ(auth->keys().inference_expires, now + minutes(60));
  EXPECT_EQ(auth->keys().management_key, before.management_key);
  EXPECT_EQ(ParseKeyFile(ReadFile(auth->key_file()))->inference_key, auth->keys().inference_key);

  FakeRequest management(http::Method::kGet, "/token?type=management",
                         {{"Authorization", Bearer(before.api_key)}});
  EXPECT_EQ(RunToken(*auth, management.request, now).status, 200);
  EXPECT_NE(auth->keys().management_key, before.management_key);
  EXPECT_EQ(auth->keys().api_key, before.api_key);
}

TEST(TokenAuthTest, TokenApiRefusesWithTorchServesAuthenticationError) {
  TempDir dir;
  auto auth = MakeAuth(dir);
  ASSERT_NE(auth, nullptr);
  const KeySet before = auth->keys();
  const auto now = kT0 + minutes(5);
  struct Case {
    std::string target;
    Headers headers;
  };
  const std::vector<Case> cases = {
      {"/token?type=inference", {}},
      {"/token?type=inference", {{"Authorization", "Bearer abcd1234"}}},
      {"/token?type=inference", {{"Authorization", Bearer(before.management_key)}}},
      {"/token?type=inference", {{"Authorization", Bearer(before.inference_key)}}},
      {"/token", {{"Authorization", Bearer(before.api_key)}}},
      {"/token?type=api", {{"Authorization", Bearer(before.api_key)}}},
      {"/token?type=Inference", {{"Authorization", Bearer(before.api_key)}}},
      {"/token?type=", {{"Authorization", Bearer(before.api_key)}}},
      {"/token?type=nope&type=inference", {{"Authorization", Bearer(before.api_key)}}},
  };
  for (const Case& c : cases) {
    FakeRequest req(http::Method::kGet, c.target, c.headers);
    http::Response r = RunToken(*auth, req.request, now);
    EXPECT_EQ(r.status, 400) << c.target;
    EXPECT_EQ(r.body, kAuthenticationFailedBody) << c.target;
  }
  EXPECT_EQ(auth->keys().inference_key, before.inference_key);
  EXPECT_EQ(auth->keys().management_key, before.management_key);
}

TEST(TokenAuthTest, TokenApiAnswers500WhenTheKeyFileCannotBeWritten) {
  auto dir = std::make_unique<TempDir>();
  auto auth = MakeAuth(*dir);
  ASSERT_NE(auth, nullptr);
  const KeySet before = auth->keys();
  dir.reset();
  FakeRequest req(http::Method::kGet, "/token?type=inference",
                  {{"Authorization", Bearer(before.api_key)}});
  http::Response r = RunToken(*auth, req.request, kT0);
  EXPECT_EQ(r.status, 500);
  EXPECT_NE(r.body.find("InternalServerException"), std::string::npos) << r.body;
  EXPECT_EQ(auth->keys().inference_key, before.inference_key);
}

}  // namespace
}  // namespace tserve::api
