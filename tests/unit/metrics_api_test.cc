#include "api/metrics_api.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "api/auth.h"
#include "api/errors.h"
#include "api/gzip.h"
#include "common/strings.h"
#include "metrics/metrics_yaml.h"

namespace tserve::api {
namespace {

constexpr const char* kPrometheusType = "text/plain; version=0.0.4; charset=utf-8";

class CaptureTarget final : public http::ResponseTarget {
 public:
  void Deliver(http::Response response) override {
    ++deliveries;
    last = std::move(response);
  }
  int deliveries = 0;
  http::Response last;
};

using Headers = std::map<std::string, std::string>;

std::string_view LookupHeader(const void* native, std::string_view name) {
  for (const auto& [key, value] : *static_cast<const Headers*>(native)) {
    if (EqualsIgnoreCase(key, name)) return value;
  }
  return {};
}

// The value of a response header field, "" when absent (case-insensitive name).
std::string HeaderOf(const http::Response& r, std::string_view name) {
  for (const auto& [key, value] : r.headers) {
    if (EqualsIgnoreCase(key, name)) return value;
  }
  return "";
}

bool HasHeader(const http::Response& r, std::string_view name) {
  for (const auto& kv : r.headers) {
    if (EqualsIgnoreCase(kv.first, name)) return true;
  }
  return false;
}

size_t CountOf(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = haystack.find(needle); pos != std::string::npos;
       pos = haystack.find(needle, pos + needle.size())) {
    ++n;
  }
  return n;
}

constexpr const char* kRequests2xx =
    "# HELP Requests2XX Torchserve prometheus counter metric with unit: Count\n"
    "# TYPE Requests2XX counter\n"
    "Requests2XX{Level=\"Host\",Hostname=\"host1\",} 8.0\n";
constexpr const char* kRequests4xx =
    "# HELP Requests4XX Torchserve prometheus counter metric with unit: Count\n"
    "# TYPE Requests4XX counter\n"
    "Requests4XX{Level=\"Host\",Hostname=\"host1\",} 2.0\n";
constexpr const char* kHistHeader =
    "# HELP test_request_duration_seconds End-to-end request duration.\n"
    "# TYPE test_request_duration_seconds histogram\n";
constexpr const char* kHistBuckets =
    "test_request_duration_seconds_bucket{model_name=\"m\",le=\"1.0\",} 1.0\n"
    "test_request_duration_seconds_bucket{model_name=\"m\",le=\"5.0\",} 1.0\n"
    "test_request_duration_seconds_bucket{model_name=\"m\",le=\"+Inf\",} 2.0\n";
constexpr const char* kHistCount = "test_request_duration_seconds_count{model_name=\"m\",} 2.0\n";
constexpr const char* kHistSum = "test_request_duration_seconds_sum{model_name=\"m\",} 10.5\n";

// A registry with the default metrics.yaml families plus one histogram, and some values:
// Requests2XX = 8, Requests4XX = 2, Requests5XX has no series, ts_inference_requests_total
// has one series, the histogram has observed 0.5 and 10.
class MetricsApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto families = metrics::ParseMetricsYaml(metrics::DefaultMetricsYaml(), "metrics.yaml");
    ASSERT_TRUE(families.ok()) << families.status().message();
    Status added = metrics::AddFamilies(std::move(*families), &registry_);
    ASSERT_TRUE(added.ok()) << added.message();

    metrics::FamilyDesc hist;
    hist.name = "test_request_duration_seconds";
    hist.help = "End-to-end request duration.";
    hist.unit = "Seconds";
    hist.type = metrics::MetricType::kHistogram;
    hist.label_names = {"model_name"};
    hist.buckets = {1.0, 5.0};
    ASSERT_TRUE(registry_.Add(std::move(hist)).ok());

    const metrics::Labels host = {{"Level", "Host"}, {"Hostname", "host1"}};
    auto c2 = registry_.CounterFor("Requests2XX", host);
    ASSERT_TRUE(c2.ok());
    (*c2)->Add(8);
    auto c4 = registry_.CounterFor("Requests4XX", host);
    ASSERT_TRUE(c4.ok());
    (*c4)->Add(2);
    auto inf = registry_.CounterFor(
        "ts_inference_requests_total",
        {{"model_name", "m"}, {"model_version", "default"}, {"hostname", "host1"}});
    ASSERT_TRUE(inf.ok());
    (*inf)->Inc();
    auto h = registry_.HistogramFor("test_request_duration_seconds", {{"model_name", "m"}});
    ASSERT_TRUE(h.ok());
    (*h)->Observe(0.5);
    (*h)->Observe(10);
  }

  http::Response Get(std::string query, Headers headers = {},
                     MetricsApi::Options options = MetricsApi::Options{}) {
    query_ = std::move(query);
    target_ = "/metrics" + (query_.empty() ? std::string() : "?" + query_);
    headers_ = std::move(headers);
    http::Request request;
    request.method = http::Method::kGet;
    request.method_text = "GET";
    request.target = target_;
    request.path = std::string_view(target_).substr(0, 8);
    request.query = query_;
    request.BindHeaders(&LookupHeader, &headers_);
    MetricsApi api(&registry_, std::move(options));
    auto capture = std::make_shared<CaptureTarget>();
    api.HandleMetrics(request, http::Responder(capture));
    EXPECT_EQ(capture->deliveries, 1);
    return capture->last;
  }

  // Body of a 200 answer in the Prometheus content type.
  std::string Scrape(std::string query, MetricsApi::Options options = MetricsApi::Options{}) {
    http::Response r = Get(std::move(query), {}, std::move(options));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.content_type, kPrometheusType);
    EXPECT_FALSE(HasHeader(r, "Content-Encoding"));
    return r.body;
  }

  static MetricsApi::Options Mode(MetricsMode mode) {
    MetricsApi::Options o;
    o.mode = mode;
    return o;
  }
  static MetricsApi::Options Token(std::string token) {
    MetricsApi::Options o;
    o.token = std::move(token);
    return o;
  }

  metrics::Registry registry_;
  std::string query_;
  std::string target_;
  Headers headers_;
};

// ---- unfiltered output ----

TEST_F(MetricsApiTest, PlainScrapeHasPrometheusContentType) {
  http::Response r = Get("");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, kPrometheusType);
  EXPECT_FALSE(HasHeader(r, "Content-Encoding"));
  EXPECT_FALSE(HasHeader(r, "WWW-Authenticate"));
}

TEST_F(MetricsApiTest, PlainScrapeHasEveryFamily) {
  const std::string body = Scrape("");
  EXPECT_NE(body.find(kRequests2xx), std::string::npos) << body;
  EXPECT_NE(body.find(kRequests4xx), std::string::npos) << body;
  // A family without samples prints HELP and TYPE only.
  EXPECT_NE(body.find("# HELP Requests5XX Torchserve prometheus counter metric with unit: "
                      "Count\n# TYPE Requests5XX counter\n#"),
            std::string::npos)
      << body;
  EXPECT_EQ(body.find("Requests5XX{"), std::string::npos);
  EXPECT_NE(body.find("# TYPE HandlerTime gauge\n"), std::string::npos);
  EXPECT_NE(body.find("# TYPE GPUUtilization gauge\n"), std::string::npos);
  EXPECT_NE(body.find(std::string(kHistHeader) + kHistBuckets + kHistCount + kHistSum),
            std::string::npos)
      << body;
  // One HELP per family of the registry.
  EXPECT_EQ(CountOf(body, "# HELP "), registry_.Collect().families.size());
}

TEST_F(MetricsApiTest, QueryWithoutNameFilterIsUnfiltered) {
  const std::string all = Scrape("");
  EXPECT_EQ(Scrape("name=Requests2XX"), all);
  EXPECT_EQ(Scrape("names[]=Requests2XX"), all);
  EXPECT_EQ(Scrape("foo=bar&x"), all);
}

// ---- name[] filter ----

TEST_F(MetricsApiTest, FilterOneName) { EXPECT_EQ(Scrape("name[]=Requests2XX"), kRequests2xx); }

TEST_F(MetricsApiTest, FilterRepeatedNameCountsOnce) {
  EXPECT_EQ(Scrape("name[]=Requests2XX&name[]=Requests2XX"), kRequests2xx);
  EXPECT_EQ(Scrape("name[]=Requests2XX&name[]=Requests4XX&name[]=Requests2XX"),
            std::string(kRequests2xx) + kRequests4xx);
}

TEST_F(MetricsApiTest, FilterOutputInFamilyOrderWhateverTheQueryOrder) {
  EXPECT_EQ(Scrape("name[]=Requests4XX&name[]=Requests2XX"),
            std::string(kRequests2xx) + kRequests4xx);
}

TEST_F(MetricsApiTest, FilterPercentEncodedKey) {
  EXPECT_EQ(Scrape("name%5B%5D=Requests2XX"), kRequests2xx);
  EXPECT_EQ(Scrape("name%5b%5d=Requests2XX"), kRequests2xx);
  EXPECT_EQ(Scrape("name%5B%5D=Requests2XX&name[]=Requests4XX"),
            std::string(kRequests2xx) + kRequests4xx);
  // Semicolons separate parameters too (Netty).
  EXPECT_EQ(Scrape("name[]=Requests2XX;name[]=Requests4XX"),
            std::string(kRequests2xx) + kRequests4xx);
}

TEST_F(MetricsApiTest, FilterUnknownNameGivesEmptyBody) {
  EXPECT_EQ(Scrape("name[]=NoSuchMetric"), "");
  EXPECT_EQ(Scrape("name[]="), "");
  EXPECT_EQ(Scrape("name[]"), "");
  EXPECT_EQ(Scrape("name[]=requests2xx"), "");  // names are case-sensitive
}

TEST_F(MetricsApiTest, FilterUnknownAndKnownKeepsKnown) {
  EXPECT_EQ(Scrape("name[]=NoSuchMetric&name[]=Requests2XX"), kRequests2xx);
}

TEST_F(MetricsApiTest, FilterDropsFamiliesWithoutSamples) {
  EXPECT_EQ(Scrape("name[]=Requests5XX"), "");
  EXPECT_EQ(Scrape("name[]=Requests5XX&name[]=Requests2XX"), kRequests2xx);
}

TEST_F(MetricsApiTest, FilterHistogramNeedsSampleNames) {
  // The family name alone matches no sample.
  EXPECT_EQ(Scrape("name[]=test_request_duration_seconds"), "");
  EXPECT_EQ(Scrape("name[]=test_request_duration_seconds_bucket"),
            std::string(kHistHeader) + kHistBuckets);
  EXPECT_EQ(Scrape("name[]=test_request_duration_seconds_count"),
            std::string(kHistHeader) + kHistCount);
  EXPECT_EQ(Scrape("name[]=test_request_duration_seconds_sum"),
            std::string(kHistHeader) + kHistSum);
  EXPECT_EQ(Scrape("name[]=test_request_duration_seconds_sum&name[]=test_request_duration_seconds_"
                   "count"),
            std::string(kHistHeader) + kHistCount + kHistSum);
  EXPECT_EQ(Scrape("name[]=test_request_duration_seconds_bucket&name[]=test_request_duration_"
                   "seconds_count&name[]=test_request_duration_seconds_sum"),
            std::string(kHistHeader) + kHistBuckets + kHistCount + kHistSum);
}

TEST_F(MetricsApiTest, FilterValuePercentDecoded) {
  EXPECT_EQ(Scrape("name[]=Requests%32XX"), kRequests2xx);  // %32 is '2'
}

// ---- gzip ----

TEST_F(MetricsApiTest, GzipWhenAccepted) {
  const std::string plain = Scrape("");
  http::Response r = Get("", {{"Accept-Encoding", "gzip"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, kPrometheusType);
  EXPECT_EQ(HeaderOf(r, "Content-Encoding"), "gzip");
  EXPECT_NE(r.body, plain);
  auto unzipped = Gunzip(r.body);
  ASSERT_TRUE(unzipped.ok()) << unzipped.status().message();
  EXPECT_EQ(*unzipped, plain);
}

TEST_F(MetricsApiTest, GzipAsPrometheusAsks) {
  // Prometheus' scraper sends exactly this header.
  http::Response r = Get("name[]=Requests2XX", {{"accept-encoding", "gzip"}});
  EXPECT_EQ(HeaderOf(r, "Content-Encoding"), "gzip");
  auto unzipped = Gunzip(r.body);
  ASSERT_TRUE(unzipped.ok());
  EXPECT_EQ(*unzipped, kRequests2xx);
}

TEST_F(MetricsApiTest, GzipWithQValuesAndOtherCodings) {
  http::Response r = Get("", {{"Accept-Encoding", "br;q=1.0, gzip;q=0.5, *;q=0"}});
  EXPECT_EQ(HeaderOf(r, "Content-Encoding"), "gzip");
  EXPECT_TRUE(Gunzip(r.body).ok());
}

TEST_F(MetricsApiTest, NoGzipWhenNotAccepted) {
  const std::string plain = Scrape("");
  for (const char* accept : {"identity", "deflate, br", "gzip;q=0", ""}) {
    http::Response r = Get("", {{"Accept-Encoding", accept}});
    EXPECT_FALSE(HasHeader(r, "Content-Encoding")) << accept;
    EXPECT_EQ(r.body, plain) << accept;
  }
}

TEST_F(MetricsApiTest, GzipOfEmptyFilteredBodyStillDecodesToEmpty) {
  http::Response r = Get("name[]=NoSuchMetric", {{"Accept-Encoding", "gzip"}});
  EXPECT_EQ(r.status, 200);
  if (HasHeader(r, "Content-Encoding")) {
    auto unzipped = Gunzip(r.body);
    ASSERT_TRUE(unzipped.ok());
    EXPECT_EQ(*unzipped, "");
  } else {
    EXPECT_EQ(r.body, "");
  }
}

// ---- modes ----

TEST_F(MetricsApiTest, LogModeAnswersEmpty) {
  EXPECT_EQ(Scrape("", Mode(MetricsMode::kLog)), "");
  EXPECT_EQ(Scrape("name[]=Requests2XX", Mode(MetricsMode::kLog)), "");
  http::Response r = Get("", {{"Accept-Encoding", "gzip"}}, Mode(MetricsMode::kLog));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "");
  EXPECT_FALSE(HasHeader(r, "Content-Encoding"));
}

TEST_F(MetricsApiTest, LegacyModeShowsOnlyTheThreeTsCounters) {
  const std::string body = Scrape("", Mode(MetricsMode::kLegacy));
  EXPECT_EQ(CountOf(body, "# TYPE "), 3u) << body;
  EXPECT_NE(body.find("# TYPE ts_inference_requests_total counter\n"
                      "ts_inference_requests_total{model_name=\"m\",model_version=\"default\","
                      "hostname=\"host1\",} 1.0\n"),
            std::string::npos)
      << body;
  EXPECT_NE(body.find("# TYPE ts_inference_latency_microseconds counter\n"), std::string::npos);
  EXPECT_NE(body.find("# TYPE ts_queue_latency_microseconds counter\n"), std::string::npos);
  EXPECT_EQ(body.find("Requests2XX"), std::string::npos);
  EXPECT_EQ(body.find("test_request_duration_seconds"), std::string::npos);
}

TEST_F(MetricsApiTest, LegacyModeFilterAppliesWithinTsCounters) {
  EXPECT_EQ(Scrape("name[]=Requests2XX", Mode(MetricsMode::kLegacy)), "");
  const std::string body =
      Scrape("name[]=ts_inference_requests_total&name[]=Requests2XX", Mode(MetricsMode::kLegacy));
  EXPECT_EQ(CountOf(body, "# TYPE "), 1u) << body;
  EXPECT_NE(body.find("ts_inference_requests_total{"), std::string::npos);
}

TEST(MetricsApiLegacyTest, LegacyFamiliesAreTheThreeTsCounters) {
  const auto& f = MetricsApi::LegacyFamilies();
  EXPECT_EQ(f.size(), 3u);
  EXPECT_EQ(f.count("ts_inference_requests_total"), 1u);
  EXPECT_EQ(f.count("ts_inference_latency_microseconds"), 1u);
  EXPECT_EQ(f.count("ts_queue_latency_microseconds"), 1u);
}

// ---- token ----

void ExpectUnauthorized(const http::Response& r) {
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(HeaderOf(r, "WWW-Authenticate"), "Bearer");
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_FALSE(HasHeader(r, "Content-Encoding"));
  // TorchServe's error shape, pretty-printed.
  const std::string& b = r.body;
  EXPECT_EQ(b.rfind("{\n  \"code\": 401,\n  \"type\": \"", 0), 0u) << b;
  EXPECT_NE(b.find("\",\n  \"message\": \""), std::string::npos) << b;
  ASSERT_GE(b.size(), 4u);
  EXPECT_EQ(b.substr(b.size() - 4), "\"\n}\n") << b;
  EXPECT_EQ(b.find("Requests2XX"), std::string::npos);
}

// Issue 9 §4: /metrics used its own "Bearer " parser, which refused a tab after the scheme
// (and other forms) that the inference and management gates accept. Now one function
// decides for every listener: the same Authorization value gets the same answer.
TEST_F(MetricsApiTest, TokenAcceptsExactlyWhatTheOtherListenersAccept) {
  for (const std::string header :
       {"Bearer s3cret", "Bearer\ts3cret", "bearer \t s3cret", "  BEARER s3cret\t", "Bearer\t",
        "Bearers3cret", "Bearer s3cret x", "Bearer s3 cret", "Bearer \x0bs3cret", "Basic s3cret"}) {
    // What the inference/management gates (TokenAuth::Check) accept for this key.
    const bool gates_accept = BearerToken(header) == "s3cret";
    const http::Response r = Get("", {{"Authorization", header}}, Token("s3cret"));
    EXPECT_EQ(r.status, gates_accept ? 200 : 401) << Quoted(header);
  }
  // In particular a tab after the scheme (TorchServe's pattern: ^Bearer\s+(\S+)$).
  EXPECT_EQ(Get("", {{"Authorization", "Bearer\ts3cret"}}, Token("s3cret")).status, 200);
}

TEST_F(MetricsApiTest, TokenMissingIs401) { ExpectUnauthorized(Get("", {}, Token("s3cret"))); }

TEST_F(MetricsApiTest, TokenWrongIs401) {
  ExpectUnauthorized(Get("", {{"Authorization", "Bearer wrong"}}, Token("s3cret")));
  ExpectUnauthorized(Get("", {{"Authorization", "Bearer s3cre"}}, Token("s3cret")));
  ExpectUnauthorized(Get("", {{"Authorization", "Bearer s3crett"}}, Token("s3cret")));
  ExpectUnauthorized(Get("", {{"Authorization", "Basic s3cret"}}, Token("s3cret")));
  ExpectUnauthorized(Get("", {{"Authorization", "s3cret"}}, Token("s3cret")));
  ExpectUnauthorized(Get("", {{"Authorization", ""}}, Token("s3cret")));
}

TEST_F(MetricsApiTest, TokenWrongIs401EvenWithGzipAndLogMode) {
  MetricsApi::Options o = Token("s3cret");
  o.mode = MetricsMode::kLog;
  ExpectUnauthorized(Get("", {{"Accept-Encoding", "gzip"}}, o));
}

TEST_F(MetricsApiTest, TokenRightIs200) {
  const std::string plain = Scrape("");
  http::Response r = Get("", {{"Authorization", "Bearer s3cret"}}, Token("s3cret"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, kPrometheusType);
  EXPECT_FALSE(HasHeader(r, "WWW-Authenticate"));
  EXPECT_EQ(r.body, plain);

  r = Get("name[]=Requests2XX", {{"Authorization", "Bearer s3cret"}, {"Accept-Encoding", "gzip"}},
          Token("s3cret"));
  EXPECT_EQ(r.status, 200);
  auto unzipped = Gunzip(r.body);
  ASSERT_TRUE(unzipped.ok());
  EXPECT_EQ(*unzipped, kRequests2xx);
}

TEST_F(MetricsApiTest, NoTokenConfiguredIgnoresAuthorization) {
  http::Response r = Get("", {{"Authorization", "Bearer anything"}});
  EXPECT_EQ(r.status, 200);
}

TEST(BearerTokenTest, Matches) {
  EXPECT_TRUE(BearerTokenMatches("Bearer s3cret", "s3cret"));
  // The scheme is case-insensitive (RFC 9110 §11.1); surrounding spaces are tolerated.
  EXPECT_TRUE(BearerTokenMatches("bearer s3cret", "s3cret"));
  EXPECT_TRUE(BearerTokenMatches("BEARER s3cret", "s3cret"));
  EXPECT_TRUE(BearerTokenMatches("  Bearer   s3cret  ", "s3cret"));
  EXPECT_TRUE(BearerTokenMatches("Bearer a-b_c.d~e+f/g=", "a-b_c.d~e+f/g="));
}

TEST(BearerTokenTest, Mismatches) {
  EXPECT_FALSE(BearerTokenMatches("", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearer", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearer ", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearer S3CRET", "s3cret"));  // the token is case-sensitive
  EXPECT_FALSE(BearerTokenMatches("Bearer s3cre", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearer s3crets", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearer x3cret", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches(std::string_view("Bearer s3cre\0t", 14), "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Basic s3cret", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearers3cret", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("s3cret", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearer s3cret extra", "s3cret"));
}

// ---- routes ----

class MetricsRoutesTest : public MetricsApiTest {
 protected:
  http::Response Route(http::Method method, std::string path) {
    path_ = std::move(path);
    http::Router router(&ErrorForStatus);
    MetricsApi api(&registry_, MetricsApi::Options{});
    api.RegisterRoutes(&router);
    http::Request request;
    request.method = method;
    request.method_text = http::MethodName(method);
    request.target = path_;
    request.path = path_;
    auto capture = std::make_shared<CaptureTarget>();
    router.Handle(request, http::Responder(capture));
    EXPECT_EQ(capture->deliveries, 1);
    return capture->last;
  }
  std::string path_;
};

TEST_F(MetricsRoutesTest, GetAndHeadOnMetrics) {
  http::Response r = Route(http::Method::kGet, "/metrics");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, kPrometheusType);
  EXPECT_NE(r.body.find(kRequests2xx), std::string::npos);
  EXPECT_EQ(Route(http::Method::kHead, "/metrics").status, 200);
  EXPECT_EQ(Route(http::Method::kGet, "/metrics/").status, 200);
}

TEST_F(MetricsRoutesTest, OtherMethodIs405Json) {
  for (http::Method m : {http::Method::kPost, http::Method::kPut, http::Method::kDelete,
                         http::Method::kOptions, http::Method::kPatch, http::Method::kOther}) {
    http::Response r = Route(m, "/metrics");
    EXPECT_EQ(r.status, 405) << http::MethodName(m);
    EXPECT_EQ(r.content_type, "application/json");
    EXPECT_EQ(r.body,
              "{\n  \"code\": 405,\n  \"type\": \"MethodNotAllowedException\",\n  \"message\": "
              "\"Requested method is not allowed, please refer to API document.\"\n}\n");
  }
}

TEST_F(MetricsRoutesTest, OtherPathIs404Json) {
  for (const char* path : {"/", "/metric", "/metrics/x", "/predictions/m", "/ping"}) {
    http::Response r = Route(http::Method::kGet, path);
    EXPECT_EQ(r.status, 404) << path;
    EXPECT_EQ(r.content_type, "application/json");
    EXPECT_EQ(r.body,
              "{\n  \"code\": 404,\n  \"type\": \"ResourceNotFoundException\",\n  \"message\": "
              "\"Requested resource is not found, please refer to API document.\"\n}\n");
  }
}

// ---- ResponseCounters ----

double CounterValue(const metrics::Registry& registry, std::string_view name) {
  metrics::Family* f = registry.Find(name);
  if (f == nullptr) return -1;
  auto c = f->GetCounter({{"Level", "Host"}, {"Hostname", "host1"}});
  return c.ok() ? (*c)->Value() : -1;
}

TEST_F(MetricsApiTest, ResponseCountersCountByClass) {
  auto counters = ResponseCounters::Create(&registry_, "host1");
  ASSERT_TRUE(counters.ok()) << counters.status().message();
  // SetUp left 2XX at 8, 4XX at 2, 5XX at 0.
  for (int status : {200, 201, 202, 204, 299}) (*counters)->OnResponse(status);
  for (int status : {400, 401, 404, 405, 413, 431, 499}) (*counters)->OnResponse(status);
  for (int status : {500, 501, 503, 507, 599}) (*counters)->OnResponse(status);
  EXPECT_EQ(CounterValue(registry_, "Requests2XX"), 8 + 5);
  EXPECT_EQ(CounterValue(registry_, "Requests4XX"), 2 + 7);
  EXPECT_EQ(CounterValue(registry_, "Requests5XX"), 5);
}

TEST_F(MetricsApiTest, ResponseCountersIgnore1xxAnd3xx) {
  auto counters = ResponseCounters::Create(&registry_, "host1");
  ASSERT_TRUE(counters.ok());
  for (int status : {100, 101, 199, 300, 301, 302, 304, 307, 308, 399}) {
    (*counters)->OnResponse(status);
  }
  EXPECT_EQ(CounterValue(registry_, "Requests2XX"), 8);
  EXPECT_EQ(CounterValue(registry_, "Requests4XX"), 2);
  EXPECT_EQ(CounterValue(registry_, "Requests5XX"), 0);
}

TEST_F(MetricsApiTest, ResponseCountersShowOnMetrics) {
  auto counters = ResponseCounters::Create(&registry_, "host1");
  ASSERT_TRUE(counters.ok());
  (*counters)->OnResponse(503);
  EXPECT_EQ(Scrape("name[]=Requests5XX"),
            "# HELP Requests5XX Torchserve prometheus counter metric with unit: Count\n"
            "# TYPE Requests5XX counter\n"
            "Requests5XX{Level=\"Host\",Hostname=\"host1\",} 1.0\n");
}

TEST(ResponseCountersTest, WorkWithoutTheFamilies) {
  // A user's metrics.yaml may leave the families out: counting still works, invisibly.
  metrics::Registry empty;
  auto counters = ResponseCounters::Create(&empty, "host1");
  ASSERT_TRUE(counters.ok()) << counters.status().message();
  (*counters)->OnResponse(200);
  (*counters)->OnResponse(404);
  (*counters)->OnResponse(500);
  EXPECT_TRUE(empty.Collect().families.empty());
}

// ---- errors ----

TEST(ErrorsTest, JsonErrorIsTorchServesPrettyJson) {
  http::Response r = JsonError(404, "ModelNotFoundException", "Model not found: noop");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body,
            "{\n  \"code\": 404,\n  \"type\": \"ModelNotFoundException\",\n  \"message\": "
            "\"Model not found: noop\"\n}\n");
  EXPECT_TRUE(r.headers.empty());
}

TEST(ErrorsTest, JsonErrorEscapesAsGson) {
  http::Response r = JsonError(400, "BadRequestException", "a \"quoted\" \\ path\nline\ttab");
  EXPECT_EQ(r.body,
            "{\n  \"code\": 400,\n  \"type\": \"BadRequestException\",\n  \"message\": "
            "\"a \\\"quoted\\\" \\\\ path\\nline\\ttab\"\n}\n");
}

TEST(ErrorsTest, JsonErrorHtmlEscapesAsTorchServesGson) {
  // TorchServe's Gson (JsonUtils.GSON_PRETTY) keeps HTML escaping on: < > & = ' are
  // written as \u003c \u003e \u0026 \u003d \u0027.
  http::Response r = JsonError(404, "ModelNotFoundException",
                               "Given URL http://h/m.mar?a=1&b='<x>' does not match");
  EXPECT_EQ(r.body,
            "{\n  \"code\": 404,\n  \"type\": \"ModelNotFoundException\",\n  \"message\": "
            "\"Given URL http://h/m.mar?a\\u003d1\\u0026b\\u003d\\u0027\\u003cx\\u003e\\u0027 "
            "does not match\"\n}\n");
  // Gson also always escapes U+2028 and U+2029.
  const std::string separators = "a\u2028b\u2029c";  // UTF-8 in the literal
  EXPECT_EQ(JsonStatus(200, separators).body, "{\n  \"status\": \"a\\u2028b\\u2029c\"\n}\n");
}

TEST(ErrorsTest, JsonErrorKeepsUtf8AndReplacesInvalidBytes) {
  EXPECT_EQ(JsonError(404, "ModelNotFoundException", "Model not found: caf\xC3\xA9").body,
            "{\n  \"code\": 404,\n  \"type\": \"ModelNotFoundException\",\n  \"message\": "
            "\"Model not found: caf\xC3\xA9\"\n}\n");
  // A user-supplied name with bytes that are not UTF-8 must not throw; Java would decode
  // them as U+FFFD.
  http::Response r;
  EXPECT_NO_THROW(r = JsonError(404, "ModelNotFoundException", "Model not found: \xff\xfe"));
  EXPECT_EQ(r.status, 404);
  EXPECT_NE(r.body.find("Model not found: \xEF\xBF\xBD"), std::string::npos) << r.body;
}

TEST(ErrorsTest, JsonStatusShape) {
  http::Response r = JsonStatus(200, "Healthy");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body, "{\n  \"status\": \"Healthy\"\n}\n");
  EXPECT_EQ(JsonStatus(200, "Model \"X\" unregistered").body,
            "{\n  \"status\": \"Model \\\"X\\\" unregistered\"\n}\n");
}

TEST(ErrorsTest, HttpStatusForMapping) {
  EXPECT_EQ(HttpStatusFor(StatusCode::kOk), 200);
  EXPECT_EQ(HttpStatusFor(StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusFor(StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusFor(StatusCode::kAlreadyExists), 409);
  EXPECT_EQ(HttpStatusFor(StatusCode::kPermissionDenied), 403);
  EXPECT_EQ(HttpStatusFor(StatusCode::kFailedPrecondition), 400);
  EXPECT_EQ(HttpStatusFor(StatusCode::kResourceExhausted), 503);
  EXPECT_EQ(HttpStatusFor(StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusFor(StatusCode::kDeadlineExceeded), 408);
  EXPECT_EQ(HttpStatusFor(StatusCode::kUnimplemented), 501);
  EXPECT_EQ(HttpStatusFor(StatusCode::kInternal), 500);
}

TEST(ErrorsTest, ErrorForStatusTypes) {
  struct Case {
    int code;
    const char* type;
  };
  for (const Case& c :
       {Case{400, "BadRequestException"}, Case{404, "ResourceNotFoundException"},
        Case{405, "MethodNotAllowedException"}, Case{413, "RequestEntityTooLargeException"},
        Case{431, "RequestHeaderFieldsTooLargeException"},
        Case{503, "ServiceUnavailableException"}}) {
    http::Response r = ErrorForStatus(c.code, "msg");
    EXPECT_EQ(r.status, c.code);
    EXPECT_EQ(r.content_type, "application/json");
    EXPECT_EQ(r.body, "{\n  \"code\": " + std::to_string(c.code) + ",\n  \"type\": \"" + c.type +
                          "\",\n  \"message\": \"msg\"\n}\n");
    EXPECT_STREQ(ErrorTypeFor(c.code), c.type);
  }
  EXPECT_STREQ(ErrorTypeFor(500), "InternalServerException");
  EXPECT_STREQ(ErrorTypeFor(502), "InternalServerException");
  EXPECT_STREQ(ErrorTypeFor(401), "UnauthorizedException");
  EXPECT_STREQ(ErrorTypeFor(409), "ConflictStatusException");
}

TEST(ErrorsTest, ErrorFromStatus) {
  http::Response r = ErrorFromStatus(Status::NotFound("Model not found: noop"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body,
            "{\n  \"code\": 404,\n  \"type\": \"ResourceNotFoundException\",\n  \"message\": "
            "\"Model not found: noop\"\n}\n");
  EXPECT_EQ(ErrorFromStatus(Status::Unavailable("busy")).status, 503);
  EXPECT_EQ(ErrorFromStatus(Status::Internal("boom")).status, 500);
}

}  // namespace
}  // namespace tserve::api
