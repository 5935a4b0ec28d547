// The worker loop of a generative handler (continuous batching) and the metrics it derives,
// against a fake generator that echoes its prompt one byte per step.

#include <gtest/gtest.h>

#include <algorithm>
#include <future>
#include <mutex>
#include <thread>

#include "metrics/metrics_yaml.h"
#include "serving/job.h"
#include "serving/worker_pool.h"

namespace tserve::serving {
namespace {

using namespace std::chrono_literals;

struct GenScript {
  int slots = 2;
  int blocks = 100000;  // a sequence holds as many blocks as its prompt has bytes
  std::chrono::milliseconds step_time{0};
  std::atomic<int> initializations{0};
  std::atomic<int> steps{0};
  std::mutex mu;
  std::vector<std::vector<std::string>> step_log;  // the prompts running at each step
};

// Echoes the prompt: its first byte at admission (the prefill), then one byte per Step;
// finishes "stop" after the last. "fail400" fails at admission; "throw" makes Step throw.
class EchoGenerator final : public Handler, public GenerativeHandler {
 public:
  explicit EchoGenerator(GenScript* s) : s_(s) {}
  void Initialize(const ModelContext&) override { s_->initializations++; }
  void Preprocess(Batch&) override { throw std::logic_error("not a batch handler"); }
  void Inference(Batch&) override {}
  void Postprocess(Batch&) override {}

  int FreeSlots() const override { return s_->slots - static_cast<int>(running_.size()); }
  AdmitResult Admit(Sequence* seq) override {
    const std::string prompt(seq->body());
    if (prompt == "fail400") {
      seq->Fail(400, "bad prompt");
      return AdmitResult::kEnded;
    }
    const int need = static_cast<int>(prompt.size());
    if (used_ + need > s_->blocks) return AdmitResult::kNoRoom;
    seq->SetPromptTokens(need);
    Running r{seq, prompt, 0};
    used_ += need;
    Next(r);
    if (r.pos >= static_cast<int>(prompt.size())) {
      used_ -= need;
      seq->Finish(FinishReason::kStop);
      return AdmitResult::kEnded;
    }
    running_.push_back(r);
    return AdmitResult::kAdmitted;
  }
  void Step() override {
    s_->steps++;
    if (s_->step_time.count() > 0) std::this_thread::sleep_for(s_->step_time);
    {
      std::lock_guard<std::mutex> lock(s_->mu);
      std::vector<std::string> now;
      for (auto& r : running_) now.push_back(r.prompt);
      s_->step_log.push_back(now);
    }
    for (auto& r : running_) {
      if (r.prompt == "throw") throw std::runtime_error("step broke");
    }
    for (auto it = running_.begin(); it != running_.end();) {
      if (it->seq->cancelled()) {
        it->seq->Finish(FinishReason::kAbort);
      } else {
        Next(*it);
        if (it->pos < static_cast<int>(it->prompt.size())) {
          ++it;
          continue;
        }
        it->seq->Finish(FinishReason::kStop);
      }
      used_ -= static_cast<int>(it->prompt.size());
      it = running_.erase(it);
    }
  }
  GenerationStats Stats() const override {
    return {static_cast<int>(running_.size()), used_, s_->blocks};
  }

 private:
  struct Running {
    Sequence* seq;
    std::string prompt;
    int pos;
  };
  static void Next(Running& r) {
    r.seq->Emit(std::string_view(r.prompt).substr(static_cast<size_t>(r.pos), 1), 1);
    ++r.pos;
  }
  GenScript* s_;
  std::vector<Running> running_;
  int used_ = 0;
};

// What a client of one request saw: the parts, in order, and the end.
struct Seen {
  std::mutex mu;
  std::vector<std::string> parts;
  std::promise<JobResult> done;
};

class PartsTarget final : public ResponseSink::Target {
 public:
  PartsTarget(std::shared_ptr<Seen> seen, std::shared_ptr<std::atomic<bool>> gone)
      : seen_(std::move(seen)), gone_(std::move(gone)) {}
  void SendPart(JobPart part) override {
    std::lock_guard<std::mutex> lock(seen_->mu);
    seen_->parts.push_back(part.text);
  }
  void Finish(JobResult r) override { seen_->done.set_value(std::move(r)); }
  bool client_gone() const override { return gone_->load(); }

 private:
  std::shared_ptr<Seen> seen_;
  std::shared_ptr<std::atomic<bool>> gone_;
};

class WorkerGenerationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto fams = metrics::ParseMetricsYaml(metrics::DefaultMetricsYaml(), "metrics.yaml");
    ASSERT_TRUE(fams.ok());
    ASSERT_TRUE(metrics::AddFamilies(*fams, &registry_).ok());
    factory_.RegisterBuiltin("echo_gen",
                             [this] { return std::make_unique<EchoGenerator>(&script_); });
    auto m = ModelMetrics::Resolve(&registry_, "llm", "1.0", "h");
    ASSERT_TRUE(m.ok());
    metrics_ = *m;
  }
  void TearDown() override {
    if (pool_) pool_->Shutdown();
  }

  WorkerPool& Pool(int workers = 1, size_t capacity = 100) {
    PoolOptions o;
    o.model_name = "llm";
    o.model_version = "1.0";
    o.handler = "echo_gen";
    o.queue_capacity = capacity;
    o.hostname = "h";
    pool_ = std::make_unique<WorkerPool>(o, &factory_, &registry_, &metrics_, nullptr,
                                         [this] { return port_++; });
    EXPECT_TRUE(pool_->SetWorkerCount(workers).ok());
    for (int i = 0; i < 200 && pool_->ready_workers() < workers; ++i) {
      std::this_thread::sleep_for(10ms);
    }
    EXPECT_EQ(pool_->ready_workers(), workers);
    return *pool_;
  }

  struct Request {
    std::shared_ptr<Seen> seen;
    std::shared_ptr<std::atomic<bool>> gone;
    std::future<JobResult> result;
  };
  Request Submit(const std::string& prompt, std::chrono::milliseconds timeout = 10s) {
    Request r{std::make_shared<Seen>(), std::make_shared<std::atomic<bool>>(false), {}};
    r.result = r.seen->done.get_future();
    const auto now = Clock::now();
    auto job =
        std::make_shared<Job>("id-" + prompt, prompt, "text/plain", false, now, now + timeout,
                              ResponseSink(std::make_unique<PartsTarget>(r.seen, r.gone)));
    metrics_.by_default.requests->Inc();  // as ModelVersion::Submit does
    EXPECT_EQ(pool_->Submit(job), SubmitResult::kAccepted);
    return r;
  }
  // Until `n` tokens were generated (at most 10 s).
  void WaitTokens(double n) {
    for (int i = 0; i < 10000 && metrics_.generation.generation_tokens_total->Value() < n; ++i) {
      std::this_thread::sleep_for(1ms);
    }
    ASSERT_GE(metrics_.generation.generation_tokens_total->Value(), n);
  }
  static std::string Joined(const Request& r) {
    std::lock_guard<std::mutex> lock(r.seen->mu);
    std::string all;
    for (const auto& p : r.seen->parts) all += p;
    return all;
  }

  GenScript script_;
  metrics::Registry registry_;
  backend::HandlerFactory factory_;
  ModelMetrics metrics_;
  std::unique_ptr<WorkerPool> pool_;
  int port_ = 9000;
};

TEST_F(WorkerGenerationTest, OneRequestStreamsEveryTokenAndEndsWithItsReasonAndCounts) {
  Pool();
  Request r = Submit("hello");
  JobResult end = r.result.get();
  EXPECT_EQ(end.status, 200);
  EXPECT_EQ(end.finish_reason, "stop");
  EXPECT_EQ(end.prompt_tokens, 5);
  EXPECT_EQ(end.completion_tokens, 5);
  EXPECT_TRUE(end.body.empty());
  {
    std::lock_guard<std::mutex> lock(r.seen->mu);
    EXPECT_EQ(r.seen->parts, (std::vector<std::string>{"h", "e", "l", "l", "o"}));
  }
  const ModelMetrics::Generation& g = metrics_.generation;
  EXPECT_EQ(g.time_to_first_token->Count(), 1u);
  EXPECT_EQ(g.inter_token_latency->Count(), 4u);  // tokens - 1 gaps
  EXPECT_EQ(g.generation_tokens_total->Value(), 5.0);
  EXPECT_EQ(g.prompt_tokens_total->Value(), 5.0);
  EXPECT_EQ(g.queue_time->Count(), 1u);
  EXPECT_EQ(g.e2e_latency->Count(), 1u);
  EXPECT_EQ(g.success_stop->Value(), 1.0);
  EXPECT_EQ(g.success_abort->Value(), 0.0);
  // TorchServe's success metrics at the end, as for any request.
  EXPECT_EQ(metrics_.request_duration->Count(), 1u);
  EXPECT_GT(metrics_.by_default.latency_us->Value(), 0.0);
  EXPECT_EQ(g.running->Value(), 0.0);
}

// Before any traffic, a ready generative version shows its counters and gauges at 0, so its
// model is on the dashboards and its first tokens count in rate().
TEST_F(WorkerGenerationTest, AReadyVersionShowsItsGenerationSeriesAtZeroBeforeTraffic) {
  Pool();
  const ModelMetrics::Generation& g = metrics_.generation;
  for (metrics::Counter* c : {g.prompt_tokens_total, g.generation_tokens_total, g.success_stop,
                              g.success_length, g.success_abort}) {
    EXPECT_FALSE(metrics::IsUntouched(c->Value()));
    EXPECT_EQ(c->Value(), 0.0);
  }
  for (metrics::Gauge* x : {g.running, g.waiting, g.kv_cache_usage}) {
    EXPECT_FALSE(metrics::IsUntouched(x->Value()));
    EXPECT_EQ(x->Value(), 0.0);
  }
  EXPECT_TRUE(pool_->generative());
}

TEST_F(WorkerGenerationTest, AWaitingRequestIsAdmittedAsSoonAsASlotFreesNotWhenTheBatchEnds) {
  script_.slots = 2;
  script_.step_time = 2ms;
  Pool();
  Request a = Submit("ab");            // ends after 1 step
  Request b = Submit("bbbbbbbbbbbb");  // runs 11 steps
  Request c = Submit("cc");            // waits for a slot
  EXPECT_EQ(c.result.get().finish_reason, "stop");
  // c ended while b was still running: admitted at the slot a freed, not after b.
  EXPECT_EQ(b.result.wait_for(0s), std::future_status::timeout);
  EXPECT_EQ(b.result.get().completion_tokens, 12);
  EXPECT_EQ(Joined(c), "cc");
  std::lock_guard<std::mutex> lock(script_.mu);
  size_t max_running = 0;
  for (const auto& s : script_.step_log) max_running = std::max(max_running, s.size());
  EXPECT_EQ(max_running, 2u);  // never more than the slots
  EXPECT_EQ(metrics_.generation.success_stop->Value(), 3.0);
  EXPECT_EQ(metrics_.generation.generation_tokens_total->Value(), 16.0);
  EXPECT_EQ(metrics_.generation.inter_token_latency->Count(), 16u - 3u);
}

TEST_F(WorkerGenerationTest, AClientThatLeavesIsAbortedAtTheNextStepAndItsSlotFreed) {
  script_.slots = 1;
  script_.step_time = 5ms;
  Pool();
  Request r = Submit(std::string(2000, 'x'));
  WaitTokens(3);
  r.gone->store(true);
  JobResult end = r.result.get();
  EXPECT_EQ(end.finish_reason, "abort");
  EXPECT_EQ(metrics_.generation.success_abort->Value(), 1.0);
  EXPECT_EQ(metrics_.fail_client_disconnected->Value(), 1.0);
  EXPECT_EQ(metrics_.request_duration->Count(), 0u);  // not a success
  // The slot is free again: the next request runs.
  Request next = Submit("ok");
  EXPECT_EQ(next.result.get().finish_reason, "stop");
}

TEST_F(WorkerGenerationTest, ADeadlineEndsARunningSequenceWith408BeforeItsFirstPart) {
  script_.slots = 1;
  script_.step_time = 20ms;
  Pool();
  Request slow = Submit(std::string(500, 's'), 100ms);
  JobResult end = slow.result.get();
  EXPECT_EQ(end.status, 408);
  EXPECT_EQ(end.error_type, "RequestTimeoutException");
  EXPECT_EQ(metrics_.fail_timeout->Value(), 1.0);
}

TEST_F(WorkerGenerationTest, ARequestThatDoesNotFitWaitsForKvRoomFirstInLine) {
  script_.slots = 4;
  script_.blocks = 10;
  script_.step_time = 2ms;
  Pool();
  Request big = Submit("bbbbbbbb");  // 8 of 10 blocks
  Request next = Submit("nnnn");     // 4: no room until big ends
  Request small = Submit("s");       // would fit, but waits behind `next` (first in line)
  EXPECT_EQ(next.result.get().finish_reason, "stop");
  EXPECT_EQ(small.result.get().finish_reason, "stop");
  EXPECT_EQ(big.result.get().finish_reason, "stop");
  std::lock_guard<std::mutex> lock(script_.mu);
  for (const auto& step : script_.step_log) {
    const bool has_big = std::count(step.begin(), step.end(), "bbbbbbbb") > 0;
    const bool has_next = std::count(step.begin(), step.end(), "nnnn") > 0;
    EXPECT_FALSE(has_big && has_next);  // never both: 12 blocks > 10
  }
}

TEST_F(WorkerGenerationTest, ABadRequestFailsAlone400AndIsCountedAsBadInput) {
  Pool();
  Request bad = Submit("fail400");
  Request good = Submit("ok");
  JobResult end = bad.result.get();
  EXPECT_EQ(end.status, 400);
  EXPECT_EQ(end.body, "bad prompt");
  EXPECT_EQ(metrics_.fail_bad_input->Value(), 1.0);
  EXPECT_EQ(good.result.get().status, 200);
}

TEST_F(WorkerGenerationTest, AStepThatThrowsFailsTheRunningSequencesAndReloadsTheHandler) {
  script_.slots = 2;
  Pool();
  Request broken = Submit("throw");
  JobResult end = broken.result.get();
  EXPECT_EQ(end.status, 500);
  EXPECT_NE(end.body.find("step broke"), std::string::npos);
  EXPECT_EQ(metrics_.fail_handler_error->Value(), 1.0);
  Request after = Submit("fine");
  EXPECT_EQ(after.result.get().status, 200);
  EXPECT_EQ(Joined(after), "fine");
  EXPECT_EQ(script_.initializations.load(), 2);
}

TEST_F(WorkerGenerationTest, ShutdownAbortsRunningSequencesAndAnswersThem) {
  script_.slots = 1;
  script_.step_time = 5ms;
  Pool();
  Request r = Submit(std::string(5000, 'z'));
  WaitTokens(2);
  pool_->Shutdown();
  JobResult end = r.result.get();
  EXPECT_EQ(end.finish_reason, "abort");
  EXPECT_EQ(end.status, 503);
  EXPECT_EQ(metrics_.fail_unloaded->Value(), 1.0);
  EXPECT_EQ(metrics_.generation.running->Value(), 0.0);
}

TEST_F(WorkerGenerationTest, GaugesShowRunningWaitingAndKvUsageWhileBusy) {
  script_.slots = 1;
  script_.blocks = 100;
  script_.step_time = 5ms;
  Pool();
  Request a = Submit(std::string(40, 'a'));
  Request b = Submit(std::string(10, 'b'));
  WaitTokens(3);
  std::this_thread::sleep_for(15ms);  // a few steps published
  EXPECT_EQ(metrics_.generation.running->Value(), 1.0);
  EXPECT_EQ(metrics_.generation.waiting->Value(), 1.0);
  EXPECT_DOUBLE_EQ(metrics_.generation.kv_cache_usage->Value(), 0.4);
  a.result.get();
  b.result.get();
}

}  // namespace
}  // namespace tserve::serving
