#pragma once

// Small helpers shared by the fuzz targets (header only: each target is one .cc).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace tserve::fuzz {

// Splits `data` at the first '\n': the head (without it) and the rest. No '\n': all head.
inline std::string_view SplitLine(std::string_view* data) {
  size_t nl = data->find('\n');
  std::string_view head = data->substr(0, nl);
  *data = nl == std::string_view::npos ? std::string_view() : data->substr(nl + 1);
  return head;
}

// A property the target checks failed: report it and abort, which libFuzzer records as a
// crash with the input that caused it.
[[noreturn]] inline void Fail(const char* what) {
  std::fprintf(stderr, "fuzz invariant failed: %s\n", what);
  std::abort();
}

#define TSERVE_FUZZ_CHECK(cond)               \
  do {                                        \
    if (!(cond)) ::tserve::fuzz::Fail(#cond); \
  } while (0)

// Whether `inner` lies within `outer` (a view that must point into the input).
inline bool Within(std::string_view inner, std::string_view outer) {
  if (inner.empty()) return true;
  return inner.data() >= outer.data() && inner.data() + inner.size() <= outer.data() + outer.size();
}

}  // namespace tserve::fuzz
