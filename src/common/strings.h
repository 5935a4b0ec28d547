#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tserve {

// Small string helpers shared by every module. All are pure functions.

std::string_view TrimWhitespace(std::string_view s);
std::vector<std::string_view> SplitString(std::string_view s, char sep);
bool EqualsIgnoreCase(std::string_view a, std::string_view b);
std::string ToLower(std::string_view s);
// True when s ends with suffix (byte for byte).
bool EndsWith(std::string_view s, std::string_view suffix);
// s in double quotes, as messages show a name or value: Quoted("my model") == "\"my model\"".
// The result stays on one line and its end is unambiguous: '"' and '\\' are escaped with a
// backslash, \n \r \t as such, other control bytes (and DEL) as \xHH. Other bytes (UTF-8
// included) are kept.
std::string Quoted(std::string_view s);

// Strict parsers: the whole text must be the number (surrounding whitespace allowed).
std::optional<int64_t> ParseInt64(std::string_view s);
std::optional<double> ParseDouble(std::string_view s);
// "true"/"false" in any case.
std::optional<bool> ParseBool(std::string_view s);

// Decodes %XX escapes and, when plus_as_space, '+' as ' ' (query-string style).
// Malformed escapes are kept literally, as Netty's decoder does for lenient input.
std::string PercentDecode(std::string_view s, bool plus_as_space);

// Rewrites JSON text as Gson's HTML-safe writer (TorchServe's JSON) escapes it: < > & = '
// as \u003c \u003e \u0026 \u003d \u0027 (they only occur inside strings in JSON text),
// and U+2028/U+2029 as \u2028/\u2029.
std::string GsonHtmlSafe(std::string_view json_text);

// This machine's host name as gethostname() reports it ("localhost" on failure).
std::string LocalHostname();

}  // namespace tserve
