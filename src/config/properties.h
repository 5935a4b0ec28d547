#pragma once

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace tserve {

// One key/value of a properties file, with the 1-based line where its key started.
struct Property {
  std::string key;
  std::string value;
  int line = 0;
};

// Parses text in java.util.Properties syntax: `key=value`, `key: value`, `key value`,
// '#'/'!' comment lines, '\' line continuation (leading whitespace of the next line is
// dropped), escapes \t \n \r \f \\ \uXXXX and escaped separators (`a\=b=c`), "\n",
// "\r\n" or "\r" line ends. Whitespace is Java's: blanks before the key and after the
// separator are dropped, a value keeps its trailing blanks (callers trim if they want).
// Differences from Java, on purpose: bytes >= 0x80 pass through (the file is UTF-8, Java
// reads ISO-8859-1), a leading UTF-8 BOM is skipped, \uXXXX escapes are written as UTF-8
// (a surrogate pair as one character, a lone surrogate as U+FFFD). Later keys override earlier ones
// in the returned order (duplicates are kept; the caller takes the last). Errors (a malformed
// \uXXXX) name the line.
StatusOr<std::vector<Property>> ParseProperties(std::string_view text);

// Expands every $$NAME$$ in value from env (TorchServe's syntax; NAME has no '$'). The
// substituted text is inserted literally, never re-expanded. An unset variable is an
// InvalidArgument naming it: "environment variable NAME is not set".
StatusOr<std::string> ExpandEnvReferences(std::string_view value,
                                          const std::map<std::string, std::string>& env);

}  // namespace tserve
