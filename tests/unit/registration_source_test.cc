// serving::RegistrationSource: where POST /models may take an archive from, and the kind of
// each refusal (what the management API answers). No test leaves this host: downloads go to
// a closed loopback port (issue 9 §4).

#include "serving/registration_source.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>

namespace tserve::serving {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tserve-regsource-test-XXXXXX").string();
    EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
    path_ = fs::canonical(tmpl).string();  // /tmp may be a link; the store compares real paths
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream(path, std::ios::binary) << contents;
}

// A loopback port nothing listens on (bound, then closed).
int ClosedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

class RegistrationSourceTest : public ::testing::Test {
 protected:
  void SetUp() override { WriteFile(store_ / "a.mar", "not really a zip"); }

  RegistrationSource Make(std::vector<std::string> allowed = {"file://.*", "http(s)?://.*"},
                          bool allow_loopback = false) {
    RegistrationSource::Options o;
    o.model_store = store_.path();
    o.allowed_urls = std::move(allowed);
    o.allow_loopback = allow_loopback;
    auto s = RegistrationSource::Create(std::move(o));
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return std::move(s).value();
  }

  StatusOr<std::string> Fetch(const RegistrationSource& source, const std::string& url) {
    return source.Fetch(url, cancel_);
  }

  TempDir store_;
  TempDir outside_;
  std::atomic<bool> cancel_{false};
};

TEST_F(RegistrationSourceTest, WithoutAModelStoreNothingRegisters) {
  auto source = RegistrationSource::Create({});
  ASSERT_TRUE(source.ok());
  auto p = source->Fetch("a.mar", cancel_);
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(p.status().IsInvalidArgument());
  EXPECT_EQ(p.status().message(), "no model_store is configured to register models into");
}

TEST_F(RegistrationSourceTest, ABadAllowedUrlPatternIsRefusedAtCreate) {
  RegistrationSource::Options o;
  o.model_store = store_.path();
  o.allowed_urls = {"(unclosed"};
  auto source = RegistrationSource::Create(std::move(o));
  ASSERT_FALSE(source.ok());
  EXPECT_TRUE(source.status().IsInvalidArgument()) << source.status().ToString();
}

TEST_F(RegistrationSourceTest, PathsAndFileUrlsInTheStoreResolve) {
  RegistrationSource source = Make();
  auto p = Fetch(source, "a.mar");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(*p, store_ / "a.mar");
  auto f = Fetch(source, "file://" + store_ / "a.mar");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(*f, store_ / "a.mar");
}

// Whatever the cause, a local source that does not resolve inside the store is TorchServe's
// 404, and the message names only what the client sent (never the store's location).
TEST_F(RegistrationSourceTest, LocalSourcesOutsideTheStoreAreModelNotFound) {
  WriteFile(outside_ / "x.mar", "x");
  RegistrationSource source = Make({".*"});
  for (const std::string& url :
       {std::string("missing.mar"), std::string("../x.mar"), outside_ / "x.mar",
        "file://" + outside_ / "x.mar", std::string("file://missing.mar"),
        std::string("ftp://127.0.0.1/a.mar")}) {
    auto p = Fetch(source, url);
    ASSERT_FALSE(p.ok()) << url;
    EXPECT_TRUE(p.status().IsModelNotFound()) << url << ": " << p.status().ToString();
    EXPECT_EQ(p.status().message(), "Model not found in model store: " + url);
  }
}

TEST_F(RegistrationSourceTest, AUrlAllowedUrlsRefusesIsModelNotFoundWithTorchServesMessage) {
  RegistrationSource source = Make({"https://example\\.com/.*"});
  for (const std::string& url : {"file://" + store_ / "a.mar", std::string("http://h/a.mar"),
                                 std::string("ftp://127.0.0.1/a.mar")}) {
    auto p = Fetch(source, url);
    ASSERT_FALSE(p.ok()) << url;
    EXPECT_TRUE(p.status().IsModelNotFound()) << url << ": " << p.status().ToString();
    EXPECT_EQ(p.status().message(), "Given URL " + url + " does not match any allowed URL(s)");
  }
  // allowed_urls does not apply to plain paths (as in TorchServe).
  EXPECT_TRUE(Fetch(source, "a.mar").ok());
}

TEST_F(RegistrationSourceTest, AFailedDownloadIsDownloadFailed) {
  RegistrationSource source = Make({"http://127\\.0\\.0\\.1:.*"}, /*allow_loopback=*/true);
  const std::string url = "http://127.0.0.1:" + std::to_string(ClosedPort()) + "/b.mar";
  auto p = Fetch(source, url);
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(p.status().IsDownloadFailed()) << p.status().ToString();
  EXPECT_EQ(p.status().message(), "Failed to download archive from: " + url);
  EXPECT_FALSE(fs::exists(store_ / "b.mar"));
}

TEST_F(RegistrationSourceTest, ADownloadToAnAddressTheRulesRefuseIsInvalidArgument) {
  RegistrationSource source = Make();  // loopback not allowed
  const std::string url = "http://127.0.0.1:" + std::to_string(ClosedPort()) + "/b.mar";
  auto p = Fetch(source, url);
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(p.status().IsInvalidArgument()) << p.status().ToString();
  EXPECT_EQ(p.status().message().rfind("Download from " + url + " refused: ", 0), 0u)
      << p.status().message();
}

// TorchServe's 500 for a download whose file is already in the store.
TEST_F(RegistrationSourceTest, ADownloadOfAFileAlreadyInTheStoreIsInternal) {
  RegistrationSource source = Make({".*"}, /*allow_loopback=*/true);
  const std::string url = "http://127.0.0.1:" + std::to_string(ClosedPort()) + "/a.mar";
  auto p = Fetch(source, url);
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(p.status().IsInternal()) << p.status().ToString();
  EXPECT_EQ(p.status().message(), "Model file already exists a.mar");
}

TEST_F(RegistrationSourceTest, NoDownloadStartsOnceCancelled) {
  RegistrationSource source = Make({".*"}, /*allow_loopback=*/true);
  cancel_ = true;
  const std::string url = "http://127.0.0.1:" + std::to_string(ClosedPort()) + "/b.mar";
  auto p = Fetch(source, url);
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(p.status().IsUnavailable()) << p.status().ToString();
}

}  // namespace
}  // namespace tserve::serving
