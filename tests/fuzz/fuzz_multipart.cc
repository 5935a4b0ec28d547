// multipart/form-data bodies (the predictions API's uploads): the first line of the input
// is the Content-Type header value, the rest the body. Checks that every part's views point
// into the body.
#include <string_view>

#include "api/multipart.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string_view content_type = tserve::fuzz::SplitLine(&input);
  const std::string_view body = input;
  std::string_view boundary = tserve::api::MultipartBoundary(content_type);
  TSERVE_FUZZ_CHECK(tserve::fuzz::Within(boundary, content_type));
  if (boundary.empty()) return 0;
  auto parts = tserve::api::ParseMultipart(body, boundary);
  if (!parts.ok()) {
    TSERVE_FUZZ_CHECK(!parts.status().message().empty());
    return 0;
  }
  for (const auto& part : parts.value()) {
    TSERVE_FUZZ_CHECK(tserve::fuzz::Within(part.name, body));
    TSERVE_FUZZ_CHECK(tserve::fuzz::Within(part.filename, body));
    TSERVE_FUZZ_CHECK(tserve::fuzz::Within(part.content_type, body));
    TSERVE_FUZZ_CHECK(tserve::fuzz::Within(part.data, body));
  }
  return 0;
}
