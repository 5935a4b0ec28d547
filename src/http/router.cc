#include "http/router.h"

namespace tserve::http {

void Router::Add(Method method, std::string_view pattern, Fn fn) {
  Route r{method, {}, std::move(fn)};
  size_t start = 1;  // patterns start with '/'
  while (start <= pattern.size()) {
    size_t end = pattern.find('/', start);
    if (end == std::string_view::npos) end = pattern.size();
    std::string_view seg = pattern.substr(start, end - start);
    if (!seg.empty()) {
      r.segments.emplace_back(seg.front() == '{' ? std::string("{}") : std::string(seg));
    }
    start = end + 1;
  }
  routes_.push_back(std::move(r));
}

bool Router::Match(const Route& route, std::string_view path,
                   std::vector<std::string_view>* params) {
  params->clear();
  size_t i = 0;
  size_t pos = 0;
  // Leading and trailing slashes are not significant ("/models/" is "/models").
  while (pos < path.size() && path[pos] == '/') ++pos;
  while (pos < path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string_view::npos) end = path.size();
    std::string_view seg = path.substr(pos, end - pos);
    pos = end;
    while (pos < path.size() && path[pos] == '/') ++pos;
    if (seg.empty()) continue;
    if (i >= route.segments.size()) return false;
    const std::string& want = route.segments[i++];
    if (want == "{}") {
      params->push_back(seg);
    } else if (want != seg) {
      return false;
    }
  }
  return i == route.segments.size();
}

void Router::Handle(Request& request, Responder responder) {
  bool path_matched = false;
  std::vector<std::string_view> params;
  for (const Route& r : routes_) {
    if (!Match(r, request.path, &params)) continue;
    bool method_ok =
        r.method == request.method || (r.method == Method::kGet && request.method == Method::kHead);
    if (!method_ok) {
      path_matched = true;
      continue;
    }
    request.path_params = std::move(params);
    r.fn(request, std::move(responder));
    return;
  }
  if (path_matched) {
    responder.Send(errors_(405, "Requested method is not allowed, please refer to API document."));
  } else {
    responder.Send(errors_(404, "Requested resource is not found, please refer to API document."));
  }
}

}  // namespace tserve::http
