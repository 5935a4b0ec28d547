#include "metrics/metrics_yaml.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace tserve::metrics {
namespace {

const FamilyDesc* FindDesc(const std::vector<FamilyDesc>& v, const std::string& name) {
  auto it = std::find_if(v.begin(), v.end(), [&](const FamilyDesc& d) { return d.name == name; });
  return it == v.end() ? nullptr : &*it;
}

TEST(MetricsYamlTest, DefaultFileHasEveryMetricOfTheSpec) {
  auto fams = ParseMetricsYaml(DefaultMetricsYaml(), "metrics.yaml");
  ASSERT_TRUE(fams.ok()) << fams.status().message();
  struct Want {
    const char* name;
    MetricType type;
    const char* unit;
    std::vector<std::string> labels;
  };
  const std::vector<std::string> host = {"Level", "Hostname"};
  const std::vector<std::string> model = {"model_name", "model_version", "hostname"};
  const std::vector<std::string> gpu = {"Level", "DeviceId", "Hostname"};
  const std::vector<Want> want = {
      {"Requests2XX", MetricType::kCounter, "Count", host},
      {"Requests4XX", MetricType::kCounter, "Count", host},
      {"Requests5XX", MetricType::kCounter, "Count", host},
      {"ts_inference_requests_total", MetricType::kCounter, "Count", model},
      {"ts_inference_latency_microseconds", MetricType::kCounter, "Microseconds", model},
      {"ts_queue_latency_microseconds", MetricType::kCounter, "Microseconds", model},
      {"QueueTime", MetricType::kGauge, "Milliseconds", host},
      {"WorkerThreadTime", MetricType::kGauge, "Milliseconds", host},
      {"WorkerLoadTime", MetricType::kGauge, "Milliseconds", {"WorkerName", "Level", "Hostname"}},
      {"HandlerTime", MetricType::kGauge, "ms", {"ModelName", "Level", "Hostname"}},
      {"PredictionTime", MetricType::kGauge, "ms", {"ModelName", "Level", "Hostname"}},
      {"CPUUtilization", MetricType::kGauge, "Percent", host},
      {"MemoryUtilization", MetricType::kGauge, "Percent", host},
      {"DiskUtilization", MetricType::kGauge, "Percent", host},
      {"MemoryUsed", MetricType::kGauge, "Megabytes", host},
      {"MemoryAvailable", MetricType::kGauge, "Megabytes", host},
      {"DiskUsage", MetricType::kGauge, "Gigabytes", host},
      {"DiskAvailable", MetricType::kGauge, "Gigabytes", host},
      {"GPUUtilization", MetricType::kGauge, "Percent", gpu},
      {"GPUMemoryUtilization", MetricType::kGauge, "Percent", gpu},
      {"GPUMemoryUsed", MetricType::kGauge, "Megabytes", gpu},
  };
  for (const Want& w : want) {
    const FamilyDesc* d = FindDesc(*fams, w.name);
    ASSERT_NE(d, nullptr) << w.name;
    EXPECT_EQ(d->type, w.type) << w.name;
    EXPECT_EQ(d->unit, w.unit) << w.name;
    EXPECT_EQ(d->label_names, w.labels) << w.name;
    EXPECT_EQ(d->help, TorchServeHelp(w.type, w.unit));
  }
  EXPECT_EQ(FindDesc(*fams, "HandlerTime")->section, MetricSection::kModel);
  EXPECT_EQ(FindDesc(*fams, "Requests2XX")->section, MetricSection::kFrontend);
}

TEST(MetricsYamlTest, HostnameAppendedToModelMetricsOnly) {
  auto fams = ParseMetricsYaml(R"(
ts_metrics:
  gauge:
    - {name: A, unit: ms, dimensions: [Level]}
model_metrics:
  counter:
    - {name: B, unit: Count, dimensions: [ModelName]}
    - {name: C, unit: Count, dimensions: [ModelName, Hostname, Level]}
)",
                               "m.yaml");
  ASSERT_TRUE(fams.ok()) << fams.status().message();
  EXPECT_EQ(FindDesc(*fams, "A")->label_names, (std::vector<std::string>{"Level"}));
  EXPECT_EQ(FindDesc(*fams, "B")->label_names, (std::vector<std::string>{"ModelName", "Hostname"}));
  EXPECT_EQ(FindDesc(*fams, "C")->label_names,
            (std::vector<std::string>{"ModelName", "Hostname", "Level"}));
}

TEST(MetricsYamlTest, BucketsAndHelpKeys) {
  auto fams = ParseMetricsYaml(R"(
model_metrics:
  histogram:
    - name: ts_request_duration_seconds
      unit: Seconds
      help: "End-to-end request duration."
      dimensions: [model_name]
      buckets: [0.01, 0.1, 1, .inf]
    - name: plain
      unit: Seconds
)",
                               "m.yaml");
  ASSERT_TRUE(fams.ok()) << fams.status().message();
  const FamilyDesc* d = FindDesc(*fams, "ts_request_duration_seconds");
  EXPECT_EQ(d->buckets, (std::vector<double>{0.01, 0.1, 1.0}));  // +Inf is implicit
  EXPECT_EQ(d->help, "End-to-end request duration.");
  EXPECT_EQ(FindDesc(*fams, "plain")->buckets, DefaultBuckets());
}

struct BadCase {
  const char* yaml;
  const char* message;
};

class MetricsYamlErrorTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(MetricsYamlErrorTest, NamesFileLineAndProblem) {
  auto fams = ParseMetricsYaml(GetParam().yaml, "my.yaml");
  ASSERT_FALSE(fams.ok());
  EXPECT_EQ(fams.status().message(), GetParam().message);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, MetricsYamlErrorTest,
    ::testing::Values(
        BadCase{"ts_metrics:\n  counter:\n    - unit: Count\n",
                "my.yaml:3: metric entry needs a \"name\""},
        BadCase{"ts_metrics:\n  summary:\n    - {name: A}\n",
                "my.yaml:2: unknown metric type \"summary\" in ts_metrics (expected counter, "
                "gauge or histogram)"},
        BadCase{"ts_metrics:\n  gauge:\n    - {name: A}\n    - {name: A}\n",
                "my.yaml:4: metric \"A\" is defined twice"},
        BadCase{"ts_metrics:\n  gauge:\n    - {name: 1bad}\n",
                "my.yaml:3: invalid metric name \"1bad\" (allowed: [a-zA-Z_:][a-zA-Z0-9_:]*)"},
        BadCase{"ts_metrics:\n  gauge:\n    - {name: A, dimensions: [\"bad-dim\"]}\n",
                "my.yaml:3: metric \"A\": invalid dimension name \"bad-dim\""},
        BadCase{"ts_metrics:\n  histogram:\n    - name: H\n      buckets: [1, 0.5]\n",
                "my.yaml:4: histogram \"H\": buckets must be strictly ascending"},
        BadCase{"ts_metrics:\n  gauge:\n    - name: G\n      buckets: [1]\n",
                "my.yaml:4: metric \"G\": buckets are only for histograms"},
        BadCase{"ts_metrics:\n  gauge:\n    - {name: G, colour: red}\n",
                "my.yaml:3: metric \"G\": unknown key \"colour\" (allowed: name, unit, "
                "dimensions, buckets, help)"},
        BadCase{"metrics:\n  - a\n",
                "my.yaml:1: unknown top-level key \"metrics\" (allowed: dimensions, ts_metrics, "
                "model_metrics)"},
        BadCase{"ts_metrics:\n  gauge: [\n", "my.yaml:3: end of sequence flow not found"},
        BadCase{"ts_metrics:\n  gauge:\n    - name: G\n      dimensions: [*undefined]\n",
                "my.yaml:4: the referenced anchor is not defined"},
        BadCase{"", "my.yaml: the file defines no metrics"}));

TEST(MetricsYamlTest, MissingFileIsNamed) {
  auto fams = LoadMetricsYamlFile("/nonexistent/metrics.yaml");
  ASSERT_FALSE(fams.ok());
  EXPECT_EQ(fams.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(fams.status().message(),
            "metrics config: cannot read /nonexistent/metrics.yaml: No such file or directory");
}

TEST(MetricsYamlTest, AddFamiliesRejectsClashWithExisting) {
  Registry r;
  FamilyDesc d;
  d.name = "Requests2XX";
  ASSERT_TRUE(r.Add(d).ok());
  auto fams = ParseMetricsYaml(DefaultMetricsYaml(), "metrics.yaml");
  EXPECT_FALSE(AddFamilies(*fams, &r).ok());
}

}  // namespace
}  // namespace tserve::metrics
