// The scenarios of metrics_bench.cc written against prometheus-cpp 1.0.1 (Debian's
// prometheus-cpp-dev), as a reference measured on the same machine in the same run.
// A separate executable: tserve itself never links prometheus-cpp.

#include <benchmark/benchmark.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include "common/malloc_tuning.h"

#include <map>
#include <memory>
#include <ostream>
#include <streambuf>
#include <string>
#include <vector>

#include "bench/scenario.h"

namespace tserve::bench {
namespace {

constexpr const char* kCounterHelp = "Torchserve prometheus counter metric with unit: Count";
constexpr const char* kGaugeHelp = "Torchserve prometheus gauge metric with unit: Bytes";
constexpr const char* kHistogramHelp = "Torchserve prometheus histogram metric with unit: Count";

prometheus::Labels SeriesLabels(const std::string& model, const std::string& version) {
  return {{"model_name", model}, {"model_version", version}, {"hostname", Hostname()}};
}

std::shared_ptr<prometheus::Registry> BuildRegistry(const std::vector<FamilyPlan>& plan) {
  auto registry = std::make_shared<prometheus::Registry>();
  const std::vector<double>& obs = Observations();
  size_t serial = 0;
  for (const FamilyPlan& f : plan) {
    switch (f.kind) {
      case Kind::kCounter: {
        auto& family =
            prometheus::BuildCounter().Name(f.name).Help(kCounterHelp).Register(*registry);
        for (size_t i = 0; i < f.series; ++i, ++serial) {
          family.Add(SeriesLabels(ModelName(i), ModelVersion(i))).Increment(CounterValue(serial));
        }
        break;
      }
      case Kind::kGauge: {
        auto& family = prometheus::BuildGauge().Name(f.name).Help(kGaugeHelp).Register(*registry);
        for (size_t i = 0; i < f.series; ++i, ++serial) {
          family.Add(SeriesLabels(ModelName(i), ModelVersion(i))).Set(GaugeValue(serial));
        }
        break;
      }
      case Kind::kHistogram: {
        auto& family =
            prometheus::BuildHistogram().Name(f.name).Help(kHistogramHelp).Register(*registry);
        for (size_t i = 0; i < f.series; ++i, ++serial) {
          auto& h = family.Add(SeriesLabels(ModelName(i), ModelVersion(i)), DefaultBuckets());
          for (size_t k = 0; k < kObservationsPerHistogram; ++k) {
            h.Observe(obs[(serial * 31 + k) & 1023]);
          }
        }
        break;
      }
    }
  }
  return registry;
}

const prometheus::Registry& CounterRegistry(size_t series) {
  static std::map<size_t, std::shared_ptr<prometheus::Registry>> cache;
  auto& r = cache[series];
  if (!r) r = BuildRegistry(CounterPlan(series));
  return *r;
}

const prometheus::Registry& MixedRegistry() {
  static std::shared_ptr<prometheus::Registry> r = BuildRegistry(MixedPlan());
  return *r;
}

void SetSeriesCounters(benchmark::State& state, size_t series, size_t bytes) {
  state.counters["per_series"] = benchmark::Counter(
      static_cast<double>(series),
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["series"] = static_cast<double>(series);
  state.counters["bytes"] = static_cast<double>(bytes);
}

// ---- Recording path ----

prometheus::Counter& SharedCounter() {
  static prometheus::Registry registry;
  static prometheus::Counter& counter = prometheus::BuildCounter()
                                            .Name("bench_shared_total")
                                            .Help(kCounterHelp)
                                            .Register(registry)
                                            .Add(SeriesLabels("m", "1.0"));
  return counter;
}

void BM_CounterInc(benchmark::State& state) {
  prometheus::Counter& c = SharedCounter();
  for (auto _ : state) c.Increment();
}
BENCHMARK(BM_CounterInc)->Threads(1)->Threads(2);

void BM_CounterIncDistinct(benchmark::State& state) {
  static prometheus::Registry registry;
  static auto& family =
      prometheus::BuildCounter().Name("bench_distinct_total").Help(kCounterHelp).Register(registry);
  prometheus::Counter& c = family.Add(SeriesLabels(ModelName(state.thread_index()), "1.0"));
  for (auto _ : state) c.Increment();
}
BENCHMARK(BM_CounterIncDistinct)->Threads(2);

void BM_GaugeSet(benchmark::State& state) {
  static prometheus::Registry registry;
  static prometheus::Gauge& gauge = prometheus::BuildGauge()
                                        .Name("bench_gauge")
                                        .Help(kGaugeHelp)
                                        .Register(registry)
                                        .Add(SeriesLabels("m", "1.0"));
  double v = 0.0;
  for (auto _ : state) {
    gauge.Set(v);
    v += 1.0;
  }
}
BENCHMARK(BM_GaugeSet);

void BM_HistogramObserve(benchmark::State& state) {
  static prometheus::Registry registry;
  static prometheus::Histogram& hist = prometheus::BuildHistogram()
                                           .Name("bench_latency_seconds")
                                           .Help(kHistogramHelp)
                                           .Register(registry)
                                           .Add(SeriesLabels("m", "1.0"), DefaultBuckets());
  const double* obs = Observations().data();
  size_t i = 0;
  for (auto _ : state) {
    hist.Observe(obs[i & 1023]);
    ++i;
  }
}
BENCHMARK(BM_HistogramObserve)->Threads(1)->Threads(2);

// ---- Scrape path ----
// As in metrics_bench.cc: BM_Render* is a scrape (Collect, then TextSerializer into a fresh
// string, as prometheus-cpp's exposer does); BM_RenderText* serializes a collected
// snapshot into a reused buffer.

// An ostream that appends to a std::string kept across iterations.
class StringSink : public std::streambuf {
 public:
  explicit StringSink(std::string* out) : out_(out) {}

 protected:
  int_type overflow(int_type c) override {
    if (c != traits_type::eof()) out_->push_back(static_cast<char>(c));
    return c;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    out_->append(s, static_cast<size_t>(n));
    return n;
  }

 private:
  std::string* out_;
};

void BM_Render(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  const prometheus::Registry& registry = CounterRegistry(n);
  const prometheus::TextSerializer serializer;
  size_t bytes = 0;
  for (auto _ : state) {
    std::string out = serializer.Serialize(registry.Collect());
    bytes = out.size();
    benchmark::DoNotOptimize(out.data());
  }
  SetSeriesCounters(state, n, bytes);
}
BENCHMARK(BM_Render)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMicrosecond);

void BM_Collect(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  const prometheus::Registry& registry = CounterRegistry(n);
  for (auto _ : state) {
    std::vector<prometheus::MetricFamily> families = registry.Collect();
    benchmark::DoNotOptimize(families.data());
  }
  SetSeriesCounters(state, n, 0);
}
BENCHMARK(BM_Collect)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMicrosecond);

void SerializeReused(benchmark::State& state, const std::vector<prometheus::MetricFamily>& fams,
                     size_t series) {
  const prometheus::TextSerializer serializer;
  std::string out;
  StringSink sink(&out);
  std::ostream os(&sink);
  serializer.Serialize(os, fams);  // warm-up: grow the buffer once, outside the timing
  for (auto _ : state) {
    out.clear();
    serializer.Serialize(os, fams);
    benchmark::DoNotOptimize(out.data());
  }
  SetSeriesCounters(state, series, out.size());
}

void BM_RenderText(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  SerializeReused(state, CounterRegistry(n).Collect(), n);
}
BENCHMARK(BM_RenderText)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMicrosecond);

void BM_RenderMixed(benchmark::State& state) {
  const prometheus::Registry& registry = MixedRegistry();
  const prometheus::TextSerializer serializer;
  size_t bytes = 0;
  for (auto _ : state) {
    std::string out = serializer.Serialize(registry.Collect());
    bytes = out.size();
    benchmark::DoNotOptimize(out.data());
  }
  SetSeriesCounters(state, kMixedSeries, bytes);
}
BENCHMARK(BM_RenderMixed)->Unit(benchmark::kMicrosecond);

void BM_CollectMixed(benchmark::State& state) {
  const prometheus::Registry& registry = MixedRegistry();
  for (auto _ : state) {
    std::vector<prometheus::MetricFamily> families = registry.Collect();
    benchmark::DoNotOptimize(families.data());
  }
  SetSeriesCounters(state, kMixedSeries, 0);
}
BENCHMARK(BM_CollectMixed)->Unit(benchmark::kMicrosecond);

void BM_RenderTextMixed(benchmark::State& state) {
  SerializeReused(state, MixedRegistry().Collect(), kMixedSeries);
}
BENCHMARK(BM_RenderTextMixed)->Unit(benchmark::kMicrosecond);

// prometheus-cpp has no name[] filter; BM_RenderFiltered has no counterpart here.

}  // namespace
}  // namespace tserve::bench

// The server tunes malloc at startup (common/malloc_tuning.h); so do both benchmarks, so
// that render figures are what a scrape costs in the server.
int main(int argc, char** argv) {
  tserve::TuneMallocForServer();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
