#include "metrics/log_sink.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>

#include "metrics/metrics_yaml.h"
#include "metrics/registry.h"

namespace tserve::metrics {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class LogSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("TZ", "UTC", 1);
    tzset();
    char tmpl[] = "/tmp/tserve_log_sink_XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }
  std::string dir_;
};

TEST_F(LogSinkTest, FormatsTorchServeLines) {
  const FamilyDesc d{.name = "ts_inference_requests_total",
                     .help = "",
                     .unit = "Count",
                     .type = MetricType::kCounter,
                     .label_names = {"model_name", "model_version", "hostname"},
                     .buckets = {}};
  Counter c(&d, {"m", "default", "h"}, nullptr);
  EXPECT_EQ(FormatLogLine(c, 1.0, "ignored", 1689613225016),
            "2023-07-17T17:00:25,016 - ts_inference_requests_total.Count:1.0"
            "|#model_name:m,model_version:default|#hostname:h,timestamp:1689613225");
  const FamilyDesc h{.name = "HandlerTime",
                     .help = "",
                     .unit = "ms",
                     .type = MetricType::kGauge,
                     .label_names = {"ModelName", "Level", "Hostname"},
                     .buckets = {}};
  Gauge g(&h, {"mnist", "Model", "host1"}, nullptr);
  EXPECT_EQ(FormatLogLine(g, 71.77, "x", 1699061430000),
            "2023-11-04T01:30:30,000 - HandlerTime.ms:71.77|#ModelName:mnist,Level:Model"
            "|#hostname:host1,timestamp:1699061430");
}

TEST_F(LogSinkTest, RoutesBySectionAndSkipsLegacyFamilies) {
  auto sink = LogFileSink::Open(dir_ + "/nested/logs", "host1", {"ts_inference_requests_total"});
  ASSERT_TRUE(sink.ok()) << sink.status().message();
  (*sink)->SetClockForTest([] { return int64_t{1689613225016}; });
  Registry r(sink->get());
  auto fams = ParseMetricsYaml(DefaultMetricsYaml(), "metrics.yaml");
  ASSERT_TRUE(AddFamilies(*fams, &r).ok());
  (*r.CounterFor("Requests2XX", {{"Level", "Host"}, {"Hostname", "host1"}}))->Inc();
  (*r.GaugeFor("HandlerTime", {{"ModelName", "m"}, {"Level", "Model"}, {"Hostname", "host1"}}))
      ->Set(3.5);
  (*r.CounterFor("ts_inference_requests_total",
                 {{"model_name", "m"}, {"model_version", "1.0"}, {"hostname", "host1"}}))
      ->Inc();
  (*sink)->Flush();
  EXPECT_EQ(ReadAll(dir_ + "/nested/logs/ts_metrics.log"),
            "2023-07-17T17:00:25,016 - Requests2XX.Count:1.0|#Level:Host"
            "|#hostname:host1,timestamp:1689613225\n");
  EXPECT_EQ(ReadAll(dir_ + "/nested/logs/model_metrics.log"),
            "2023-07-17T17:00:25,016 - HandlerTime.ms:3.5|#ModelName:m,Level:Model"
            "|#hostname:host1,timestamp:1689613225\n");
}

TEST_F(LogSinkTest, UnwritableDirectoryIsAnError) {
  auto sink = LogFileSink::Open("/proc/no_such_dir", "h");
  ASSERT_FALSE(sink.ok());
  EXPECT_NE(sink.status().message().find("/proc/no_such_dir"), std::string::npos);
}

}  // namespace
}  // namespace tserve::metrics
