// Micro benchmarks of tserve's metrics core: the recording path (counter, gauge,
// histogram) and the scrape path (Collect, RenderText, both, filtered). The same scenarios
// are in prometheus_cpp_bench.cc; bench/run.sh prints the two side by side.

#include <benchmark/benchmark.h>
#include "common/malloc_tuning.h"

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench/scenario.h"
#include "metrics/metric.h"
#include "metrics/registry.h"
#include "metrics/text_format.h"

namespace tserve::bench {
namespace {

using metrics::Counter;
using metrics::FamilyDesc;
using metrics::Gauge;
using metrics::Histogram;
using metrics::Labels;
using metrics::MetricSection;
using metrics::MetricType;
using metrics::Registry;

template <typename T>
T Must(StatusOr<T> s) {
  if (!s.ok()) {
    std::fprintf(stderr, "benchmark setup failed: %s\n", s.status().message().c_str());
    std::abort();
  }
  return *s;
}

FamilyDesc Desc(const std::string& name, MetricType type) {
  FamilyDesc d;
  d.name = name;
  d.type = type;
  d.unit = type == MetricType::kGauge ? "Bytes" : "Count";
  d.help = metrics::TorchServeHelp(type, d.unit);
  d.section = MetricSection::kModel;
  d.label_names.assign(std::begin(kLabelNames), std::end(kLabelNames));
  if (type == MetricType::kHistogram) d.buckets = DefaultBuckets();
  return d;
}

Labels SeriesLabels(const std::string& model, const std::string& version) {
  return {{"model_name", model}, {"model_version", version}, {"hostname", Hostname()}};
}

// A registry filled per the plan, with every series holding a non-trivial value.
std::unique_ptr<Registry> BuildRegistry(const std::vector<FamilyPlan>& plan) {
  auto registry = std::make_unique<Registry>();
  const std::vector<double>& obs = Observations();
  size_t serial = 0;
  for (const FamilyPlan& f : plan) {
    MetricType type = f.kind == Kind::kCounter ? MetricType::kCounter
                      : f.kind == Kind::kGauge ? MetricType::kGauge
                                               : MetricType::kHistogram;
    metrics::Family* family = Must(registry->Add(Desc(f.name, type)));
    for (size_t i = 0; i < f.series; ++i, ++serial) {
      // Labels holds string_views: keep the strings alive while it is used.
      const std::string model = ModelName(i), version = ModelVersion(i);
      const Labels labels = SeriesLabels(model, version);
      switch (f.kind) {
        case Kind::kCounter:
          Must(family->GetCounter(labels))->Add(CounterValue(serial));
          break;
        case Kind::kGauge:
          Must(family->GetGauge(labels))->Set(GaugeValue(serial));
          break;
        case Kind::kHistogram: {
          Histogram* h = Must(family->GetHistogram(labels));
          for (size_t k = 0; k < kObservationsPerHistogram; ++k) {
            h->Observe(obs[(serial * 31 + k) & 1023]);
          }
          break;
        }
      }
    }
  }
  return registry;
}

// Registries are built once per size and kept: Google Benchmark calls a benchmark function
// several times while it sizes the iteration count, and 100k series take a while to build.
const Registry& CounterRegistry(size_t series) {
  static std::map<size_t, std::unique_ptr<Registry>> cache;
  auto& r = cache[series];
  if (!r) r = BuildRegistry(CounterPlan(series));
  return *r;
}

const Registry& MixedRegistry() {
  static std::unique_ptr<Registry> r = BuildRegistry(MixedPlan());
  return *r;
}

void SetSeriesCounters(benchmark::State& state, size_t series, size_t bytes) {
  // Seconds per series (the console shows e.g. "66n"); run.sh reports it in ns.
  state.counters["per_series"] = benchmark::Counter(
      static_cast<double>(series),
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["series"] = static_cast<double>(series);
  state.counters["bytes"] = static_cast<double>(bytes);
}

// ---- Recording path ----

// One counter shared by every thread: with 2 threads, both cores fight for one cache line.
Counter* SharedCounter() {
  static Registry registry;
  static Counter* counter =
      Must(Must(registry.Add(Desc("bench_shared_total", MetricType::kCounter)))
               ->GetCounter(SeriesLabels("m", "1.0")));
  return counter;
}

void BM_CounterInc(benchmark::State& state) {
  Counter* c = SharedCounter();
  for (auto _ : state) c->Inc();
}
BENCHMARK(BM_CounterInc)->Threads(1)->Threads(2);

// Each thread increments its own series (two models' request counters): no sharing
// unless the allocator put both series on one cache line.
void BM_CounterIncDistinct(benchmark::State& state) {
  static Registry registry;
  static metrics::Family* family =
      Must(registry.Add(Desc("bench_distinct_total", MetricType::kCounter)));
  Counter* c = Must(family->GetCounter(SeriesLabels(ModelName(state.thread_index()), "1.0")));
  for (auto _ : state) c->Inc();
}
BENCHMARK(BM_CounterIncDistinct)->Threads(2);

void BM_GaugeSet(benchmark::State& state) {
  static Registry registry;
  static Gauge* gauge = Must(Must(registry.Add(Desc("bench_gauge", MetricType::kGauge)))
                                 ->GetGauge(SeriesLabels("m", "1.0")));
  double v = 0.0;
  for (auto _ : state) {
    gauge->Set(v);
    v += 1.0;
  }
}
BENCHMARK(BM_GaugeSet);

// Default buckets, values spread over all 12 buckets (so the bucket scan runs its average
// length and the branch predictor cannot learn one path).
void BM_HistogramObserve(benchmark::State& state) {
  static Registry registry;
  static Histogram* hist =
      Must(Must(registry.Add(Desc("bench_latency_seconds", MetricType::kHistogram)))
               ->GetHistogram(SeriesLabels("m", "1.0")));
  const double* obs = Observations().data();
  size_t i = 0;
  for (auto _ : state) {
    hist->Observe(obs[i & 1023]);
    ++i;
  }
}
BENCHMARK(BM_HistogramObserve)->Threads(1)->Threads(2);

// ---- Scrape path ----
//
// Two views of the same work:
//  - BM_Render*: what GET /metrics does today (MetricsApi::HandleMetrics): Collect, then
//    RenderText into a fresh std::string. This includes growing that string, i.e. malloc,
//    and for bodies over glibc's mmap threshold (128 KiB) an mmap + page faults per scrape.
//  - BM_RenderText*: the renderer alone, on a snapshot taken once, into a buffer reused
//    across iterations (grown once before timing, then cleared, capacity kept): the
//    serializer's own cost per series, without allocation.
// bench/run.sh runs every benchmark in its own process, so the allocator's state (glibc
// raises its mmap threshold after large frees) does not leak from one benchmark to the next.

void BM_Render(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  const Registry& registry = CounterRegistry(n);
  size_t bytes = 0;
  for (auto _ : state) {
    std::string out;
    metrics::RenderText(registry.Collect(), {}, &out);
    bytes = out.size();
    benchmark::DoNotOptimize(out.data());
  }
  SetSeriesCounters(state, n, bytes);
}
BENCHMARK(BM_Render)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMicrosecond);

void BM_Collect(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  const Registry& registry = CounterRegistry(n);
  for (auto _ : state) {
    metrics::Snapshot snap = registry.Collect();
    benchmark::DoNotOptimize(snap.families.data());
  }
  SetSeriesCounters(state, n, 0);
}
BENCHMARK(BM_Collect)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMicrosecond);

void BM_RenderText(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  const metrics::Snapshot snap = CounterRegistry(n).Collect();
  std::string out;
  metrics::RenderText(snap, {}, &out);  // warm-up: grow the buffer once, outside the timing
  for (auto _ : state) {
    out.clear();
    metrics::RenderText(snap, {}, &out);
    benchmark::DoNotOptimize(out.data());
  }
  SetSeriesCounters(state, n, out.size());
}
BENCHMARK(BM_RenderText)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMicrosecond);

// 9,300 series: 6,000 counters, 3,000 gauges, 300 histograms (the reference size).
void BM_RenderMixed(benchmark::State& state) {
  const Registry& registry = MixedRegistry();
  size_t bytes = 0;
  for (auto _ : state) {
    std::string out;
    metrics::RenderText(registry.Collect(), {}, &out);
    bytes = out.size();
    benchmark::DoNotOptimize(out.data());
  }
  SetSeriesCounters(state, kMixedSeries, bytes);
}
BENCHMARK(BM_RenderMixed)->Unit(benchmark::kMicrosecond);

void BM_CollectMixed(benchmark::State& state) {
  const Registry& registry = MixedRegistry();
  for (auto _ : state) {
    metrics::Snapshot snap = registry.Collect();
    benchmark::DoNotOptimize(snap.families.data());
  }
  SetSeriesCounters(state, kMixedSeries, 0);
}
BENCHMARK(BM_CollectMixed)->Unit(benchmark::kMicrosecond);

void BM_RenderTextMixed(benchmark::State& state) {
  const metrics::Snapshot snap = MixedRegistry().Collect();
  std::string out;
  metrics::RenderText(snap, {}, &out);  // warm-up: grow the buffer once, outside the timing
  for (auto _ : state) {
    out.clear();
    metrics::RenderText(snap, {}, &out);
    benchmark::DoNotOptimize(out.data());
  }
  SetSeriesCounters(state, kMixedSeries, out.size());
}
BENCHMARK(BM_RenderTextMixed)->Unit(benchmark::kMicrosecond);

// GET /metrics?name[]=A&name[]=B on the 9,300-series mix: 2 of 48 families kept (400
// series). per_series is per series *in the registry*: Collect snapshots all of them.
void BM_RenderFiltered(benchmark::State& state) {
  const Registry& registry = MixedRegistry();
  const metrics::NameFilter filter(FilteredNames());
  metrics::RenderOptions options;
  options.sample_filter = &filter;
  size_t bytes = 0;
  for (auto _ : state) {
    std::string out;
    metrics::RenderText(registry.Collect(), options, &out);
    bytes = out.size();
    benchmark::DoNotOptimize(out.data());
  }
  SetSeriesCounters(state, kMixedSeries, bytes);
}
BENCHMARK(BM_RenderFiltered)->Unit(benchmark::kMicrosecond);

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
