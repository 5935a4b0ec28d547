// The cost of the metrics one successful inference request records, at batch size 1:
// exactly the calls InferenceApi::Predict, WorkerPool::RunBatch and WorkerPool::Finish
// (src/api/inference_api.cc, src/serving/worker_pool.cc) and the HTTP layer's response
// observer make, through the pointers ModelMetrics::Resolve pre-resolves, into a registry
// built from the default metrics.yaml as main does. bench/run.sh relates the figure to the
// per-request time bench/serving_load.sh measured at noop's peak throughput.
//
//   BM_RecordRequest           the recording calls alone, on durations prepared in advance
//   BM_RecordRequestWithClock  the same plus the 8 steady_clock reads the request path makes
//                              to obtain those durations (arrival, enqueued, picked, the 4
//                              phase stamps, end)
//   BM_ClockNow                one steady_clock::now(), for scale
// The /threads:2 variants record from 2 threads into the same series, as 2 I/O threads and
// 2 workers do at peak.

#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "api/metrics_api.h"
#include "common/strings.h"
#include "http/server.h"
#include "metrics/metrics_yaml.h"
#include "metrics/registry.h"
#include "serving/job.h"
#include "serving/model_metrics.h"

namespace tserve::bench {
namespace {

using serving::Clock;

void Must(const Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "benchmark setup failed: %s\n", s.message().c_str());
    std::abort();
  }
}

template <typename T>
T Must(StatusOr<T> s) {
  Must(s.status());
  return std::move(*s);
}

// The conversions of worker_pool.cc.
double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
double Millis(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
double Micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

// What main builds: the default metrics.yaml's families, one model's series, the HTTP
// response counters. Shared by all benchmark threads (they record into the same series).
struct Server {
  metrics::Registry registry;
  serving::ModelMetrics metrics;
  std::unique_ptr<api::ResponseCounters> counters;
  http::ResponseObserver* observer = nullptr;  // the HTTP layer calls through the interface

  Server() {
    Must(metrics::AddFamilies(
        Must(metrics::ParseMetricsYaml(metrics::DefaultMetricsYaml(), "metrics.yaml")), &registry));
    const std::string host = LocalHostname();
    metrics = Must(serving::ModelMetrics::Resolve(&registry, "noop", "1.0", host));
    counters = Must(api::ResponseCounters::Create(&registry, host));
    observer = counters.get();
  }
};

Server& TheServer() {
  static Server server;
  return server;
}

// The durations of one request: total (arrival to end), queued (enqueued to picked),
// handler and prediction (the phases), worker (picked to end).
struct Timing {
  Clock::duration total, queued, handler, prediction, worker;
};

// 1024 requests as noop sees them near its peak: totals log-uniform over 0.2-5 ms (wrk's
// p50 at 64 connections is ~1 ms), a queue wait of 10-90% of it, handler 1-20 us. Spread
// so the histograms' bucket scans stop at varying buckets, as they would.
const std::vector<Timing>& Timings() {
  static const std::vector<Timing> timings = [] {
    std::vector<Timing> t(1024);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    auto uniform = [&x] {  // xorshift64*, deterministic
      x ^= x >> 12;
      x ^= x << 25;
      x ^= x >> 27;
      return static_cast<double>((x * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
    };
    auto ns = [](double s) {
      return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
    };
    for (Timing& r : t) {
      const double total = 0.0002 * std::pow(25.0, uniform());
      const double handler = 1e-6 * std::pow(20.0, uniform());
      r.total = ns(total);
      r.queued = ns(total * (0.1 + 0.8 * uniform()));
      r.handler = ns(handler);
      r.prediction = ns(handler * 0.3);
      r.worker = ns(handler + 2e-6);
    }
    return t;
  }();
  return timings;
}

// One successful request at batch size 1, call for call as the server records it.
inline void RecordRequest(Server& s, const Timing& t, bool explicit_version) {
  const serving::ModelMetrics& m = s.metrics;
  const serving::ModelMetrics::VersionLabelled& l = explicit_version ? m.by_explicit : m.by_default;
  // InferenceApi::Predict, on arrival.
  l.requests->Inc();
  // WorkerPool::RunBatch: the batch's share (the whole batch at batch size 1).
  m.batch_size->Observe(1.0);
  m.handler_time_ms->Set(Millis(t.handler));
  m.prediction_time_ms->Set(Millis(t.prediction));
  m.handler_duration->Observe(Seconds(t.handler));
  m.worker_thread_time_ms->Set(Millis(t.worker - t.handler));
  // WorkerPool::Finish.
  l.latency_us->Add(Micros(t.total));
  l.queue_latency_us->Add(Micros(t.queued));
  m.queue_time_ms->Set(Millis(t.queued));
  m.request_duration->Observe(Seconds(t.total));
  m.queue_duration->Observe(Seconds(t.queued));
  // http::Connection::Write: Requests2XX.
  s.observer->OnResponse(200);
}

void BM_RecordRequest(benchmark::State& state) {
  Server& s = TheServer();
  const std::vector<Timing>& timings = Timings();
  size_t i = static_cast<size_t>(state.thread_index()) * 512;
  for (auto _ : state) {
    RecordRequest(s, timings[i++ & 1023], false);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RecordRequest)->Threads(1);
BENCHMARK(BM_RecordRequest)->Threads(2);

// The same calls with durations derived from clock reads, as the server does. The 8 reads
// stand where the request path makes them; their results are only used for the metrics
// (and the queue's deadline), so they are part of the instrumentation's price.
void BM_RecordRequestWithClock(benchmark::State& state) {
  Server& s = TheServer();
  const serving::ModelMetrics& m = s.metrics;
  const serving::ModelMetrics::VersionLabelled& l = m.by_default;
  for (auto _ : state) {
    const auto arrival = Clock::now();
    l.requests->Inc();
    const auto enqueued = Clock::now();
    const auto picked = Clock::now();
    const auto t0 = Clock::now();
    const auto t1 = Clock::now();
    const auto t2 = Clock::now();
    const auto t3 = Clock::now();
    const auto end = Clock::now();
    m.batch_size->Observe(1.0);
    m.handler_time_ms->Set(Millis(t3 - t0));
    m.prediction_time_ms->Set(Millis(t2 - t1));
    m.handler_duration->Observe(Seconds(t3 - t0));
    m.worker_thread_time_ms->Set(Millis((end - picked) - (t3 - t0)));
    const auto queued = picked - enqueued;
    l.latency_us->Add(Micros(end - arrival));
    l.queue_latency_us->Add(Micros(queued));
    m.queue_time_ms->Set(Millis(queued));
    m.request_duration->Observe(Seconds(end - arrival));
    m.queue_duration->Observe(Seconds(queued));
    s.observer->OnResponse(200);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RecordRequestWithClock)->Threads(1);
BENCHMARK(BM_RecordRequestWithClock)->Threads(2);

void BM_ClockNow(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(Clock::now());
  }
}
BENCHMARK(BM_ClockNow);

}  // namespace
}  // namespace tserve::bench

BENCHMARK_MAIN();
