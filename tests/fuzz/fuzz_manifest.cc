// MAR-INF/MANIFEST.json: parse; a manifest that parses must survive ManifestToJson and parse
// back to the same value (the archiver writes what the server reads).
#include <string_view>

#include "fuzz_util.h"
#include "serving/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto m = tserve::serving::ParseManifest(text, "MAR-INF/MANIFEST.json");
  if (!m.ok()) {
    TSERVE_FUZZ_CHECK(!m.status().message().empty());
    return 0;
  }
  const std::string json = tserve::serving::ManifestToJson(m.value());
  auto again = tserve::serving::ParseManifest(json, "round trip");
  TSERVE_FUZZ_CHECK(again.ok());
  TSERVE_FUZZ_CHECK(again.value() == m.value());
  return 0;
}
