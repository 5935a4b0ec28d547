// JSON request bodies (management parameters, tensor inputs) through the server's
// depth-limited parser (common/json_limits.h, issue 7 #1). Checks: what it accepts is no
// deeper than the limit and is what nlohmann's own parser reads; what it refuses as malformed
// nlohmann refuses too; an accepted document survives dump() and the API's GsonHtmlSafe
// escaping and parses back to the same text.
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/json_limits.h"
#include "common/strings.h"
#include "fuzz_util.h"

namespace {

int Depth(const nlohmann::json& j) {
  if (!j.is_structured()) return 0;
  int deepest = 0;
  for (const auto& child : j) deepest = std::max(deepest, Depth(child));
  return deepest + 1;
}

constexpr auto kReplace = nlohmann::json::error_handler_t::replace;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto limited = tserve::ParseJsonLimited(text);
  auto plain = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!limited.ok()) {
    const std::string& message = limited.status().message();
    const bool too_deep = message.rfind("JSON nested deeper than", 0) == 0;
    TSERVE_FUZZ_CHECK(too_deep || message.rfind("malformed JSON", 0) == 0);
    if (!too_deep) TSERVE_FUZZ_CHECK(plain.is_discarded());
    (void)tserve::ParseOrderedJsonLimited(text);
    return 0;
  }
  const nlohmann::json& j = limited.value();
  TSERVE_FUZZ_CHECK(Depth(j) <= tserve::kMaxJsonDepth);
  TSERVE_FUZZ_CHECK(!plain.is_discarded() && plain == j);
  auto ordered = tserve::ParseOrderedJsonLimited(text);
  TSERVE_FUZZ_CHECK(ordered.ok());

  const std::string dumped = j.dump(-1, ' ', false, kReplace);
  const std::string safe = tserve::GsonHtmlSafe(dumped);
  auto again = nlohmann::json::parse(safe, nullptr, /*allow_exceptions=*/false);
  TSERVE_FUZZ_CHECK(!again.is_discarded());
  TSERVE_FUZZ_CHECK(again.dump(-1, ' ', false, kReplace) == dumped);
  (void)ordered.value().dump(2, ' ', true, kReplace);
  return 0;
}
