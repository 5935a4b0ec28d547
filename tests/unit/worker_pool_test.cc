#include "serving/worker_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <future>
#include <map>
#include <mutex>
#include <system_error>
#include <thread>

#include "metrics/metrics_yaml.h"
#include "serving/handler_metrics.h"
#include "serving/job.h"

namespace tserve::serving {
namespace {

using namespace std::chrono_literals;

// A handler whose behaviour the test controls: echoes bodies, sleeps, or throws.
struct Script {
  std::atomic<int> batches{0};
  std::atomic<int> max_batch{0};
  std::chrono::milliseconds inference_time{0};
  std::atomic<bool> throw_next{false};
  std::atomic<bool> fail_initialize{false};
  std::atomic<bool> throw_int_on_initialize{false};
  std::mutex mu;
  std::vector<std::string> seen;       // every body the handler was given, in order
  std::vector<ModelContext> contexts;  // what each Initialize was given (under mu)
};

class ScriptedHandler : public Handler {
 public:
  explicit ScriptedHandler(Script* s) : s_(s) {}
  void Initialize(const ModelContext& context) override {
    {
      std::lock_guard<std::mutex> lock(s_->mu);
      s_->contexts.push_back(context);
    }
    if (s_->throw_int_on_initialize) throw 42;  // not a std::exception
    if (s_->fail_initialize) throw std::runtime_error("cannot load");
  }
  void Preprocess(Batch& b) override {
    s_->batches++;
    {
      std::lock_guard<std::mutex> lock(s_->mu);
      for (const auto& r : b.requests) s_->seen.emplace_back(r.body);
    }
    int n = static_cast<int>(b.requests.size());
    int m = s_->max_batch.load();
    while (n > m && !s_->max_batch.compare_exchange_weak(m, n)) {
    }
  }
  void Inference(Batch&) override {
    if (s_->inference_time.count() > 0) std::this_thread::sleep_for(s_->inference_time);
    if (s_->throw_next.exchange(false)) throw std::runtime_error("boom");
  }
  void Postprocess(Batch& b) override {
    for (const auto& r : b.requests)
      b.responses.push_back({200, "text/plain", std::string(r.body)});
  }

 private:
  Script* s_;
};

class WorkerPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto fams = metrics::ParseMetricsYaml(metrics::DefaultMetricsYaml(), "metrics.yaml");
    ASSERT_TRUE(fams.ok());
    ASSERT_TRUE(metrics::AddFamilies(*fams, &registry_).ok());
    factory_.RegisterBuiltin("scripted",
                             [this] { return std::make_unique<ScriptedHandler>(&script_); });
    auto m = ModelMetrics::Resolve(&registry_, "m", "1.0", "h");
    ASSERT_TRUE(m.ok()) << m.status().message();
    metrics_ = *m;
  }

  std::unique_ptr<WorkerPool> MakePool(
      int batch_size, std::chrono::milliseconds delay, size_t capacity = 100,
      std::function<std::thread(std::function<void()>)> start_thread = nullptr) {
    PoolOptions o;
    o.start_thread = std::move(start_thread);
    o.model_name = "m";
    o.model_version = "1.0";
    o.handler = "scripted";
    o.batch_size = batch_size;
    o.max_batch_delay = delay;
    o.queue_capacity = capacity;
    o.hostname = "h";
    return std::make_unique<WorkerPool>(o, &factory_, &registry_, &metrics_, nullptr,
                                        [this] { return port_++; });
  }

  // A job whose result lands in the returned future.
  // `gone` answers whether its client has left (empty: never).
  std::pair<std::shared_ptr<Job>, std::future<JobResult>> MakeJob(
      std::string body, std::chrono::milliseconds timeout = 10s,
      std::function<bool()> gone = nullptr) {
    std::promise<JobResult> promise;
    auto future = promise.get_future();
    auto now = Clock::now();
    auto job = std::make_shared<Job>(
        "id", std::move(body), "text/plain", false, now, now + timeout,
        ResponseSink::Of(
            [p = std::move(promise)](JobResult r) mutable { p.set_value(std::move(r)); },
            std::move(gone)));
    return {job, std::move(future)};
  }

  void WaitReady(WorkerPool& pool, int n) {
    for (int i = 0; i < 200 && pool.ready_workers() < n; ++i) std::this_thread::sleep_for(10ms);
    ASSERT_EQ(pool.ready_workers(), n);
  }

  metrics::Registry registry_;
  backend::HandlerFactory factory_;
  Script script_;
  ModelMetrics metrics_;
  int port_ = 9000;
};

TEST_F(WorkerPoolTest, AnswersEveryJobAndRecordsMetricsExactly) {
  auto pool = MakePool(1, 0ms);
  ASSERT_TRUE(pool->SetWorkerCount(2).ok());
  WaitReady(*pool, 2);
  std::vector<std::future<JobResult>> results;
  for (int i = 0; i < 50; ++i) {
    auto [job, fut] = MakeJob("req" + std::to_string(i));
    ASSERT_EQ(pool->Submit(job), SubmitResult::kAccepted);
    results.push_back(std::move(fut));
  }
  for (int i = 0; i < 50; ++i) {
    JobResult r = results[i].get();
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "req" + std::to_string(i));
  }
  EXPECT_EQ(metrics_.request_duration->Count(), 50u);
  EXPECT_EQ(metrics_.queue_duration->Count(), 50u);
  EXPECT_GT(metrics_.by_default.latency_us->Value(), 0.0);
  EXPECT_EQ(metrics_.by_explicit.latency_us->Value(), 0.0);
  EXPECT_EQ(metrics_.workers_ready->Value(), 2.0);
  pool->Shutdown();
}

TEST_F(WorkerPoolTest, EachHandlerIsInitialisedWithTheModelPartOfThePoolsSettings) {
  PoolOptions o;
  o.model_name = "m";
  o.model_version = "2.0";
  o.handler = "scripted";
  o.model_dir = "/models/m";
  o.serialized_file = "/models/m/w.pt";
  o.config = {{"k", "v"}};
  o.batch_size = 3;
  o.intra_op_threads = 2;
  o.hostname = "h";
  HandlerMetrics handler_metrics_owner(&registry_, "m", "h");
  tserve::Metrics* const handler_metrics = &handler_metrics_owner;
  WorkerPool pool(o, &factory_, &registry_, &metrics_, handler_metrics, [this] { return port_++; });
  ASSERT_TRUE(pool.SetWorkerCount(2).ok());
  WaitReady(pool, 2);
  std::lock_guard<std::mutex> lock(script_.mu);
  ASSERT_EQ(script_.contexts.size(), 2u);
  std::vector<int> ids;
  for (const ModelContext& c : script_.contexts) {
    EXPECT_EQ(c.model_name, "m");
    EXPECT_EQ(c.model_version, "2.0");
    EXPECT_EQ(c.handler, "scripted");
    EXPECT_EQ(c.model_dir, "/models/m");
    EXPECT_EQ(c.serialized_file, "/models/m/w.pt");
    EXPECT_EQ(c.config, (std::map<std::string, std::string>{{"k", "v"}}));
    EXPECT_EQ(c.batch_size, 3);
    EXPECT_EQ(c.intra_op_threads, 2);
    EXPECT_EQ(c.metrics, handler_metrics);  // the pool's, not the settings' own field
    ids.push_back(c.worker_id);
  }
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<int>{9000, 9001}));  // each worker's own number
}

TEST_F(WorkerPoolTest, BatchesUpToBatchSizeWithinTheDelay) {
  script_.inference_time = 20ms;
  auto pool = MakePool(4, 200ms);
  ASSERT_TRUE(pool->SetWorkerCount(1).ok());
  WaitReady(*pool, 1);
  std::vector<std::future<JobResult>> results;
  for (int i = 0; i < 4; ++i) {
    auto [job, fut] = MakeJob("x");
    ASSERT_EQ(pool->Submit(job), SubmitResult::kAccepted);
    results.push_back(std::move(fut));
  }
  for (auto& f : results) EXPECT_EQ(f.get().status, 200);
  EXPECT_EQ(script_.max_batch.load(), 4);
  EXPECT_EQ(script_.batches.load(), 1);
  EXPECT_EQ(metrics_.batch_size->Count(), 1u);
  EXPECT_DOUBLE_EQ(metrics_.batch_size->Sum(), 4.0);
}

TEST_F(WorkerPoolTest, PartialBatchLeavesAfterTheDelay) {
  auto pool = MakePool(8, 100ms);
  ASSERT_TRUE(pool->SetWorkerCount(1).ok());
  WaitReady(*pool, 1);
  auto t0 = Clock::now();
  auto [job, fut] = MakeJob("alone");
  ASSERT_EQ(pool->Submit(job), SubmitResult::kAccepted);
  EXPECT_EQ(fut.get().status, 200);
  auto waited = Clock::now() - t0;
  EXPECT_GE(waited, 90ms);  // it waited for company...
  EXPECT_LT(waited, 2s);    // ...but not forever
  EXPECT_EQ(script_.max_batch.load(), 1);
}

TEST_F(WorkerPoolTest, FullQueueRefusesAtOnce) {
  script_.inference_time = 300ms;
  auto pool = MakePool(1, 0ms, /*capacity=*/2);
  ASSERT_TRUE(pool->SetWorkerCount(1).ok());
  WaitReady(*pool, 1);
  std::vector<std::future<JobResult>> accepted;
  int refused = 0;
  for (int i = 0; i < 6; ++i) {
    auto [job, fut] = MakeJob("x");
    if (pool->Submit(job) == SubmitResult::kAccepted) {
      accepted.push_back(std::move(fut));
    } else {
      ++refused;
    }
    if (i == 0) std::this_thread::sleep_for(50ms);  // let the worker take the first
  }
  EXPECT_EQ(accepted.size(), 3u);  // one running + two queued
  EXPECT_EQ(refused, 3);
  EXPECT_EQ(metrics_.fail_queue_full->Value(), 3.0);
  for (auto& f : accepted) EXPECT_EQ(f.get().status, 200);
}

TEST_F(WorkerPoolTest, NoWorkersRefuses) {
  auto pool = MakePool(1, 0ms);
  auto [job, fut] = MakeJob("x");
  EXPECT_EQ(pool->Submit(job), SubmitResult::kNoWorker);
  EXPECT_EQ(metrics_.fail_no_worker->Value(), 1.0);
}

TEST_F(WorkerPoolTest, ThrowingHandlerFailsOnlyItsBatch) {
  auto pool = MakePool(1, 0ms);
  ASSERT_TRUE(pool->SetWorkerCount(1).ok());
  WaitReady(*pool, 1);
  script_.throw_next = true;
  auto [bad, bad_f] = MakeJob("x");
  pool->Submit(bad);
  JobResult r = bad_f.get();
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.error_type, "InternalServerException");
  EXPECT_EQ(r.body, "Prediction failed: boom");
  auto [good, good_f] = MakeJob("y");
  pool->Submit(good);
  EXPECT_EQ(good_f.get().status, 200);  // the worker goes on
  EXPECT_EQ(metrics_.fail_handler_error->Value(), 1.0);
  EXPECT_EQ(metrics_.request_duration->Count(), 1u);  // successes only
}

TEST_F(WorkerPoolTest, OverdueJobsAnswer408Once) {
  script_.inference_time = 300ms;
  auto pool = MakePool(1, 0ms);
  ASSERT_TRUE(pool->SetWorkerCount(1).ok());
  WaitReady(*pool, 1);
  auto [running, running_f] = MakeJob("slow", 100ms);
  auto [queued, queued_f] = MakeJob("queued", 100ms);
  pool->Submit(running);
  std::this_thread::sleep_for(20ms);
  pool->Submit(queued);
  std::this_thread::sleep_for(150ms);
  pool->ExpireOverdue(Clock::now());
  EXPECT_EQ(running_f.get().status, 408);
  EXPECT_EQ(queued_f.get().status, 408);
  EXPECT_EQ(metrics_.fail_timeout->Value(), 2.0);
  EXPECT_EQ(pool->queue_depth(), 0u);
  pool->Shutdown();  // the slow batch finishes; its late result is dropped
  EXPECT_EQ(metrics_.request_duration->Count(), 0u);
}

TEST_F(WorkerPoolTest, FailedLoadIsRetriedAndReported) {
  script_.fail_initialize = true;
  auto pool = MakePool(1, 0ms);
  ASSERT_TRUE(pool->SetWorkerCount(1).ok());
  for (int i = 0; i < 100 && metrics_.workers_failed->Value() < 1.0; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(metrics_.workers_failed->Value(), 1.0);
  EXPECT_EQ(metrics_.worker_load_failures->Value(), 1.0);  // ts_worker_load_failures_total
  EXPECT_EQ(pool->ready_workers(), 0);
  script_.fail_initialize = false;  // the next retry (after ~1 s) succeeds
  WaitReady(*pool, 1);
  EXPECT_EQ(metrics_.workers_failed->Value(), 0.0);
  EXPECT_EQ(metrics_.worker_load_failures->Value(), 1.0);  // a success adds nothing
}

TEST_F(WorkerPoolTest, ShutdownAnswersQueuedJobs503AndRemovesWorkerSeries) {
  script_.inference_time = 200ms;
  auto pool = MakePool(1, 0ms);
  ASSERT_TRUE(pool->SetWorkerCount(1).ok());
  WaitReady(*pool, 1);
  auto [first, first_f] = MakeJob("a");
  auto [second, second_f] = MakeJob("b");
  pool->Submit(first);
  std::this_thread::sleep_for(30ms);
  pool->Submit(second);
  pool->Shutdown();
  EXPECT_EQ(first_f.get().status, 200);  // in flight: finished
  EXPECT_EQ(second_f.get().status, 503);
}

TEST_F(WorkerPoolTest, ScalingDownRemovesWorkerLoadTimeSeries) {
  auto pool = MakePool(1, 0ms);
  ASSERT_TRUE(pool->SetWorkerCount(2).ok());
  WaitReady(*pool, 2);
  EXPECT_EQ(registry_.Find("WorkerLoadTime")->SeriesCount(), 2u);
  auto workers = pool->Workers();
  ASSERT_EQ(workers.size(), 2u);
  EXPECT_EQ(workers[0].name, "W-9000-m_1.0");
  ASSERT_TRUE(pool->SetWorkerCount(1).ok());
  EXPECT_EQ(registry_.Find("WorkerLoadTime")->SeriesCount(), 1u);
  EXPECT_EQ(pool->worker_count(), 1);
}

// Issue 7 #3: a worker thread the system cannot start threw std::system_error out of
// SetWorkerCount and terminated the server. Now: an error for that change, the workers
// that started keep serving, the shortfall shows as ts_workers{state="failed"}.
TEST_F(WorkerPoolTest, ThreadStartFailureIsAnErrorNotACrash) {
  int starts = 0;
  auto pool = MakePool(1, 0ms, 100, [&starts](std::function<void()> body) {
    if (++starts > 2) {
      throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                              "thread");
    }
    return std::thread(std::move(body));
  });
  Status s = pool->SetWorkerCount(5);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_NE(s.message().find("Failed to start worker 3 of 5 for model \"m\""), std::string::npos)
      << s.message();
  EXPECT_EQ(pool->worker_count(), 2);
  WaitReady(*pool, 2);
  EXPECT_EQ(metrics_.workers_failed->Value(), 3.0);
  EXPECT_EQ(registry_.Find("WorkerLoadTime")->SeriesCount(), 2u);  // none for the missing
  auto [job, fut] = MakeJob("still serving");
  ASSERT_EQ(pool->Submit(job), SubmitResult::kAccepted);
  EXPECT_EQ(fut.get().status, 200);
  // The next change replaces the shortfall.
  EXPECT_TRUE(pool->SetWorkerCount(1).ok());
  EXPECT_EQ(metrics_.workers_failed->Value(), 0.0);
  pool->Shutdown();
}

// Issue 7: a handler whose Initialize throws something that is not a std::exception (a
// plugin may) escaped the worker thread: std::terminate. Now it is a failed load.
TEST_F(WorkerPoolTest, InitializeThrowingANonStandardExceptionFailsTheWorkerOnly) {
  script_.throw_int_on_initialize = true;
  auto pool = MakePool(1, 0ms);
  ASSERT_TRUE(pool->SetWorkerCount(1).ok());
  for (int i = 0; i < 200 && metrics_.workers_failed->Value() < 1.0; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(metrics_.workers_failed->Value(), 1.0);
  EXPECT_EQ(pool->ready_workers(), 0);
  script_.throw_int_on_initialize = false;  // the retry loads
  WaitReady(*pool, 1);
  pool->Shutdown();
}

// Issue 7 #13: a queued job whose client has gone is never given to the handler; it is
// answered (to nobody) and counted as client_disconnected. What is running finishes.
TEST_F(WorkerPoolTest, JobsWhoseClientWentAreDroppedBeforeTheHandler) {
  script_.inference_time = 200ms;
  auto pool = MakePool(1, 0ms);
  ASSERT_TRUE(pool->SetWorkerCount(1).ok());
  WaitReady(*pool, 1);
  std::atomic<bool> running_gone{false};
  auto [running, running_f] =
      MakeJob("running", 10s, [&running_gone] { return running_gone.load(); });
  ASSERT_EQ(pool->Submit(running), SubmitResult::kAccepted);
  for (int i = 0; i < 200 && script_.batches.load() < 1; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(script_.batches.load(), 1);
  std::atomic<bool> left{false};
  auto [gone, gone_f] = MakeJob("gone", 10s, [&left] { return left.load(); });
  auto [stays, stays_f] = MakeJob("stays", 10s, [] { return false; });
  ASSERT_EQ(pool->Submit(gone), SubmitResult::kAccepted);
  ASSERT_EQ(pool->Submit(stays), SubmitResult::kAccepted);
  left = true;          // its client leaves while it waits in the queue
  running_gone = true;  // and so does the running one's: it finishes anyway
  EXPECT_EQ(running_f.get().status, 200);
  JobResult dropped = gone_f.get();
  EXPECT_EQ(dropped.status, 503);
  EXPECT_EQ(stays_f.get().status, 200);
  {
    std::lock_guard<std::mutex> lock(script_.mu);
    EXPECT_EQ(script_.seen, (std::vector<std::string>{"running", "stays"}));
  }
  EXPECT_EQ(metrics_.fail_client_disconnected->Value(), 1.0);
  EXPECT_EQ(metrics_.request_duration->Count(), 2u);
  pool->Shutdown();
}

// Issue 7 #13: abandoned requests must not keep live ones out of a full queue, nor sit in
// it until a worker is free: a full queue gives them up to a new job, and the reaper's
// pass drops them.
TEST_F(WorkerPoolTest, GoneJobsGiveWayInAFullQueueAndTheReaperDropsThem) {
  script_.inference_time = 300ms;
  auto pool = MakePool(1, 0ms, /*capacity=*/2);
  ASSERT_TRUE(pool->SetWorkerCount(1).ok());
  WaitReady(*pool, 1);
  auto [running, running_f] = MakeJob("running");
  ASSERT_EQ(pool->Submit(running), SubmitResult::kAccepted);
  for (int i = 0; i < 200 && script_.batches.load() < 1; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(script_.batches.load(), 1);
  std::atomic<bool> left{false};
  auto [a, a_f] = MakeJob("a", 10s, [&left] { return left.load(); });
  auto [b, b_f] = MakeJob("b", 10s, [&left] { return left.load(); });
  for (auto* j : {&a, &b}) {
    ASSERT_EQ(pool->Submit(*j), SubmitResult::kAccepted);
  }
  auto [refused, refused_f] = MakeJob("refused");  // the queue is full of live clients
  EXPECT_EQ(pool->Submit(refused), SubmitResult::kQueueFull);
  left = true;  // a's and b's clients go
  auto [live, live_f] = MakeJob("live");
  EXPECT_EQ(pool->Submit(live), SubmitResult::kAccepted);
  EXPECT_EQ(a_f.wait_for(0s), std::future_status::ready);  // answered within Submit
  EXPECT_EQ(b_f.wait_for(0s), std::future_status::ready);
  EXPECT_EQ(metrics_.fail_client_disconnected->Value(), 2.0);
  EXPECT_EQ(metrics_.fail_queue_full->Value(), 1.0);
  // The reaper's pass drops a queued job whose client went, without waiting for a worker.
  std::atomic<bool> c_left{false};
  auto [c, c_f] = MakeJob("c", 10s, [&c_left] { return c_left.load(); });
  ASSERT_EQ(pool->Submit(c), SubmitResult::kAccepted);
  c_left = true;
  pool->ExpireOverdue(Clock::now());
  EXPECT_EQ(c_f.wait_for(0s), std::future_status::ready);
  EXPECT_EQ(c_f.get().status, 503);
  EXPECT_EQ(metrics_.fail_client_disconnected->Value(), 3.0);
  EXPECT_EQ(running_f.get().status, 200);
  EXPECT_EQ(live_f.get().status, 200);
  {
    std::lock_guard<std::mutex> lock(script_.mu);
    EXPECT_EQ(script_.seen, (std::vector<std::string>{"running", "live"}));
  }
  pool->Shutdown();
}

// Issue 7 #10: every submitted job ends in exactly one outcome, each counted: a success
// (ts_request_duration_seconds) or one ts_inference_failures_total reason. The 503s of a
// model being unloaded were counted nowhere.
TEST_F(WorkerPoolTest, EveryJobEndsInExactlyOneCountedOutcome) {
  script_.inference_time = 100ms;
  auto pool = MakePool(1, 0ms, /*capacity=*/3);
  int submitted = 0;
  std::vector<std::future<JobResult>> results;
  auto submit = [&](std::shared_ptr<Job> job, std::future<JobResult> f) {
    ++submitted;
    if (pool->Submit(job) != SubmitResult::kAccepted) {
      job->Complete(JobResult::Error(503, "ServiceUnavailableException", "refused"));
    }
    results.push_back(std::move(f));
  };
  {
    auto [j, f] = MakeJob("no worker yet");
    submit(j, std::move(f));
  }  // no_worker
  ASSERT_TRUE(pool->SetWorkerCount(1).ok());
  WaitReady(*pool, 1);
  {
    auto [j, f] = MakeJob("ok");
    submit(j, std::move(f));
  }  // success (running)
  for (int i = 0; i < 200 && script_.batches.load() < 1; ++i) std::this_thread::sleep_for(5ms);
  script_.throw_next = true;  // the next batch fails
  {
    auto [j, f] = MakeJob("handler error");
    submit(j, std::move(f));
  }
  {
    auto [j, f] = MakeJob("gone", 10s, [] { return true; });
    submit(j, std::move(f));
  }
  {
    auto [j, f] = MakeJob("unloaded");
    submit(j, std::move(f));
  }
  {
    auto [j, f] = MakeJob("queue full");
    submit(j, std::move(f));
  }
  pool->Shutdown();  // "ok" finishes; whatever is still queued is answered 503
  for (auto& f : results) f.get();
  const double outcomes = static_cast<double>(metrics_.request_duration->Count()) +
                          metrics_.fail_queue_full->Value() + metrics_.fail_no_worker->Value() +
                          metrics_.fail_timeout->Value() + metrics_.fail_handler_error->Value() +
                          metrics_.fail_bad_input->Value() + metrics_.fail_unloaded->Value() +
                          metrics_.fail_client_disconnected->Value();
  EXPECT_EQ(outcomes, static_cast<double>(submitted));
  EXPECT_EQ(metrics_.fail_no_worker->Value(), 1.0);
  EXPECT_GE(metrics_.fail_unloaded->Value(), 1.0);  // at least "unloaded" was still queued
}

// Issue 7: ModelMetrics of an unloaded model stayed in the registry forever (and, for
// families missing from metrics.yaml, a fresh detached series was allocated per load).
TEST_F(WorkerPoolTest, ThousandLoadUnloadCyclesLeaveNoSeriesBehind) {
  auto total_series = [this] {
    size_t n = 0;
    for (const auto& fam : registry_.Collect().families) {
      n += registry_.Find(fam.desc->name)->SeriesCount();
    }
    return n;
  };
  const size_t before = total_series();  // "m" 1.0 of the fixture, still held
  for (int i = 0; i < 1000; ++i) {
    auto m = ModelMetrics::Resolve(&registry_, "churn" + std::to_string(i % 7), "1.0", "h");
    ASSERT_TRUE(m.ok());
    m->by_default.requests->Inc();
    m->request_duration->Observe(0.1);
    m->Release(&registry_);
  }
  // Only host-level QueueTime/WorkerThreadTime stay, and the fixture's "m" holds them.
  EXPECT_EQ(total_series(), before);
  // Two versions share model_version="default": it lives until both let go.
  auto v1 = ModelMetrics::Resolve(&registry_, "two", "1.0", "h");
  auto v2 = ModelMetrics::Resolve(&registry_, "two", "2.0", "h");
  ASSERT_TRUE(v1.ok() && v2.ok());
  ASSERT_EQ(v1->by_default.requests, v2->by_default.requests);
  metrics::Counter* shared = v2->by_default.requests;
  v1->Release(&registry_);
  shared->Inc();  // still registered: no use after free
  auto* fam = registry_.Find("ts_inference_requests_total");
  const auto snap = fam->Snapshot();
  EXPECT_TRUE(std::any_of(snap.series.begin(), snap.series.end(),
                          [&](const metrics::Series* s) { return s == shared; }));
  v2->Release(&registry_);
  EXPECT_EQ(total_series(), before);

  // Without the families in metrics.yaml: detached series, one per name and type.
  metrics::Registry empty;
  auto first = ModelMetrics::Resolve(&empty, "x", "1.0", "h");
  ASSERT_TRUE(first.ok());
  const size_t detached = empty.DetachedCount();
  for (int i = 0; i < 1000; ++i) {
    auto m = ModelMetrics::Resolve(&empty, "x" + std::to_string(i), "1.0", "h");
    ASSERT_TRUE(m.ok());
    m->Release(&empty);
  }
  EXPECT_EQ(empty.DetachedCount(), detached);
}

}  // namespace
}  // namespace tserve::serving
