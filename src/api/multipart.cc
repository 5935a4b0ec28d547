#include "api/multipart.h"

#include <algorithm>
#include <functional>
#include <string>

#include "common/strings.h"

namespace tserve::api {

namespace {

// The value of `key` in a header's parameters (`form-data; name="data"; filename="a.jpg"`).
std::string_view Param(std::string_view header, std::string_view key) {
  for (std::string_view item : SplitString(header, ';')) {
    item = TrimWhitespace(item);
    size_t eq = item.find('=');
    if (eq == std::string_view::npos) continue;
    if (!EqualsIgnoreCase(TrimWhitespace(item.substr(0, eq)), key)) continue;
    std::string_view v = TrimWhitespace(item.substr(eq + 1));
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    return v;
  }
  return {};
}

}  // namespace

std::string_view MultipartBoundary(std::string_view content_type) {
  size_t semi = content_type.find(';');
  std::string_view type = TrimWhitespace(content_type.substr(0, semi));
  if (!EqualsIgnoreCase(type, "multipart/form-data") || semi == std::string_view::npos) return {};
  return Param(content_type.substr(semi + 1), "boundary");
}

StatusOr<std::vector<FormPart>> ParseMultipart(std::string_view body, std::string_view boundary) {
  if (boundary.empty()) return Status::InvalidArgument("multipart body without a boundary");
  if (boundary.size() > kMaxMultipartBoundary) {
    return Status::InvalidArgument("multipart boundary of " + std::to_string(boundary.size()) +
                                   " characters: at most " + std::to_string(kMaxMultipartBoundary) +
                                   " are allowed (RFC 2046)");
  }
  // "\r\n--boundary" ends each part's data. Searches are linear: the pattern is short.
  const std::string delimiter = "\r\n--" + std::string(boundary);
  const std::boyer_moore_horspool_searcher search_delimiter(delimiter.begin(), delimiter.end());
  static constexpr std::string_view kBlankLine = "\r\n\r\n";
  const std::boyer_moore_horspool_searcher search_blank_line(kBlankLine.begin(), kBlankLine.end());
  // The first occurrence of the searcher's pattern at or after `from`, or npos.
  auto find = [&body](const auto& searcher, size_t from) {
    const auto it =
        std::search(body.begin() + static_cast<std::ptrdiff_t>(from), body.end(), searcher);
    return it == body.end() ? std::string_view::npos : static_cast<size_t>(it - body.begin());
  };

  std::vector<FormPart> parts;
  // The first "--boundary", wherever the preamble ends.
  const std::string_view first = std::string_view(delimiter).substr(2);
  size_t pos = body.find(first);
  if (pos == std::string_view::npos) {
    return Status::InvalidArgument("multipart body without its boundary line");
  }
  pos += first.size();
  while (true) {
    if (body.substr(pos, 2) == "--") return parts;  // closing delimiter
    if (body.substr(pos, 2) != "\r\n") {
      return Status::InvalidArgument("malformed multipart boundary line");
    }
    if (parts.size() == kMaxMultipartParts) {
      return Status::InvalidArgument("multipart body with more than " +
                                     std::to_string(kMaxMultipartParts) + " parts");
    }
    pos += 2;
    const size_t head_end = find(search_blank_line, pos);
    if (head_end == std::string_view::npos) {
      return Status::InvalidArgument("multipart part without the blank line after its headers");
    }
    FormPart part;
    for (std::string_view line : SplitString(body.substr(pos, head_end - pos), '\n')) {
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      size_t colon = line.find(':');
      if (colon == std::string_view::npos) continue;
      std::string_view key = TrimWhitespace(line.substr(0, colon));
      std::string_view value = TrimWhitespace(line.substr(colon + 1));
      if (EqualsIgnoreCase(key, "Content-Disposition")) {
        part.name = Param(value, "name");
        part.filename = Param(value, "filename");
      } else if (EqualsIgnoreCase(key, "Content-Type")) {
        part.content_type = value;
      }
    }
    const size_t data_start = head_end + kBlankLine.size();
    const size_t next = find(search_delimiter, data_start);
    if (next == std::string_view::npos) {
      return Status::InvalidArgument("multipart part without a closing boundary");
    }
    part.data = body.substr(data_start, next - data_start);
    parts.push_back(part);
    pos = next + delimiter.size();
  }
}

}  // namespace tserve::api
