#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "http/request.h"

namespace tserve::http {

// Maps (method, path pattern) to handler functions. Patterns are literal segments and
// `{name}` segments that match one non-empty segment, e.g. "/predictions/{model}".
// An unmatched path answers 404, a matched path with another method 405, through the
// ErrorFactory. Built at startup, then read-only: Handle is safe from many threads.
class Router final : public RequestHandler {
 public:
  using Fn = std::function<void(Request&, Responder)>;

  explicit Router(ErrorFactory errors) : errors_(errors) {}
  void Add(Method method, std::string_view pattern, Fn fn);
  void Handle(Request& request, Responder responder) override;

 private:
  struct Route {
    Method method;
    std::vector<std::string> segments;  // "{}" for a parameter
    Fn fn;
  };
  static bool Match(const Route& route, std::string_view path,
                    std::vector<std::string_view>* params);

  ErrorFactory errors_;
  std::vector<Route> routes_;
};

}  // namespace tserve::http
