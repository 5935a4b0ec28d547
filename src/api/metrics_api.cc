#include "api/metrics_api.h"

#include "api/auth.h"
#include "api/errors.h"
#include "api/gzip.h"
#include "metrics/text_format.h"

namespace tserve::api {

namespace {
constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";
}  // namespace

MetricsApi::MetricsApi(const metrics::Registry* registry, Options options)
    : registry_(registry), options_(std::move(options)) {}

const std::set<std::string, std::less<>>& MetricsApi::LegacyFamilies() {
  static const std::set<std::string, std::less<>> kFamilies = {"ts_inference_requests_total",
                                                               "ts_inference_latency_microseconds",
                                                               "ts_queue_latency_microseconds"};
  return kFamilies;
}

void MetricsApi::RegisterRoutes(http::Router* router) {
  router->Add(http::Method::kGet, "/metrics",
              [this](http::Request& req, http::Responder r) { HandleMetrics(req, std::move(r)); });
}

void MetricsApi::HandleMetrics(const http::Request& request, http::Responder responder) const {
  if (!options_.token.empty() &&
      !BearerTokenMatches(request.Header("Authorization"), options_.token)) {
    http::Response r = ErrorForStatus(401, "Token authorization failed for the metrics API");
    r.headers.emplace_back("WWW-Authenticate", "Bearer");
    responder.Send(std::move(r));
    return;
  }
  http::Response response;
  response.content_type = kPrometheusContentType;
  if (options_.mode == MetricsMode::kLog) {
    responder.Send(std::move(response));  // TorchServe: 200, empty body, metrics in logs
    return;
  }
  std::vector<std::string> names;
  bool filtered = false;
  for (auto& [key, value] : http::ParseQuery(request.query)) {
    if (key == "name[]") {
      filtered = true;
      names.push_back(std::move(value));
    }
  }
  metrics::NameFilter filter(names);
  metrics::RenderOptions opts;
  if (filtered) opts.sample_filter = &filter;
  if (options_.mode == MetricsMode::kLegacy) opts.families = &LegacyFamilies();
  metrics::Snapshot snapshot = registry_->Collect(
      [&opts](const metrics::FamilyDesc& d) { return metrics::WantsFamily(opts, d); });
  // Reserve what the last full scrape needed: one allocation, no regrowth copies.
  response.body.reserve(last_size_.load(std::memory_order_relaxed) + 4096);
  metrics::RenderText(snapshot, opts, &response.body);
  if (!filtered) last_size_.store(response.body.size(), std::memory_order_relaxed);

  if (!response.body.empty() && http::AcceptsGzip(request.Header("Accept-Encoding"))) {
    auto zipped = Gzip(response.body, 1);
    if (zipped.ok()) {
      response.body = std::move(*zipped);
      response.headers.emplace_back("Content-Encoding", "gzip");
    }
  }
  responder.Send(std::move(response));
}

StatusOr<std::unique_ptr<ResponseCounters>> ResponseCounters::Create(metrics::Registry* registry,
                                                                     const std::string& hostname) {
  auto counters = std::unique_ptr<ResponseCounters>(new ResponseCounters());
  const metrics::Labels labels = {{"Level", "Host"}, {"Hostname", hostname}};
  auto c2 = registry->CounterFor("Requests2XX", labels);
  if (!c2.ok()) return c2.status();
  auto c4 = registry->CounterFor("Requests4XX", labels);
  if (!c4.ok()) return c4.status();
  auto c5 = registry->CounterFor("Requests5XX", labels);
  if (!c5.ok()) return c5.status();
  counters->c2xx_ = *c2;
  counters->c4xx_ = *c4;
  counters->c5xx_ = *c5;
  return counters;
}

void ResponseCounters::OnResponse(int status) {
  if (status >= 200 && status < 300) {
    c2xx_->Inc();
  } else if (status >= 400 && status < 500) {
    c4xx_->Inc();
  } else if (status >= 500) {
    c5xx_->Inc();
  }
}

}  // namespace tserve::api
