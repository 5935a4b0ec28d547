#pragma once

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

// Splits a multipart/form-data body (RFC 7578). Errors say what is malformed.
StatusOr<std::vector<FormPart>> ParseMultipart(std::string_view body, std::string_view boundary);

}  // namespace tserve::api
