#include "serving/handler_metrics.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "metrics/metrics_yaml.h"

namespace tserve::serving {
namespace {

constexpr const char* kYaml = R"(
dimensions:
  - &model_name "ModelName"
  - &level "Level"
ts_metrics:
  counter:
    - name: Requests2XX
      unit: Count
      dimensions: [*level, "Hostname"]
model_metrics:
  counter:
    - name: Requests
      unit: Count
      dimensions: [*model_name, *level]
    - name: Tokens
      unit: Count
      dimensions: [*model_name, *level, "Kind"]
  gauge:
    - name: Latency
      unit: ms
      dimensions: [*model_name, *level]
    - name: LatencyLong
      unit: Milliseconds
      dimensions: [*model_name, *level]
    - name: Memory
      unit: MB
      dimensions: [*model_name, *level]
    - name: Load
      unit: Percent
      dimensions: [*model_name]
    - name: Seconds
      unit: s
      dimensions: [*model_name, *level]
  histogram:
    - name: Sizes
      unit: Count
      dimensions: [*model_name, *level]
      buckets: [1, 10, 100]
)";

// One series as read back through Registry::Collect: its label values and value.
struct Seen {
  std::vector<std::string> labels;
  double value;
  bool operator==(const Seen&) const = default;
};

void PrintTo(const Seen& s, std::ostream* os) {
  *os << "{";
  for (const auto& l : s.labels) *os << l << ",";
  *os << "} " << s.value;
}

class HandlerMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto fams = metrics::ParseMetricsYaml(kYaml, "metrics.yaml");
    ASSERT_TRUE(fams.ok()) << fams.status().message();
    Status s = metrics::AddFamilies(std::move(*fams), &registry_);
    ASSERT_TRUE(s.ok()) << s.message();
  }

  std::vector<Seen> Read(const std::string& name) const {
    metrics::Snapshot snap =
        registry_.Collect([&](const metrics::FamilyDesc& d) { return d.name == name; });
    std::vector<Seen> out;
    for (const auto& f : snap.families) {
      if (f.desc->name != name) continue;
      for (size_t i = 0; i < f.series.size(); ++i) {
        out.push_back({f.series[i]->label_values(), f.values[i]});
      }
    }
    return out;
  }

  // The message of the MetricError `fn` throws ("" if none).
  template <typename Fn>
  static std::string ErrorOf(Fn fn) {
    try {
      fn();
    } catch (const MetricError& e) {
      return e.what();
    }
    return "";
  }

  metrics::Registry registry_;
  HandlerMetrics m_{&registry_, "mnist", "host1"};
};

using L = std::vector<std::string>;

TEST_F(HandlerMetricsTest, CounterAddsWithDefaultDimensions) {
  m_.AddCounter("Requests");
  m_.AddCounter("Requests", 2.5);
  EXPECT_EQ(Read("Requests"), (std::vector<Seen>{{L{"mnist", "Model", "host1"}, 3.5}}));
}

TEST_F(HandlerMetricsTest, CallerDimensionsWinAndAreBoundByName) {
  // Given out of order; bound to the yaml order by name.
  m_.AddCounter("Requests", 1, {{"Level", "Custom"}, {"ModelName", "other"}});
  m_.AddCounter("Tokens", 5, {{"Kind", "input"}});
  m_.AddCounter("Tokens", 7, {{"Kind", "output"}, {"Hostname", "h2"}});
  EXPECT_EQ(Read("Requests"), (std::vector<Seen>{{L{"other", "Custom", "host1"}, 1}}));
  EXPECT_EQ(Read("Tokens"), (std::vector<Seen>{{L{"mnist", "Model", "input", "host1"}, 5},
                                               {L{"mnist", "Model", "output", "h2"}, 7}}));
}

TEST_F(HandlerMetricsTest, GaugesSet) {
  m_.AddTime("Latency", 12.5);
  m_.AddTime("Latency", 7.25);
  m_.AddTime("LatencyLong", 3, {}, "ms");  // "ms" and "Milliseconds" are one unit
  m_.AddSize("Memory", 100);
  m_.AddSize("Memory", 64, {}, "Megabytes");
  m_.AddPercent("Load", 42);
  m_.AddTime("Seconds", 1.5, {}, "s");
  m_.AddMetric("Latency", 9, "whatever");
  EXPECT_EQ(Read("Latency"), (std::vector<Seen>{{L{"mnist", "Model", "host1"}, 9}}));
  EXPECT_EQ(Read("LatencyLong"), (std::vector<Seen>{{L{"mnist", "Model", "host1"}, 3}}));
  EXPECT_EQ(Read("Memory"), (std::vector<Seen>{{L{"mnist", "Model", "host1"}, 64}}));
  // Load declares ModelName only (plus Hostname): no Level is added.
  EXPECT_EQ(Read("Load"), (std::vector<Seen>{{L{"mnist", "host1"}, 42}}));
  EXPECT_EQ(Read("Seconds"), (std::vector<Seen>{{L{"mnist", "Model", "host1"}, 1.5}}));
}

TEST_F(HandlerMetricsTest, HistogramObserves) {
  m_.AddMetric("Sizes", 5, "Count");
  m_.AddMetric("Sizes", 50, "Count");
  m_.AddMetric("Sizes", 500, "Count");
  m_.AddTime("Sizes", 0.5, {}, "Count");  // AddTime may feed a histogram of its unit
  metrics::Snapshot snap =
      registry_.Collect([](const metrics::FamilyDesc& d) { return d.name == "Sizes"; });
  ASSERT_EQ(snap.families.size(), 1u);
  const auto& f = snap.families[0];
  ASSERT_EQ(f.series.size(), 1u);
  EXPECT_EQ(f.series[0]->label_values(), (L{"mnist", "Model", "host1"}));
  EXPECT_EQ(f.values[0], 555.5);
  auto c = f.Cumulative(0);
  EXPECT_EQ(std::vector<uint64_t>(c.begin(), c.end()), (std::vector<uint64_t>{1, 2, 3, 4}));
}

TEST_F(HandlerMetricsTest, CounterOnAnyApiThroughAddMetric) {
  m_.AddMetric("Requests", 4, "Count", {{"Level", "L"}});
  EXPECT_EQ(Read("Requests"), (std::vector<Seen>{{L{"mnist", "L", "host1"}, 4}}));
}

TEST_F(HandlerMetricsTest, UndefinedMetric) {
  EXPECT_EQ(ErrorOf([&] { m_.AddCounter("Nope"); }),
            "custom metric \"Nope\" is not defined in metrics.yaml (model_metrics)");
  EXPECT_EQ(ErrorOf([&] { m_.AddCounter("Requests2XX"); }),
            "custom metric \"Requests2XX\" is not defined in metrics.yaml (model_metrics); it "
            "is a ts_metrics metric, which handlers cannot record");
  EXPECT_TRUE(Read("Requests2XX").empty());
}

TEST_F(HandlerMetricsTest, TypeMismatch) {
  EXPECT_EQ(ErrorOf([&] { m_.AddCounter("Latency"); }),
            "custom metric \"Latency\" is a gauge in metrics.yaml; AddCounter records a counter");
  EXPECT_EQ(ErrorOf([&] { m_.AddCounter("Sizes"); }),
            "custom metric \"Sizes\" is a histogram in metrics.yaml; AddCounter records a "
            "counter");
  EXPECT_EQ(ErrorOf([&] { m_.AddTime("Requests", 1, {}, "Count"); }),
            "custom metric \"Requests\" is a counter in metrics.yaml; AddTime records a gauge (or "
            "a histogram): use AddCounter or AddMetric");
  EXPECT_EQ(ErrorOf([&] { m_.AddPercent("Requests", 1); }),
            "custom metric \"Requests\" is a counter in metrics.yaml; AddPercent records a gauge "
            "(or a histogram): use AddCounter or AddMetric");
  // Also once the series is cached.
  m_.AddTime("Latency", 1);
  EXPECT_EQ(ErrorOf([&] { m_.AddCounter("Latency"); }),
            "custom metric \"Latency\" is a gauge in metrics.yaml; AddCounter records a counter");
  EXPECT_EQ(Read("Latency"), (std::vector<Seen>{{L{"mnist", "Model", "host1"}, 1}}));
}

TEST_F(HandlerMetricsTest, UnitMismatch) {
  EXPECT_EQ(ErrorOf([&] { m_.AddTime("Latency", 1, {}, "s"); }),
            "custom metric \"Latency\" has unit \"ms\" in metrics.yaml, but AddTime was given "
            "unit \"s\"");
  EXPECT_EQ(ErrorOf([&] { m_.AddSize("Memory", 1, {}, "GB"); }),
            "custom metric \"Memory\" has unit \"MB\" in metrics.yaml, but AddSize was given "
            "unit \"GB\"");
  EXPECT_EQ(ErrorOf([&] { m_.AddTime("Seconds", 1); }),
            "custom metric \"Seconds\" has unit \"s\" in metrics.yaml, but AddTime was given "
            "unit \"ms\"");
  m_.AddTime("Latency", 2);  // cached now; the unit is still checked
  EXPECT_EQ(ErrorOf([&] { m_.AddTime("Latency", 1, {}, "us"); }),
            "custom metric \"Latency\" has unit \"ms\" in metrics.yaml, but AddTime was given "
            "unit \"us\"");
  EXPECT_EQ(Read("Latency"), (std::vector<Seen>{{L{"mnist", "Model", "host1"}, 2}}));
}

TEST_F(HandlerMetricsTest, MissingDimension) {
  EXPECT_EQ(ErrorOf([&] { m_.AddCounter("Tokens", 1); }),
            "custom metric \"Tokens\": dimension \"Kind\" was not given (metrics.yaml declares "
            "ModelName, Level, Kind, Hostname)");
}

TEST_F(HandlerMetricsTest, ExtraDimensions) {
  EXPECT_EQ(ErrorOf([&] {
              m_.AddCounter("Requests", 1, {{"Color", "red"}});
            }),
            "custom metric \"Requests\": dimension \"Color\" is not declared in metrics.yaml "
            "(declared: ModelName, Level, Hostname)");
  EXPECT_EQ(ErrorOf([&] {
              m_.AddPercent("Load", 1, {{"Level", "Model"}, {"Shape", "x"}});
            }),
            "custom metric \"Load\": dimensions \"Level\", \"Shape\" are not declared in "
            "metrics.yaml (declared: ModelName, Hostname)");
  EXPECT_EQ(ErrorOf([&] {
              m_.AddCounter("Requests", 1, {{"Level", "a"}, {"Level", "b"}});
            }),
            "custom metric \"Requests\": dimension \"Level\" given twice");
  EXPECT_TRUE(Read("Requests").empty());
}

TEST_F(HandlerMetricsTest, NegativeCounterIncrement) {
  EXPECT_EQ(ErrorOf([&] { m_.AddCounter("Requests", -1); }),
            "custom metric \"Requests\" is a counter: AddCounter needs a value >= 0, got -1");
  EXPECT_EQ(ErrorOf([&] { m_.AddMetric("Requests", -0.5, "Count"); }),
            "custom metric \"Requests\" is a counter: AddMetric needs a value >= 0, got -0.5");
}

TEST_F(HandlerMetricsTest, ErrorsAreInvalidArgument) {
  try {
    m_.AddCounter("Nope");
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("Nope"), std::string::npos);
  }
}

TEST_F(HandlerMetricsTest, DistinctDimensionValuesAreDistinctSeries) {
  for (int i = 0; i < 3; ++i) {
    m_.AddCounter("Tokens", 1, {{"Kind", "a"}});
    m_.AddCounter("Tokens", 1, {{"Kind", "b"}});
    m_.AddCounter("Tokens", 1, {{"Kind", "ab"}});
  }
  EXPECT_EQ(Read("Tokens"), (std::vector<Seen>{{L{"mnist", "Model", "a", "host1"}, 3},
                                               {L{"mnist", "Model", "ab", "host1"}, 3},
                                               {L{"mnist", "Model", "b", "host1"}, 3}}));
}

TEST_F(HandlerMetricsTest, ManyDistinctDimensionValuesBeyondTheCache) {
  constexpr int kKinds = 1500;  // more than the cache keeps
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < kKinds; ++i) m_.AddCounter("Tokens", 1, {{"Kind", std::to_string(i)}});
  }
  const std::vector<Seen> seen = Read("Tokens");
  ASSERT_EQ(seen.size(), static_cast<size_t>(kKinds));
  for (const Seen& s : seen) EXPECT_EQ(s.value, 2) << s.labels[2];
}

TEST_F(HandlerMetricsTest, TwoModelsShareTheRegistry) {
  HandlerMetrics other(&registry_, "resnet", "host1");
  m_.AddCounter("Requests");
  other.AddCounter("Requests", 2);
  EXPECT_EQ(Read("Requests"), (std::vector<Seen>{{L{"mnist", "Model", "host1"}, 1},
                                                 {L{"resnet", "Model", "host1"}, 2}}));
}

TEST_F(HandlerMetricsTest, ConcurrentCountersAreExact) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 10000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        m_.AddCounter("Requests");
        m_.AddCounter("Tokens", 1, {{"Kind", t % 2 == 0 ? "even" : "odd"}});
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(Read("Requests"),
            (std::vector<Seen>{{L{"mnist", "Model", "host1"}, kThreads * kPerThread}}));
  EXPECT_EQ(Read("Tokens"),
            (std::vector<Seen>{{L{"mnist", "Model", "even", "host1"}, kThreads * kPerThread / 2},
                               {L{"mnist", "Model", "odd", "host1"}, kThreads * kPerThread / 2}}));
}

}  // namespace
}  // namespace tserve::serving
