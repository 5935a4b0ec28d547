// allowed_urls and registration URLs: the input's first lines, up to an empty line, are
// allowed_urls patterns (at most 4), the rest is the URL a POST /models names. The policy is
// compiled and asked; URLs that would not be downloaded (plain paths, file://, other
// schemes) also go through FetchModelArchive against a private model store, whose answer
// must lie inside the store. Nothing here touches the network.
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_util.h"
#include "serving/model_fetcher.h"

namespace sv = tserve::serving;

namespace {

const std::string& Store() {
  static const std::string store = [] {
    const char* tmp = getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/tserve-fuzz-urls-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) tserve::fuzz::Fail("mkdtemp");
    const std::filesystem::path dir(pattern);
    std::filesystem::create_directories(dir / "store" / "sub");
    std::filesystem::create_directories(dir / "outside");
    std::ofstream(dir / "store" / "a.mar") << "x";
    std::ofstream(dir / "store" / "sub" / "b.mar") << "x";
    std::ofstream(dir / "outside" / "secret.mar") << "x";
    std::error_code ignored;
    std::filesystem::create_symlink(dir / "outside" / "secret.mar", dir / "store" / "link.mar",
                                    ignored);
    return std::filesystem::canonical(dir / "store").string();
  }();
  return store;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> patterns;
  while (!input.empty() && patterns.size() < 4) {
    std::string_view line = tserve::fuzz::SplitLine(&input);
    if (line.empty()) break;
    patterns.emplace_back(line);
  }
  const std::string url(input);
  auto policy = sv::UrlPolicy::Create(patterns);
  if (!policy.ok()) {
    TSERVE_FUZZ_CHECK(!policy.status().message().empty());
    return 0;
  }
  const bool allowed = policy.value().Allows(url);
  if (patterns.empty()) TSERVE_FUZZ_CHECK(!allowed);
  if (sv::IsDownloadUrl(url)) return 0;  // would go to the network

  sv::FetchRequest request;
  request.url = url;
  request.model_store = Store();
  request.policy = &policy.value();
  auto path = sv::FetchModelArchive(request);
  if (path.ok()) {
    std::error_code ec;
    auto resolved = std::filesystem::canonical(path.value(), ec);
    TSERVE_FUZZ_CHECK(!ec);
    TSERVE_FUZZ_CHECK(resolved.string().rfind(Store() + "/", 0) == 0);
  }
  return 0;
}
