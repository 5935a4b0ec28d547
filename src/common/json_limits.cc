#include "common/json_limits.h"

#include <nlohmann/json.hpp>
#include <string>

namespace tserve {

namespace {

// Thrown from the parser callback to stop the parse at the first container too deep.
struct TooDeep {};

template <typename Json>
StatusOr<Json> Parse(std::string_view text, int max_depth) {
  // `depth` is the number of containers open around the value starting here, so the new
  // container's level is depth + 1.
  typename Json::parser_callback_t limit =
      [max_depth](int depth, nlohmann::json::parse_event_t event, Json& /*parsed*/) {
        if ((event == nlohmann::json::parse_event_t::object_start ||
             event == nlohmann::json::parse_event_t::array_start) &&
            depth >= max_depth) {
          throw TooDeep{};
        }
        return true;
      };
  try {
    return Json::parse(text.begin(), text.end(), limit, /*allow_exceptions=*/true);
  } catch (const TooDeep&) {
    return Status::InvalidArgument("JSON nested deeper than " + std::to_string(max_depth) +
                                   " levels");
  } catch (const nlohmann::json::exception& e) {
    // "[json.exception.parse_error.101] parse error at line 1, ...": drop the id.
    std::string what = e.what();
    if (size_t end = what.find("] "); what.rfind("[json.exception.", 0) == 0 && end != what.npos) {
      what.erase(0, end + 2);
    }
    return Status::InvalidArgument("malformed JSON: " + what);
  }
}

}  // namespace

StatusOr<nlohmann::json> ParseJsonLimited(std::string_view text, int max_depth) {
  return Parse<nlohmann::json>(text, max_depth);
}

StatusOr<nlohmann::ordered_json> ParseOrderedJsonLimited(std::string_view text, int max_depth) {
  return Parse<nlohmann::ordered_json>(text, max_depth);
}

}  // namespace tserve
