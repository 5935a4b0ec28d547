#include "serving/model_fetcher.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace tserve::serving {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// A fresh folder under $TMPDIR, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tserve-fetcher-test-XXXXXX").string();
    EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
    // realpath: /tmp may itself be a symlink, and the store checks compare real paths.
    path_ = fs::canonical(tmpl).string();
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

void WriteFile(const std::string& path, const std::string& content) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out << content;
  ASSERT_TRUE(out.good()) << path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Every name in a folder (hidden ones too: a leftover temporary file must show).
std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

UrlPolicy MakePolicy(const std::vector<std::string>& patterns) {
  StatusOr<UrlPolicy> p = UrlPolicy::Create(patterns);
  EXPECT_TRUE(p.ok()) << p.status().message();
  return p.ok() ? *p : UrlPolicy();
}

// ---------------------------------------------------------------------------------------
// UrlPolicy

const std::vector<std::string> kDefaultPatterns = {"file://.*|http(s)?://.*"};

TEST(UrlPolicyTest, DefaultPatternAllowsFileAndHttp) {
  UrlPolicy p = MakePolicy(kDefaultPatterns);
  EXPECT_TRUE(p.Allows("file:///models/a.mar"));
  EXPECT_TRUE(p.Allows("http://example.com/a.mar"));
  EXPECT_TRUE(p.Allows("https://example.com/a.mar"));
  EXPECT_TRUE(p.Allows("http://"));
}

TEST(UrlPolicyTest, DefaultPatternRejectsOtherSchemesAndPrefixes) {
  UrlPolicy p = MakePolicy(kDefaultPatterns);
  EXPECT_FALSE(p.Allows("ftp://example.com/a.mar"));
  EXPECT_FALSE(p.Allows("s3://bucket/a.mar"));
  EXPECT_FALSE(p.Allows("gopher://127.0.0.1:6379/_x"));
  EXPECT_FALSE(p.Allows("httpx://example.com/a.mar"));
  // A search would find "http://..." inside these; a full match does not.
  EXPECT_FALSE(p.Allows("xhttp://example.com/a.mar"));
  EXPECT_FALSE(p.Allows(" http://example.com/a.mar"));
  EXPECT_FALSE(p.Allows("a.mar"));
  EXPECT_FALSE(p.Allows(""));
}

TEST(UrlPolicyTest, CaseInsensitiveBothWays) {
  EXPECT_TRUE(MakePolicy(kDefaultPatterns).Allows("HTTPS://EXAMPLE.COM/A.MAR"));
  EXPECT_TRUE(MakePolicy(kDefaultPatterns).Allows("File:///models/a.mar"));
  UrlPolicy p = MakePolicy({"HTTP://Models\\.Example\\.COM/.*"});
  EXPECT_TRUE(p.Allows("http://models.example.com/a.mar"));
  EXPECT_FALSE(p.Allows("http://other.example.com/a.mar"));
}

TEST(UrlPolicyTest, WholeUrlMustMatch) {
  UrlPolicy p = MakePolicy({"http://127\\.0\\.0\\.1:\\d+/.*"});
  EXPECT_TRUE(p.Allows("http://127.0.0.1:8080/m.mar"));
  // Harmless: the host is still 127.0.0.1, the rest is its path and query.
  EXPECT_TRUE(p.Allows("http://127.0.0.1:80/x?http://evil.example/"));
  // A substring search would allow these; the whole URL does not match.
  EXPECT_FALSE(p.Allows("http://evil.example/?u=http://127.0.0.1:80/x"));
  EXPECT_FALSE(p.Allows("http://evil.example/http://127.0.0.1:80/x"));
  EXPECT_FALSE(p.Allows("https://127.0.0.1:80/x"));
  EXPECT_FALSE(p.Allows("http://127.0.0.1.evil.example:80/x"));
  EXPECT_FALSE(p.Allows("http://127.0.0.1:80@evil.example/x"));
  EXPECT_FALSE(p.Allows("http://127.0.0.1/x"));  // no port
}

TEST(UrlPolicyTest, TopLevelAlternationIsStillAWholeMatch) {
  // Naive anchoring ("^a|b$") would let "http://a.example/xEVIL" match the first branch.
  UrlPolicy p = MakePolicy({"http://a\\.example/x|http://b\\.example/y"});
  EXPECT_TRUE(p.Allows("http://a.example/x"));
  EXPECT_TRUE(p.Allows("http://b.example/y"));
  EXPECT_FALSE(p.Allows("http://a.example/xEVIL"));
  EXPECT_FALSE(p.Allows("EVILhttp://b.example/y"));
}

TEST(UrlPolicyTest, AnyPatternOfTheListAllows) {
  UrlPolicy p = MakePolicy({"https://a\\.example/.*", "file:///models/.*"});
  EXPECT_TRUE(p.Allows("https://a.example/m.mar"));
  EXPECT_TRUE(p.Allows("file:///models/m.mar"));
  EXPECT_FALSE(p.Allows("http://a.example/m.mar"));
  EXPECT_EQ(p.patterns().size(), 2u);
  UrlPolicy copy;
  copy = p;
  EXPECT_TRUE(copy.Allows("https://a.example/m.mar"));
}

TEST(UrlPolicyTest, EmptyPolicyAllowsNothing) {
  EXPECT_FALSE(UrlPolicy().Allows("http://example.com/a.mar"));
  EXPECT_FALSE(MakePolicy({}).Allows("file:///a.mar"));
}

TEST(UrlPolicyTest, InvalidPatternIsAnError) {
  StatusOr<UrlPolicy> p = UrlPolicy::Create({"http://ok/.*", "http://(unclosed"});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(p.status().message(), HasSubstr("http://(unclosed"));
}

TEST(UrlPolicyTest, VeryLongUrlIsMatchedWithoutCrashing) {
  // std::regex recursed once per character here and overflowed the stack (issue 7 #2).
  UrlPolicy p = MakePolicy({"http(s)?://.*"});
  const std::string url = "http://example.com/" + std::string(400000, 'a') + ".mar";
  EXPECT_TRUE(p.Allows(url));
  EXPECT_FALSE(p.Allows("ftp://example.com/" + std::string(400000, 'a')));
}

TEST(UrlPolicyTest, JavaStyleInlineFlagsCompile) {
  UrlPolicy p = MakePolicy({"(?i)https://A\\.example/.*"});
  EXPECT_TRUE(p.Allows("https://a.example/m.mar"));
}

TEST(UrlPolicyTest, UnsupportedPatternIsAnErrorNamingIt) {
  // Look-arounds and back-references have no linear-time match: refused at startup.
  for (const std::string& bad : {std::string("http://a/(?!secret).*"), std::string("(a)\\1")}) {
    StatusOr<UrlPolicy> p = UrlPolicy::Create({"http://ok/.*", bad});
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(p.status().message(), HasSubstr("\"" + bad + "\""));
  }
}

TEST(FetchUrlLengthTest, UrlsOverTheLimitAreRefusedBeforeAnythingElse) {
  UrlPolicy p = MakePolicy(kDefaultPatterns);
  FetchRequest r;
  r.model_store = "/nonexistent-tserve-store";
  r.policy = &p;
  r.url = "http://example.com/" + std::string(40000, 'a') + ".mar";
  StatusOr<std::string> got = FetchModelArchive(r);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(got.status().message(), HasSubstr(std::to_string(kMaxUrlLength)));
  EXPECT_LT(got.status().message().size(), 1000u);  // the URL is not echoed whole
}

// ---------------------------------------------------------------------------------------
// Address classes (issue 7 #16)

TEST(ClassifyIpAddressTest, PublicAddresses) {
  for (const char* ip : {"8.8.8.8", "1.1.1.1", "11.0.0.1", "172.15.255.255", "172.32.0.1",
                         "100.63.255.255", "100.128.0.1", "169.253.255.255", "169.255.0.1",
                         "192.167.255.255", "192.169.0.1", "126.255.255.255", "128.0.0.1",
                         "2606:4700::1111", "2001:db8::1", "::ffff:8.8.8.8", "64:ff9b::808:808"}) {
    EXPECT_EQ(ClassifyIpAddress(ip), AddressKind::kPublic) << ip;
  }
}

TEST(ClassifyIpAddressTest, LoopbackAddresses) {
  for (const char* ip :
       {"127.0.0.1", "127.1.2.3", "127.255.255.254", "::1", "::ffff:127.0.0.1", "::ffff:7f00:1",
        "0:0:0:0:0:ffff:7f00:2", "64:ff9b::127.0.0.1", "2002:7f00:1::1"}) {
    EXPECT_EQ(ClassifyIpAddress(ip), AddressKind::kLoopback) << ip;
  }
}

TEST(ClassifyIpAddressTest, PrivateAddresses) {
  for (const char* ip :
       {"10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255", "192.168.0.1",
        "192.168.255.255", "100.64.0.1", "100.127.255.255", "fc00::1", "fd12:3456::1",
        "fdff:ffff::1", "fec0::1", "::ffff:10.1.2.3", "::ffff:192.168.1.1", "::ffff:172.20.0.1",
        "::ffff:100.64.0.1", "2002:c0a8:101::1"}) {
    EXPECT_EQ(ClassifyIpAddress(ip), AddressKind::kPrivate) << ip;
  }
}

TEST(ClassifyIpAddressTest, LinkLocalAddresses) {
  for (const char* ip :
       {"169.254.169.254", "169.254.0.1", "169.254.255.255", "fe80::1", "fe80::1ff:fe23:4567:890a",
        "febf::1", "::ffff:169.254.169.254", "fd00:ec2::254"}) {
    AddressKind want =
        std::string(ip) == "fd00:ec2::254" ? AddressKind::kPrivate : AddressKind::kLinkLocal;
    EXPECT_EQ(ClassifyIpAddress(ip), want) << ip;
  }
}

TEST(ClassifyIpAddressTest, UnspecifiedMulticastAndReservedAddresses) {
  for (const char* ip :
       {"0.0.0.0", "0.1.2.3", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
        "::", "::ffff:0.0.0.0", "ff02::1", "ff05::2", "::ffff:224.0.0.1", "::2"}) {
    EXPECT_EQ(ClassifyIpAddress(ip), AddressKind::kReserved) << ip;
  }
}

TEST(ClassifyIpAddressTest, NamesAndMalformedTextAreNotAddresses) {
  for (const char* s : {"", "localhost", "example.com", "1.2.3", "1.2.3.4.5", "256.0.0.1",
                        "::ffff:1.2.3.4.5", "[::1]", "fe80::1%eth0"}) {
    EXPECT_EQ(ClassifyIpAddress(s), std::nullopt) << s;
  }
}

TEST(IsDownloadUrlTest, OnlyHttpAndHttps) {
  EXPECT_TRUE(IsDownloadUrl("http://a/b.mar"));
  EXPECT_TRUE(IsDownloadUrl("HTTPS://a/b.mar"));
  EXPECT_FALSE(IsDownloadUrl("file:///a/b.mar"));
  EXPECT_FALSE(IsDownloadUrl("ftp://a/b.mar"));
  EXPECT_FALSE(IsDownloadUrl("b.mar"));
}

// ---------------------------------------------------------------------------------------
// Paths and file:// URLs

class FetchLocalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteFile(store_ / "a.mar", "A");
    WriteFile(store_ / "sub/b.mar", "B");
    WriteFile(store_ / "folder/MAR-INF/MANIFEST.json", "{}");
    WriteFile(outside_ / "evil.mar", "EVIL");
    fs::create_symlink(outside_ / "evil.mar", store_ / "link-out.mar");
    fs::create_symlink(store_ / "a.mar", store_ / "link-in.mar");
    fs::create_symlink(outside_.path(), store_ / "dir-out");
  }

  StatusOr<std::string> Fetch(const std::string& url, const UrlPolicy* policy = nullptr) {
    FetchRequest r;
    r.url = url;
    r.model_store = store_.path();
    r.policy = policy != nullptr ? policy : &default_policy_;
    return FetchModelArchive(r);
  }

  void ExpectRefused(const std::string& url, StatusCode code = StatusCode::kInvalidArgument) {
    StatusOr<std::string> p = Fetch(url);
    ASSERT_FALSE(p.ok()) << url << " resolved to " << *p;
    EXPECT_EQ(p.status().code(), code) << url << ": " << p.status().message();
  }

  TempDir store_;
  TempDir outside_;
  UrlPolicy default_policy_ = MakePolicy(kDefaultPatterns);
};

TEST_F(FetchLocalTest, PlainNamesResolveInsideTheStore) {
  StatusOr<std::string> p = Fetch("a.mar");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(*p, store_ / "a.mar");
  p = Fetch("sub/b.mar");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(*p, store_ / "sub/b.mar");
  p = Fetch("folder");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(*p, store_ / "folder");
}

TEST_F(FetchLocalTest, AbsolutePathInsideTheStoreIsAccepted) {
  StatusOr<std::string> p = Fetch(store_ / "sub/b.mar");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(*p, store_ / "sub/b.mar");
}

TEST_F(FetchLocalTest, PlainPathsIgnoreThePolicyAsTorchServeDoes) {
  UrlPolicy none;
  StatusOr<std::string> p = Fetch("a.mar", &none);
  ASSERT_TRUE(p.ok()) << p.status().message();
}

TEST_F(FetchLocalTest, DotDotIsRefused) {
  StatusOr<std::string> p =
      Fetch("../" + fs::path(outside_.path()).filename().string() + "/evil.mar");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(p.status().message(), HasSubstr("Relative path is not allowed in url"));
  // Even when it would land back inside the store, as TorchServe.
  ExpectRefused("sub/../a.mar");
  ExpectRefused(store_ / "../x.mar");
  ExpectRefused("..");
}

TEST_F(FetchLocalTest, AbsolutePathOutsideTheStoreIsRefused) {
  ExpectRefused(outside_ / "evil.mar");
  ExpectRefused("/etc/passwd");
  ExpectRefused(store_.path());  // the store itself is not an archive in it
}

TEST_F(FetchLocalTest, SymlinkEscapeIsRefused) {
  ExpectRefused("link-out.mar");
  ExpectRefused("dir-out/evil.mar");
  ExpectRefused("file://" + store_ / "link-out.mar");
  StatusOr<std::string> p = Fetch("link-in.mar");  // a link that stays inside is fine
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(*p, store_ / "a.mar");
}

TEST_F(FetchLocalTest, MissingFileIsNotFound) {
  ExpectRefused("missing.mar", StatusCode::kNotFound);
  ExpectRefused("file://" + store_ / "missing.mar", StatusCode::kNotFound);
}

TEST_F(FetchLocalTest, FileUrlsResolveInsideTheStore) {
  for (const std::string& url :
       {"file://" + store_ / "a.mar", "file://localhost" + store_ / "a.mar",
        std::string("file://a.mar"), "FILE://" + store_ / "a.mar"}) {
    StatusOr<std::string> p = Fetch(url);
    ASSERT_TRUE(p.ok()) << url << ": " << p.status().message();
    EXPECT_EQ(*p, store_ / "a.mar") << url;
  }
  StatusOr<std::string> p = Fetch("file://sub/b.mar");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(*p, store_ / "sub/b.mar");
}

TEST_F(FetchLocalTest, FileUrlsArePercentDecodedBeforeTheChecks) {
  StatusOr<std::string> p = Fetch("file://" + store_ / "a%2Emar");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(*p, store_ / "a.mar");
  ExpectRefused("file://" + store_ / "%2e%2e/x.mar");
  ExpectRefused("file://" + store_ / "sub%2F..%2Fa.mar");
  ExpectRefused("file://" + store_ / "a.mar%00.txt");
}

TEST_F(FetchLocalTest, FileUrlsOutsideTheStoreAreRefused) {
  ExpectRefused("file://" + outside_ / "evil.mar");
  ExpectRefused("file:///etc/passwd");
  ExpectRefused("file://" + store_ / "../evil.mar");
}

TEST_F(FetchLocalTest, FileUrlQueryOrFragmentIsRefused) {
  ExpectRefused("file://" + store_ / "a.mar?x=1");
  ExpectRefused("file://" + store_ / "a.mar#frag");
}

TEST_F(FetchLocalTest, UrlNotAllowedIsNotFoundWithTorchServesMessage) {
  UrlPolicy http_only = MakePolicy({"https://.*"});
  const std::string url = "file://" + store_ / "a.mar";
  StatusOr<std::string> p = Fetch(url, &http_only);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kModelNotFound);
  EXPECT_EQ(p.status().message(), "Given URL " + url + " does not match any allowed URL(s)");
}

TEST_F(FetchLocalTest, NullPolicyAllowsNoUrl) {
  FetchRequest r;
  r.url = "file://a.mar";
  r.model_store = store_.path();
  StatusOr<std::string> p = FetchModelArchive(r);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kModelNotFound);
}

TEST_F(FetchLocalTest, OtherSchemesAreRefused) {
  StatusOr<std::string> p = Fetch("ftp://127.0.0.1/a.mar");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kModelNotFound);
  EXPECT_EQ(p.status().message(),
            "Given URL ftp://127.0.0.1/a.mar does not match any allowed URL(s)");
  // Even when allowed_urls lets them through, tserve does not speak them.
  UrlPolicy anything = MakePolicy({".*"});
  for (const char* url : {"ftp://127.0.0.1/a.mar", "s3://bucket/a.mar",
                          "gopher://127.0.0.1:6379/_x", "a b://x/a.mar"}) {
    p = Fetch(url, &anything);
    ASSERT_FALSE(p.ok()) << url;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument) << url;
    EXPECT_THAT(p.status().message(), HasSubstr("unsupported URL scheme")) << url;
  }
}

TEST(FetchStoreTest, NoModelStoreIsAnError) {
  UrlPolicy p = MakePolicy(kDefaultPatterns);
  FetchRequest r;
  r.url = "a.mar";
  r.policy = &p;
  StatusOr<std::string> got = FetchModelArchive(r);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kInvalidArgument);
  r.model_store = "/nonexistent-tserve-store";
  r.url = "http://127.0.0.1:1/a.mar";
  got = FetchModelArchive(r);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------
// Downloads from a loopback server

// A one-thread HTTP/1.1 server on 127.0.0.1 (port 0) with canned responses: each request
// is answered from `routes` by path (query dropped), 404 otherwise, then the connection is
// closed. Records the request targets. Never talks to anything but loopback.
class LoopbackServer {
 public:
  struct Route {
    std::string response;  // the raw bytes: status line, headers, body
    int stall_ms = 0;      // after sending, hold the connection open this long
  };

  LoopbackServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_GE(fd_, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(fd_, 16), 0);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    port_ = ntohs(addr.sin_port);
  }
  ~LoopbackServer() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    ::close(fd_);
  }
  LoopbackServer(const LoopbackServer&) = delete;
  LoopbackServer& operator=(const LoopbackServer&) = delete;

  void Add(const std::string& path, Route route) { routes_[path] = std::move(route); }
  void Start() {
    thread_ = std::thread([this] { Serve(); });
  }

  int port() const { return port_; }
  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  std::vector<std::string> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  bool Saw(const std::string& path) {
    for (const std::string& r : requests()) {
      if (r == path || r.rfind(path + "?", 0) == 0) return true;
    }
    return false;
  }

 private:
  void Serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      Handle(c);
      ::close(c);
    }
  }

  void Handle(int c) {
    std::string req;
    char buf[4096];
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (req.find("\r\n\r\n") == std::string::npos &&
           std::chrono::steady_clock::now() < deadline && !stop_) {
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      ssize_t n = ::recv(c, buf, sizeof(buf), 0);
      if (n <= 0) return;
      req.append(buf, static_cast<size_t>(n));
    }
    // "GET /path?query HTTP/1.1"
    size_t sp1 = req.find(' ');
    size_t sp2 = req.find(' ', sp1 + 1);
    if (sp1 == std::string::npos || sp2 == std::string::npos) return;
    std::string target = req.substr(sp1 + 1, sp2 - sp1 - 1);
    {
      std::lock_guard<std::mutex> lock(mu_);
      requests_.push_back(target);
    }
    std::string path = target.substr(0, target.find('?'));
    auto it = routes_.find(path);
    Route route = it != routes_.end() ? it->second : Route{Status404(), 0};
    SendAll(c, route.response);
    for (int waited = 0; waited < route.stall_ms && !stop_; waited += 10) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::shutdown(c, SHUT_WR);
  }

  static std::string Status404() {
    return "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found";
  }

  static void SendAll(int c, const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      // MSG_NOSIGNAL: the client hangs up mid-body on purpose (size cap, error statuses).
      ssize_t n = ::send(c, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += static_cast<size_t>(n);
    }
  }

  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::map<std::string, Route> routes_;  // written before Start only
  std::mutex mu_;
  std::vector<std::string> requests_;
};

std::string Body(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + static_cast<char>(i % 61));
  return s;
}

LoopbackServer::Route WithLength(const std::string& body, const std::string& status = "200 OK") {
  return {"HTTP/1.1 " + status + "\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
              std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body,
          0};
}

// No Content-Length: the body ends when the server closes the connection.
LoopbackServer::Route CloseDelimited(const std::string& body) {
  return {"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n" +
              body,
          0};
}

LoopbackServer::Route Chunked(const std::string& body) {
  std::string r = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
  for (size_t off = 0; off < body.size(); off += 300) {
    std::string chunk = body.substr(off, 300);
    std::ostringstream hex;
    hex << std::hex << chunk.size();
    r += hex.str() + "\r\n" + chunk + "\r\n";
  }
  return {r + "0\r\n\r\n", 0};
}

LoopbackServer::Route Redirect(const std::string& location, int code = 302) {
  const std::string body = "moved";  // a body curl must not write into the archive
  return {"HTTP/1.1 " + std::to_string(code) + " Found\r\nLocation: " + location +
              "\r\nContent-Length: " + std::to_string(body.size()) +
              "\r\nConnection: close\r\n\r\n" + body,
          0};
}

// A redirect whose body has no length and goes on and on.
LoopbackServer::Route CloseDelimited302(const std::string& location, const std::string& body) {
  return {"HTTP/1.1 302 Found\r\nLocation: " + location + "\r\nConnection: close\r\n\r\n" + body,
          0};
}

constexpr int64_t kCap = 1000;

class FetchDownloadTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // A proxy from the environment must not see (or break) loopback test traffic.
    ::setenv("no_proxy", "*", 1);
    ::setenv("NO_PROXY", "*", 1);
  }

  void SetUp() override {
    small_ = Body(600, 'a');
    server_.Add("/small.mar", WithLength(small_));
    server_.Add("/dir/nested.mar", WithLength(small_));
    server_.Add("/at-cap.mar", WithLength(Body(kCap, 'b')));
    server_.Add("/big-length.mar", WithLength(Body(5000, 'c')));
    server_.Add("/big-close.mar", CloseDelimited(Body(5000, 'd')));
    server_.Add("/big-chunked.mar", Chunked(Body(5000, 'e')));
    server_.Add("/small-chunked.mar", Chunked(small_));
    server_.Add("/small-close.mar", CloseDelimited(small_));
    server_.Add("/empty.mar", WithLength(""));
    server_.Add("/error.mar", WithLength("boom", "500 Internal Server Error"));
    server_.Add("/redirect-ok.mar", Redirect(server_.Url("/small.mar")));
    server_.Add("/redirect-relative.mar", Redirect("/small.mar", 301));
    server_.Add("/redirect-bad.mar", Redirect(server_.Url("/secret.mar")));
    server_.Add("/redirect-file.mar", Redirect("file:///etc/passwd"));
    server_.Add("/redirect-ftp.mar", Redirect("ftp://127.0.0.1/x.mar"));
    server_.Add(
        "/redirect-creds.mar",
        Redirect("http://user:pw@127.0.0.1:" + std::to_string(server_.port()) + "/small.mar"));
    server_.Add("/redirect-none.mar", {"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n", 0});
    server_.Add("/redirect-huge.mar",
                CloseDelimited302(server_.Url("/small.mar"), Body(size_t{200} << 10, 'f')));
    server_.Add("/secret.mar", WithLength("SECRET"));
    // A chain: /r1 -> /r2 -> /r3 -> /r4 -> /small.mar
    server_.Add("/r1.mar", Redirect(server_.Url("/r2.mar")));
    server_.Add("/r2.mar", Redirect(server_.Url("/r3.mar")));
    server_.Add("/r3.mar", Redirect(server_.Url("/r4.mar")));
    server_.Add("/r4.mar", Redirect(server_.Url("/small.mar")));
    server_.Add("/slow.mar", {"HTTP/1.1 200 OK\r\nContent-Length: 600\r\n\r\nabc", 3000});
    server_.Start();
  }

  FetchRequest Request(const std::string& path_or_url) {
    FetchRequest r;
    r.url = path_or_url.rfind("http", 0) == 0 ? path_or_url : server_.Url(path_or_url);
    r.model_store = store_.path();
    r.policy = &policy_;
    r.max_bytes = kCap;
    r.timeout = std::chrono::seconds(10);
    r.allow_loopback = true;  // the test server is on 127.0.0.1
    return r;
  }

  // Fetches and expects a refusal with `code` whose message holds `text`; nothing may be
  // left in the store.
  void ExpectRefused(const FetchRequest& r, StatusCode code, const std::string& text) {
    StatusOr<std::string> p = FetchModelArchive(r);
    ASSERT_FALSE(p.ok()) << r.url << " fetched to " << *p;
    EXPECT_EQ(p.status().code(), code) << r.url << ": " << p.status().message();
    EXPECT_THAT(p.status().message(), HasSubstr(text)) << r.url;
    EXPECT_EQ(ListDir(store_.path()), std::vector<std::string>{}) << r.url;
  }

  void ExpectDownloaded(const FetchRequest& r, const std::string& name,
                        const std::string& content) {
    StatusOr<std::string> p = FetchModelArchive(r);
    ASSERT_TRUE(p.ok()) << r.url << ": " << p.status().message();
    EXPECT_EQ(*p, store_ / name);
    EXPECT_EQ(ReadFile(store_ / name), content);
    EXPECT_EQ(ListDir(store_.path()), std::vector<std::string>{name});
  }

  TempDir store_;
  LoopbackServer server_;
  // Only this server; everything else (including its /secret.mar: no path starting with
  // "se") is off limits.
  UrlPolicy policy_ = MakePolicy(
      {"http://127\\.0\\.0\\.1:" + std::to_string(server_.port()) + "/([^s@][^@]*|s[^e@][^@]*)?"});
  UrlPolicy anything_ = MakePolicy({".*"});
  std::string small_;
};

TEST_F(FetchDownloadTest, DownloadsIntoTheStore) {
  ExpectDownloaded(Request("/small.mar"), "small.mar", small_);
  EXPECT_EQ(server_.requests(), std::vector<std::string>{"/small.mar"});
}

TEST_F(FetchDownloadTest, NamesTheFileAfterTheLastPathSegment) {
  ExpectDownloaded(Request("/dir/nested.mar?token=abc#frag"), "nested.mar", small_);
}

TEST_F(FetchDownloadTest, ChunkedAndCloseDelimitedBodiesArriveWhole) {
  ExpectDownloaded(Request("/small-chunked.mar"), "small-chunked.mar", small_);
  fs::remove(store_ / "small-chunked.mar");
  ExpectDownloaded(Request("/small-close.mar"), "small-close.mar", small_);
}

TEST_F(FetchDownloadTest, ExactlyTheCapIsAccepted) {
  ExpectDownloaded(Request("/at-cap.mar"), "at-cap.mar", Body(kCap, 'b'));
}

TEST_F(FetchDownloadTest, OversizeWithContentLengthLeavesNothing) {
  ExpectRefused(Request("/big-length.mar"), StatusCode::kDownloadFailed,
                "exceeds the maximum download size of 1000 bytes");
}

TEST_F(FetchDownloadTest, OversizeWithoutContentLengthLeavesNothing) {
  ExpectRefused(Request("/big-close.mar"), StatusCode::kDownloadFailed,
                "exceeds the maximum download size of 1000 bytes");
  ExpectRefused(Request("/big-chunked.mar"), StatusCode::kDownloadFailed,
                "exceeds the maximum download size of 1000 bytes");
}

TEST_F(FetchDownloadTest, HttpErrorsNameTheStatus) {
  // TorchServe's words (issue 8 #10); the cause (status, timeout, redirects) is logged.
  ExpectRefused(Request("/missing.mar"), StatusCode::kDownloadFailed,
                "Failed to download archive from: ");
  ExpectRefused(Request("/error.mar"), StatusCode::kDownloadFailed,
                "Failed to download archive from: ");
}

TEST_F(FetchDownloadTest, EmptyBodyIsRefused) {
  ExpectRefused(Request("/empty.mar"), StatusCode::kDownloadFailed,
                "Failed to download archive from: ");
}

TEST_F(FetchDownloadTest, RedirectToAnAllowedUrlIsFollowed) {
  // The file keeps the name the user asked for; the redirect's own body is not in it.
  ExpectDownloaded(Request("/redirect-ok.mar"), "redirect-ok.mar", small_);
  EXPECT_EQ(server_.requests(), (std::vector<std::string>{"/redirect-ok.mar", "/small.mar"}));
  fs::remove(store_ / "redirect-ok.mar");
  ExpectDownloaded(Request("/redirect-relative.mar"), "redirect-relative.mar", small_);
}

TEST_F(FetchDownloadTest, RedirectToADisallowedUrlIsNotFollowed) {
  ExpectRefused(Request("/redirect-bad.mar"), StatusCode::kModelNotFound,
                "Given URL " + server_.Url("/secret.mar") + " does not match any allowed URL(s)");
  EXPECT_FALSE(server_.Saw("/secret.mar"));
}

TEST_F(FetchDownloadTest, RedirectToAnotherSchemeIsRefused) {
  UrlPolicy anything = MakePolicy({".*"});
  for (const char* path : {"/redirect-file.mar", "/redirect-ftp.mar", "/redirect-creds.mar"}) {
    FetchRequest r = Request(path);
    r.policy = &anything;
    ExpectRefused(r, StatusCode::kDownloadFailed, "redirected to a refused URL");
  }
  EXPECT_FALSE(server_.Saw("/small.mar"));
}

TEST_F(FetchDownloadTest, RedirectWithoutLocationIsRefused) {
  ExpectRefused(Request("/redirect-none.mar"), StatusCode::kDownloadFailed,
                "Failed to download archive from: ");
}

TEST_F(FetchDownloadTest, RedirectBodyIsDroppedButBounded) {
  ExpectRefused(Request("/redirect-huge.mar"), StatusCode::kDownloadFailed,
                "has a body over 65536 bytes");
  EXPECT_FALSE(server_.Saw("/small.mar"));
}

TEST_F(FetchDownloadTest, AtMostThreeRedirects) {
  ExpectDownloaded(Request("/r2.mar"), "r2.mar", small_);  // r2 -> r3 -> r4 -> small: 3
  fs::remove(store_ / "r2.mar");
  ExpectRefused(Request("/r1.mar"), StatusCode::kDownloadFailed,
                "Failed to download archive from: ");
  std::vector<std::string> seen = server_.requests();
  EXPECT_EQ(seen.back(), "/r4.mar");  // the fourth redirect was never followed
}

TEST_F(FetchDownloadTest, UrlNotAllowedIsNeverContacted) {
  LoopbackServer other;
  other.Add("/small.mar", WithLength(small_));
  other.Start();
  FetchRequest r = Request(other.Url("/small.mar"));
  StatusOr<std::string> p = FetchModelArchive(r);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kModelNotFound);
  EXPECT_EQ(p.status().message(),
            "Given URL " + other.Url("/small.mar") + " does not match any allowed URL(s)");
  EXPECT_TRUE(other.requests().empty());
}

TEST_F(FetchDownloadTest, ExistingFileIsKeptUnlessOverwriteIsAsked) {
  WriteFile(store_ / "small.mar", "old");
  StatusOr<std::string> p = FetchModelArchive(Request("/small.mar"));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kAlreadyExists);
  EXPECT_THAT(p.status().message(), HasSubstr("small.mar"));
  EXPECT_EQ(ReadFile(store_ / "small.mar"), "old");
  EXPECT_TRUE(server_.requests().empty());  // refused before downloading

  FetchRequest r = Request("/small.mar");
  r.overwrite = true;
  ExpectDownloaded(r, "small.mar", small_);
}

TEST_F(FetchDownloadTest, AFolderIsNeverReplaced) {
  fs::create_directories(store_ / "small.mar/MAR-INF");
  FetchRequest r = Request("/small.mar");
  r.overwrite = true;
  StatusOr<std::string> p = FetchModelArchive(r);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kAlreadyExists);
  EXPECT_TRUE(fs::is_directory(store_ / "small.mar/MAR-INF"));
  EXPECT_EQ(ListDir(store_.path()), std::vector<std::string>{"small.mar"});
}

TEST_F(FetchDownloadTest, OverwriteReplacesALinkNotItsTarget) {
  TempDir outside;
  WriteFile(outside / "victim.mar", "victim");
  fs::create_symlink(outside / "victim.mar", store_ / "small.mar");
  FetchRequest r = Request("/small.mar");
  r.overwrite = true;
  StatusOr<std::string> p = FetchModelArchive(r);
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_FALSE(fs::is_symlink(store_ / "small.mar"));
  EXPECT_EQ(ReadFile(store_ / "small.mar"), small_);
  EXPECT_EQ(ReadFile(outside / "victim.mar"), "victim");
}

TEST_F(FetchDownloadTest, ConcurrentDownloadsOfOneNameNeverBothWin) {
  std::vector<StatusOr<std::string>> results(2, Status::Internal("not run"));
  std::thread t1([&] { results[0] = FetchModelArchive(Request("/small.mar")); });
  std::thread t2([&] { results[1] = FetchModelArchive(Request("/small.mar")); });
  t1.join();
  t2.join();
  int ok = results[0].ok() + results[1].ok();
  EXPECT_EQ(ok, 1);
  for (const auto& r : results) {
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kAlreadyExists) << r.status().message();
    }
  }
  EXPECT_EQ(ListDir(store_.path()), std::vector<std::string>{"small.mar"});
  EXPECT_EQ(ReadFile(store_ / "small.mar"), small_);
}

TEST_F(FetchDownloadTest, UnusableFileNamesAreRefusedBeforeDownloading) {
  for (const char* path : {"/", "/dir/", "/%2e%2e", "/.hidden.mar", "/a%2Fb.mar", "/a%00.mar",
                           "/..%2Fetc%2Fpasswd", "/a%20b.mar"}) {
    ExpectRefused(Request(path), StatusCode::kInvalidArgument, "cannot name the download");
  }
  EXPECT_TRUE(server_.requests().empty());
}

TEST_F(FetchDownloadTest, CredentialsInTheUrlAreRefused) {
  UrlPolicy anything = MakePolicy({".*"});
  FetchRequest r =
      Request("http://user:pw@127.0.0.1:" + std::to_string(server_.port()) + "/small.mar");
  r.policy = &anything;
  ExpectRefused(r, StatusCode::kInvalidArgument, "credentials");
  EXPECT_TRUE(server_.requests().empty());
}

TEST_F(FetchDownloadTest, NonPositiveCapIsRefused) {
  FetchRequest r = Request("/small.mar");
  r.max_bytes = 0;
  ExpectRefused(r, StatusCode::kInvalidArgument, "maximum download size");
}

TEST_F(FetchDownloadTest, TimeoutIsDownloadFailed) {
  FetchRequest r = Request("/slow.mar");
  r.timeout = std::chrono::seconds(1);
  auto start = std::chrono::steady_clock::now();
  ExpectRefused(r, StatusCode::kDownloadFailed, "Failed to download archive from: ");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(2900));
}

TEST_F(FetchDownloadTest, ConnectionRefusedIsDownloadFailed) {
  int port;
  {
    LoopbackServer closed;  // bound, never started, then closed: nothing listens there
    port = closed.port();
  }
  UrlPolicy anything = MakePolicy({".*"});
  FetchRequest r = Request("http://127.0.0.1:" + std::to_string(port) + "/small.mar");
  r.policy = &anything;
  ExpectRefused(r, StatusCode::kDownloadFailed, "Failed to download archive from");
}

TEST_F(FetchDownloadTest, LoopbackIsRefusedWithoutOptInAndNeverContacted) {
  FetchRequest r = Request("/small.mar");
  r.allow_loopback = false;
  ExpectRefused(r, StatusCode::kInvalidArgument, "127.0.0.1 is a loopback address");
  EXPECT_THAT(FetchModelArchive(r).status().message(), HasSubstr("allow_loopback_model_urls"));
  // Private ranges do not cover loopback.
  r.allow_private = true;
  ExpectRefused(r, StatusCode::kInvalidArgument, "loopback");
  // Names resolving to loopback are checked after resolution.
  r = Request("http://localhost:" + std::to_string(server_.port()) + "/small.mar");
  r.policy = &anything_;
  r.allow_loopback = false;
  ExpectRefused(r, StatusCode::kInvalidArgument, "loopback");
  EXPECT_TRUE(server_.requests().empty());
}

TEST_F(FetchDownloadTest, RedirectToLoopbackIsRefusedAtConnect) {
  // The first hop is allowed (as if it were public); its redirect lands on loopback.
  FetchRequest r = Request("/redirect-ok.mar");
  r.allow_loopback = false;
  ExpectRefused(r, StatusCode::kInvalidArgument, "loopback");
}

TEST_F(FetchDownloadTest, OwnListenersAreRefusedEvenWithLoopbackAllowed) {
  FetchRequest r = Request("/small.mar");
  r.own_ports = {static_cast<uint16_t>(server_.port())};
  ExpectRefused(r, StatusCode::kInvalidArgument, "tserve's own");
  EXPECT_TRUE(server_.requests().empty());
}

TEST_F(FetchDownloadTest, CancelAbortsADownloadInProgress) {
  std::atomic<bool> cancel{false};
  FetchRequest r = Request("/slow.mar");
  r.cancel = &cancel;
  std::thread canceller([&] {
    while (!server_.Saw("/slow.mar")) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    cancel = true;
  });
  ExpectRefused(r, StatusCode::kUnavailable, "shutting down");
  canceller.join();
  // Already cancelled: nothing is contacted.
  r = Request("/small.mar");
  r.cancel = &cancel;
  ExpectRefused(r, StatusCode::kUnavailable, "shutting down");
  EXPECT_FALSE(server_.Saw("/small.mar"));
}

}  // namespace
}  // namespace tserve::serving
