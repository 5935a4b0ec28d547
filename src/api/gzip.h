#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace tserve::api {

// gzip (RFC 1952) of `in` at the given zlib level (1: fast; 3 ms for 0.8 MB here, level 9
// took 26 ms for little gain on metrics text).
StatusOr<std::string> Gzip(std::string_view in, int level = 1);
// Inverse, for tests.
StatusOr<std::string> Gunzip(std::string_view in);

}  // namespace tserve::api
