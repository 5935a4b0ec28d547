#include "http/request.h"

#include <optional>

#include "common/strings.h"

namespace tserve::http {

Method ParseMethod(std::string_view t) {
  if (t == "GET") return Method::kGet;
  if (t == "HEAD") return Method::kHead;
  if (t == "POST") return Method::kPost;
  if (t == "PUT") return Method::kPut;
  if (t == "DELETE") return Method::kDelete;
  if (t == "OPTIONS") return Method::kOptions;
  if (t == "PATCH") return Method::kPatch;
  return Method::kOther;
}

const char* MethodName(Method m) {
  switch (m) {
    case Method::kGet:
      return "GET";
    case Method::kHead:
      return "HEAD";
    case Method::kPost:
      return "POST";
    case Method::kPut:
      return "PUT";
    case Method::kDelete:
      return "DELETE";
    case Method::kOptions:
      return "OPTIONS";
    case Method::kPatch:
      return "PATCH";
    case Method::kOther:
      break;
  }
  return "OTHER";
}

Responder::~Responder() {
  if (target_ != nullptr) target_->Deliver(target_->Error(500, "no response"));
}

Responder& Responder::operator=(Responder&& other) noexcept {
  if (this != &other) {
    Responder old(std::move(*this));  // its destructor answers 500 if still owed
    target_ = std::move(other.target_);
  }
  return *this;
}

void Responder::Send(Response response) {
  if (target_ == nullptr) return;
  std::shared_ptr<ResponseTarget> t = std::move(target_);
  target_ = nullptr;
  t->Deliver(std::move(response));
}

ResponseStream Responder::Stream(Response head) {
  if (target_ == nullptr) return ResponseStream();
  std::shared_ptr<ResponseTarget> t = std::move(target_);
  target_ = nullptr;
  t->StartStream(std::move(head));
  return ResponseStream(std::move(t));
}

void ResponseTarget::StartStream(Response head) { gathered_ = std::move(head); }
void ResponseTarget::WriteChunk(std::string chunk) { gathered_.body += chunk; }
void ResponseTarget::EndStream() { Deliver(std::move(gathered_)); }

ResponseStream& ResponseStream::operator=(ResponseStream&& other) noexcept {
  if (this != &other) {
    ResponseStream old(std::move(*this));  // its destructor ends it if still open
    target_ = std::move(other.target_);
  }
  return *this;
}

ResponseStream::~ResponseStream() { End(); }

bool ResponseStream::Write(std::string chunk) {
  if (target_ == nullptr) return false;
  if (!chunk.empty()) target_->WriteChunk(std::move(chunk));
  return !target_->client_gone();
}

void ResponseStream::End() {
  if (target_ == nullptr) return;
  std::shared_ptr<ResponseTarget> t = std::move(target_);
  target_ = nullptr;
  t->EndStream();
}

bool IsAcceptableRequestId(std::string_view id) {
  if (id.empty() || id.size() > kMaxRequestIdLength) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::vector<std::pair<std::string, std::string>> ParseQuery(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t start = 0;
  while (start <= query.size()) {
    size_t end = query.find_first_of("&;", start);
    if (end == std::string_view::npos) end = query.size();
    std::string_view part = query.substr(start, end - start);
    // Netty skips '=' at the start of a parameter: "=v" is the name "v", "=" is nothing.
    while (!part.empty() && part.front() == '=') part.remove_prefix(1);
    if (!part.empty()) {
      size_t eq = part.find('=');
      if (eq == std::string_view::npos) {
        out.emplace_back(PercentDecode(part, true), std::string());
      } else {
        out.emplace_back(PercentDecode(part.substr(0, eq), true),
                         PercentDecode(part.substr(eq + 1), true));
      }
    }
    start = end + 1;
  }
  return out;
}

bool AcceptsGzip(std::string_view accept_encoding) {
  // RFC 9110 §12.5.3: an explicit "gzip" entry decides; otherwise "*" covers it. A q-value
  // of 0 refuses.
  std::optional<bool> gzip;
  std::optional<bool> wildcard;
  for (std::string_view item : SplitString(accept_encoding, ',')) {
    std::string_view coding = item;
    std::string_view params;
    size_t semi = item.find(';');
    if (semi != std::string_view::npos) {
      coding = item.substr(0, semi);
      params = item.substr(semi + 1);
    }
    coding = TrimWhitespace(coding);
    std::optional<bool>* slot = nullptr;
    if (EqualsIgnoreCase(coding, "gzip")) {
      slot = &gzip;
    } else if (coding == "*") {
      slot = &wildcard;
    } else {
      continue;
    }
    bool acceptable = true;
    for (std::string_view p : SplitString(params, ';')) {
      p = TrimWhitespace(p);
      if (p.size() > 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
        auto q = ParseDouble(p.substr(2));
        if (q && *q <= 0.0) acceptable = false;
      }
    }
    if (!slot->has_value()) *slot = acceptable;
  }
  if (gzip.has_value()) return *gzip;
  return wildcard.value_or(false);
}

}  // namespace tserve::http
