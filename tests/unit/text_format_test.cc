#include "metrics/text_format.h"

#include <gtest/gtest.h>

#include <limits>

#include "metrics/metrics_yaml.h"

namespace tserve::metrics {
namespace {

FamilyDesc Desc(const std::string& name, MetricType type, const std::string& unit,
                std::vector<std::string> labels) {
  FamilyDesc d;
  d.name = name;
  d.type = type;
  d.unit = unit;
  d.help = TorchServeHelp(type, unit);
  d.label_names = std::move(labels);
  return d;
}

std::string Render(const Registry& r, const RenderOptions& o = {}) {
  std::string out;
  RenderText(r.Collect(), o, &out);
  return out;
}

TEST(TextFormatTest, TorchServeCounterBytes) {
  Registry r;
  Family* f = *r.Add(Desc("Requests2XX", MetricType::kCounter, "Count", {"Level", "Hostname"}));
  (*f->GetCounter({{"Level", "Host"}, {"Hostname", "88665a372f4b.ant.amazon.com"}}))->Add(8);
  EXPECT_EQ(Render(r),
            "# HELP Requests2XX Torchserve prometheus counter metric with unit: Count\n"
            "# TYPE Requests2XX counter\n"
            "Requests2XX{Level=\"Host\",Hostname=\"88665a372f4b.ant.amazon.com\",} 8.0\n");
}

TEST(TextFormatTest, EmptyFamilyPrintsHelpAndTypeOnly) {
  Registry r;
  ASSERT_TRUE(r.Add(Desc("Requests5XX", MetricType::kCounter, "Count", {"Level"})).ok());
  ASSERT_TRUE(r.Add(Desc("GPUUtilization", MetricType::kGauge, "Percent", {"Level"})).ok());
  EXPECT_EQ(Render(r),
            "# HELP GPUUtilization Torchserve prometheus gauge metric with unit: Percent\n"
            "# TYPE GPUUtilization gauge\n"
            "# HELP Requests5XX Torchserve prometheus counter metric with unit: Count\n"
            "# TYPE Requests5XX counter\n");
}

TEST(TextFormatTest, SortedByFamilyThenLabels) {
  Registry r;
  Family* w = *r.Add(Desc("WorkerLoadTime", MetricType::kGauge, "Milliseconds", {"WorkerName"}));
  Family* c = *r.Add(Desc("CPUUtilization", MetricType::kGauge, "Percent", {}));
  (*w->GetGauge({{"WorkerName", "W-9001-resnet18_1.0"}}))->Set(4592);
  (*w->GetGauge({{"WorkerName", "W-9000-resnet18_1.0"}}))->Set(4593);
  (*c->GetGauge({}))->Set(0);
  EXPECT_EQ(Render(r),
            "# HELP CPUUtilization Torchserve prometheus gauge metric with unit: Percent\n"
            "# TYPE CPUUtilization gauge\n"
            "CPUUtilization 0.0\n"
            "# HELP WorkerLoadTime Torchserve prometheus gauge metric with unit: Milliseconds\n"
            "# TYPE WorkerLoadTime gauge\n"
            "WorkerLoadTime{WorkerName=\"W-9000-resnet18_1.0\",} 4593.0\n"
            "WorkerLoadTime{WorkerName=\"W-9001-resnet18_1.0\",} 4592.0\n");
}

TEST(TextFormatTest, EscapesLabelValuesAndHelp) {
  Registry r;
  FamilyDesc d = Desc("X", MetricType::kGauge, "ms", {"a"});
  d.help = "line1\nback\\slash \"quoted\"";
  Family* f = *r.Add(d);
  (*f->GetGauge({{"a", "q\"b\\s\nn"}}))->Set(1.5);
  EXPECT_EQ(Render(r),
            "# HELP X line1\\nback\\\\slash \"quoted\"\n"
            "# TYPE X gauge\n"
            "X{a=\"q\\\"b\\\\s\\nn\",} 1.5\n");
}

TEST(TextFormatTest, NonFiniteAndLargeNumbers) {
  Registry r;
  Family* f = *r.Add(Desc("X", MetricType::kGauge, "ms", {"k"}));
  (*f->GetGauge({{"k", "a"}}))->Set(std::numeric_limits<double>::infinity());
  (*f->GetGauge({{"k", "b"}}))->Set(-std::numeric_limits<double>::infinity());
  (*f->GetGauge({{"k", "c"}}))->Set(std::numeric_limits<double>::quiet_NaN());
  (*f->GetGauge({{"k", "d"}}))->Set(1.2345678E7);
  (*f->GetGauge({{"k", "e"}}))->Set(0.0001);
  EXPECT_EQ(Render(r),
            "# HELP X Torchserve prometheus gauge metric with unit: ms\n"
            "# TYPE X gauge\n"
            "X{k=\"a\",} +Inf\n"
            "X{k=\"b\",} -Inf\n"
            "X{k=\"c\",} NaN\n"
            "X{k=\"d\",} 1.2345678E7\n"
            "X{k=\"e\",} 1.0E-4\n");
}

TEST(TextFormatTest, HistogramLayout) {
  Registry r;
  FamilyDesc d =
      Desc("ts_request_duration_seconds", MetricType::kHistogram, "Seconds", {"model_name"});
  d.help = "Request duration.";
  d.buckets = {0.1, 1.0};
  Family* f = *r.Add(d);
  Histogram* h = *f->GetHistogram({{"model_name", "m"}});
  h->Observe(0.05);
  h->Observe(0.5);
  h->Observe(3.0);
  EXPECT_EQ(Render(r),
            "# HELP ts_request_duration_seconds Request duration.\n"
            "# TYPE ts_request_duration_seconds histogram\n"
            "ts_request_duration_seconds_bucket{model_name=\"m\",le=\"0.1\",} 1.0\n"
            "ts_request_duration_seconds_bucket{model_name=\"m\",le=\"1.0\",} 2.0\n"
            "ts_request_duration_seconds_bucket{model_name=\"m\",le=\"+Inf\",} 3.0\n"
            "ts_request_duration_seconds_count{model_name=\"m\",} 3.0\n"
            "ts_request_duration_seconds_sum{model_name=\"m\",} 3.55\n");
}

TEST(TextFormatTest, HistogramWithoutLabels) {
  Registry r;
  FamilyDesc d = Desc("h", MetricType::kHistogram, "s", {});
  d.buckets = {1.0};
  (*(*r.Add(d))->GetHistogram({}))->Observe(2.0);
  EXPECT_EQ(Render(r),
            "# HELP h Torchserve prometheus histogram metric with unit: s\n"
            "# TYPE h histogram\n"
            "h_bucket{le=\"1.0\",} 0.0\n"
            "h_bucket{le=\"+Inf\",} 1.0\n"
            "h_count 1.0\n"
            "h_sum 2.0\n");
}

class FilterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto fams = ParseMetricsYaml(DefaultMetricsYaml(), "metrics.yaml");
    ASSERT_TRUE(fams.ok()) << fams.status().message();
    ASSERT_TRUE(AddFamilies(*fams, &r).ok());
    const Labels model = {
        {"model_name", "resnet18"}, {"model_version", "default"}, {"hostname", "h"}};
    (*r.CounterFor("ts_inference_latency_microseconds", model))->Add(290371.129);
    (*r.CounterFor("ts_queue_latency_microseconds", model))->Add(365.21);
    (*r.CounterFor("Requests2XX", {{"Level", "Host"}, {"Hostname", "h"}}))->Add(8);
    FamilyDesc d;
    d.name = "lat";
    d.type = MetricType::kHistogram;
    d.help = "x";
    d.buckets = {1.0};
    (*(*r.Add(d))->GetHistogram({}))->Observe(0.5);
  }
  std::string Filtered(std::vector<std::string> names) {
    NameFilter filter(names);
    RenderOptions o;
    o.sample_filter = &filter;
    return Render(r, o);
  }
  Registry r;
};

TEST_F(FilterTest, SeedExample) {
  EXPECT_EQ(Filtered({"ts_inference_latency_microseconds", "ts_queue_latency_microseconds"}),
            "# HELP ts_inference_latency_microseconds Torchserve prometheus counter metric with "
            "unit: Microseconds\n"
            "# TYPE ts_inference_latency_microseconds counter\n"
            "ts_inference_latency_microseconds{model_name=\"resnet18\",model_version=\"default\","
            "hostname=\"h\",} 290371.129\n"
            "# HELP ts_queue_latency_microseconds Torchserve prometheus counter metric with unit: "
            "Microseconds\n"
            "# TYPE ts_queue_latency_microseconds counter\n"
            "ts_queue_latency_microseconds{model_name=\"resnet18\",model_version=\"default\","
            "hostname=\"h\",} 365.21\n");
}

TEST_F(FilterTest, RepeatedNamesCountOnce) {
  EXPECT_EQ(Filtered({"Requests2XX", "Requests2XX"}), Filtered({"Requests2XX"}));
}

TEST_F(FilterTest, UnknownNameGivesEmptyOutput) {
  EXPECT_EQ(Filtered({"no_such_metric"}), "");
  EXPECT_EQ(Filtered({""}), "");
}

TEST_F(FilterTest, EmptyFamiliesAreDroppedWhenFiltering) {
  // Requests5XX exists but has no sample yet: filtered output omits it entirely.
  EXPECT_EQ(Filtered({"Requests5XX"}), "");
  EXPECT_EQ(Filtered({"Requests5XX", "Requests2XX"}), Filtered({"Requests2XX"}));
}

TEST_F(FilterTest, HistogramNeedsSampleNames) {
  EXPECT_EQ(Filtered({"lat"}), "");
  EXPECT_EQ(Filtered({"lat_count"}), "# HELP lat x\n# TYPE lat histogram\nlat_count 1.0\n");
  EXPECT_EQ(Filtered({"lat_bucket", "lat_sum", "lat_count"}),
            "# HELP lat x\n# TYPE lat histogram\n"
            "lat_bucket{le=\"1.0\",} 1.0\nlat_bucket{le=\"+Inf\",} 1.0\n"
            "lat_count 1.0\nlat_sum 0.5\n");
}

TEST_F(FilterTest, FamilyAllowListForLegacyMode) {
  std::set<std::string, std::less<>> legacy = {"ts_queue_latency_microseconds",
                                               "ts_inference_requests_total"};
  RenderOptions o;
  o.families = &legacy;
  EXPECT_EQ(Render(r, o),
            "# HELP ts_inference_requests_total Torchserve prometheus counter metric with unit: "
            "Count\n"
            "# TYPE ts_inference_requests_total counter\n"
            "# HELP ts_queue_latency_microseconds Torchserve prometheus counter metric with unit: "
            "Microseconds\n"
            "# TYPE ts_queue_latency_microseconds counter\n"
            "ts_queue_latency_microseconds{model_name=\"resnet18\",model_version=\"default\","
            "hostname=\"h\",} 365.21\n");
}

TEST(RenderLabelsTest, TrailingComma) {
  EXPECT_EQ(RenderLabels({"a", "b"}, {"x", "y"}), "{a=\"x\",b=\"y\",}");
  EXPECT_EQ(RenderLabels({}, {}), "");
}

}  // namespace
}  // namespace tserve::metrics
