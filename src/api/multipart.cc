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

// What follows a "--boundary" that ends before `at` (RFC 2046 section 5.1.1): transport
// padding (spaces and tabs) then CRLF starts a part, whose headers begin at *next; "--",
// padding, then CRLF or the end of the body closes the body. Anything else: the boundary's
// text was part of the data. The padding scanned stops before the next "\r\n--boundary",
// so the scans of successive candidates never overlap.
enum class Delimiter { kNone, kPart, kClose };
Delimiter DelimiterAt(std::string_view body, size_t at, size_t* next) {
  const bool close = body.substr(at, 2) == "--";
  if (close) at += 2;
  while (at < body.size() && (body[at] == ' ' || body[at] == '\t')) ++at;
  if (close) {
    return at == body.size() || body.substr(at, 2) == "\r\n" ? Delimiter::kClose : Delimiter::kNone;
  }
  if (body.substr(at, 2) != "\r\n") return Delimiter::kNone;
  *next = at + 2;
  return Delimiter::kPart;
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

  // The first delimiter at or after `from` (its "\r\n"), npos if none; *kind and *next as
  // DelimiterAt. "\r\n--boundary" followed by anything else is data: searched past.
  auto find_delimiter = [&](size_t from, Delimiter* kind, size_t* next) {
    while (true) {
      const size_t at = find(search_delimiter, from);
      if (at == std::string_view::npos) return at;
      *kind = DelimiterAt(body, at + delimiter.size(), next);
      if (*kind != Delimiter::kNone) return at;
      from = at + 1;
    }
  };

  std::vector<FormPart> parts;
  // The first boundary line: at the start of the body, or after the preamble's CRLF.
  const std::string_view first = std::string_view(delimiter).substr(2);
  Delimiter kind = Delimiter::kNone;
  size_t pos = 0;
  if (body.substr(0, first.size()) == first) kind = DelimiterAt(body, first.size(), &pos);
  if (kind == Delimiter::kNone && find_delimiter(0, &kind, &pos) == std::string_view::npos) {
    return Status::InvalidArgument("multipart body without its boundary line");
  }
  while (true) {
    if (kind == Delimiter::kClose) return parts;
    if (parts.size() == kMaxMultipartParts) {
      return Status::InvalidArgument("multipart body with more than " +
                                     std::to_string(kMaxMultipartParts) + " parts");
    }
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
    const size_t data_end = find_delimiter(data_start, &kind, &pos);
    if (data_end == std::string_view::npos) {
      return Status::InvalidArgument("multipart part without a closing boundary");
    }
    part.data = body.substr(data_start, data_end - data_start);
    parts.push_back(part);
  }
}

}  // namespace tserve::api
