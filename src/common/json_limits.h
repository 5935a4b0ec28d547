#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string_view>

#include "common/status.h"

namespace tserve {

// The deepest nesting of arrays and objects accepted in JSON that comes from outside the
// process (request bodies, tensors); the top-level value is level 1. Anything that walks a
// document recursively (dump(), handlers, other libraries) uses stack in proportion to its
// depth, so the limit is enforced while parsing: nothing deeper is ever built.
inline constexpr int kMaxJsonDepth = 64;

// Parses `text` as one JSON document, refusing arrays/objects nested deeper than
// `max_depth` as soon as the parser reaches them (the parser itself is iterative, so the
// parse cannot exhaust the stack either). Errors are InvalidArgument with one line:
//   "JSON nested deeper than 64 levels"
//   "malformed JSON: <the parser's reason>"
// Thread safety: reentrant.
StatusOr<nlohmann::json> ParseJsonLimited(std::string_view text, int max_depth = kMaxJsonDepth);
// The same, keeping the order of object members.
StatusOr<nlohmann::ordered_json> ParseOrderedJsonLimited(std::string_view text,
                                                         int max_depth = kMaxJsonDepth);

}  // namespace tserve
