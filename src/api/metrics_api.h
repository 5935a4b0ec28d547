#pragma once

#include <atomic>
#include <set>
#include <string>

#include "common/status.h"
#include "config/server_config.h"
#include "http/request.h"
#include "http/router.h"
#include "http/server.h"
#include "metrics/registry.h"

namespace tserve::api {

// GET|HEAD /metrics on the metrics listener: TorchServe's Prometheus endpoint with its
// name[] filter, gzip when asked, prometheus/log/legacy modes and an optional bearer
// token. Thread safety: Handle may run on many threads at once (the registry locks).
class MetricsApi {
 public:
  struct Options {
    MetricsMode mode = MetricsMode::kPrometheus;
    // Non-empty: require "Authorization: Bearer <token>", checked by BearerTokenMatches
    // (api/auth.h) like every other listener's key.
    std::string token;
  };
  MetricsApi(const metrics::Registry* registry, Options options);

  void RegisterRoutes(http::Router* router);
  void HandleMetrics(const http::Request& request, http::Responder responder) const;

  // The families exposed in legacy mode.
  static const std::set<std::string, std::less<>>& LegacyFamilies();

 private:
  const metrics::Registry* registry_;
  Options options_;
  mutable std::atomic<size_t> last_size_{0};  // of the last unfiltered body
};

// Counts every response of every listener in Requests2XX / 4XX / 5XX. 1xx and 3xx are in
// neither (TorchServe counts them as 5XX; docs/metrics.md explains). Handles are resolved
// once; OnResponse is one relaxed atomic add.
class ResponseCounters final : public http::ResponseObserver {
 public:
  static StatusOr<std::unique_ptr<ResponseCounters>> Create(metrics::Registry* registry,
                                                            const std::string& hostname);
  void OnResponse(int status) override;

 private:
  metrics::Counter* c2xx_ = nullptr;
  metrics::Counter* c4xx_ = nullptr;
  metrics::Counter* c5xx_ = nullptr;
};

}  // namespace tserve::api
