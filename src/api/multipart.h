#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tserve::api {

// One part of a multipart/form-data body. Views point into the body.
struct FormPart {
  std::string_view name;          // the Content-Disposition name
  std::string_view filename;      // "" unless a file upload
  std::string_view content_type;  // "" when the part names none
  std::string_view data;
};

// The boundary parameter of a multipart/form-data Content-Type, "" if it is not one.
std::string_view MultipartBoundary(std::string_view content_type);

// RFC 2046 section 5.1.1: a boundary is 1 to 70 characters.
inline constexpr size_t kMaxMultipartBoundary = 70;
// The most parts one body may hold (an inference request uses one: data or body).
inline constexpr size_t kMaxMultipartParts = 64;

// Splits a multipart/form-data body (RFC 7578). Linear in the body's size: the boundary is
// at most kMaxMultipartBoundary characters and each byte is searched once. Errors
// (InvalidArgument, answered 400): a boundary empty or longer than kMaxMultipartBoundary,
// more than kMaxMultipartParts parts, or what is malformed.
StatusOr<std::vector<FormPart>> ParseMultipart(std::string_view body, std::string_view boundary);

}  // namespace tserve::api
