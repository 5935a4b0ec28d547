// The worker loop of a generative handler (continuous batching) and the Sequence it hands
// the handler for each request: every LLM metric is derived here, from the handler's
// Emit/Finish/Fail calls and the job's stamps (docs/design.md "Generation", docs/llm.md).

#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "serving/worker_pool.h"

namespace tserve::serving {

namespace {

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
double Millis(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// The content type of a generation's text, streamed or whole.
constexpr const char* kTextType = "text/plain; charset=utf-8";

}  // namespace

class GenerationLoop;

// One request being generated: what the handler sees of it, and the bookkeeping of its
// metrics. Lives in the worker's loop from admission to its end; the worker's thread only.
class GenerationSequence final : public tserve::Sequence {
 public:
  GenerationSequence(WorkerPool* pool, GenerationLoop* loop, std::shared_ptr<Job> job,
                     const std::atomic<bool>* stop)
      : pool_(pool),
        loop_(loop),
        g_(pool->metrics_.generation),
        job_(std::move(job)),
        stop_(stop) {}

  std::string_view request_id() const override { return job_->request_id(); }
  std::string_view content_type() const override { return job_->content_type(); }
  std::string_view body() const override { return job_->body(); }

  bool cancelled() const override {
    return stop_->load(std::memory_order_relaxed) || job_->client_gone() ||
           Clock::now() >= job_->deadline();
  }

  void SetPromptTokens(int tokens) override {
    if (ended_ || admitted_) return;
    admitted_ = true;
    prompt_tokens_ = std::max(0, tokens);
    g_.prompt_tokens_total->Add(prompt_tokens_);
    // Arrival to first scheduled: the real queue time (the prefill starts now).
    g_.queue_time->Observe(Seconds(job_->started() - job_->arrival()));
  }

  void Emit(std::string_view text, int tokens) override {
    if (ended_) return;
    const Clock::time_point now = Clock::now();
    if (tokens > 0) {
      if (generated_ == 0) {
        g_.time_to_first_token->Observe(Seconds(now - job_->arrival()));
      } else {
        g_.inter_token_latency->Observe(Seconds(now - last_token_));
      }
      // Tokens that arrive together: the gaps between them are 0 (one observation each).
      for (int i = 1; i < tokens; ++i) g_.inter_token_latency->Observe(0.0);
      generated_ += tokens;
      g_.generation_tokens_total->Add(tokens);
      last_token_ = now;
    }
    if (!text.empty()) job_->SendPart({std::string(text), tokens});
  }

  void Finish(tserve::FinishReason reason) override {
    if (ended_) return;
    End();
    const Clock::time_point end = Clock::now();
    g_.e2e_latency->Observe(Seconds(end - job_->arrival()));
    g_.prompt_tokens->Observe(prompt_tokens_);
    g_.generation_tokens->Observe(generated_);
    switch (reason) {
      case tserve::FinishReason::kStop:
        g_.success_stop->Inc();
        break;
      case tserve::FinishReason::kLength:
        g_.success_length->Inc();
        break;
      case tserve::FinishReason::kAbort:
        g_.success_abort->Inc();
        Abort();
        return;
    }
    if (!job_->Claim()) return;
    pool_->RecordOutcome(*job_, 200, end);
    JobResult r = JobResult::Answer(200, kTextType, "");
    r.finish_reason = tserve::FinishReasonName(reason);
    r.prompt_tokens = prompt_tokens_;
    r.completion_tokens = generated_;
    job_->Deliver(std::move(r));
  }

  void Fail(int status, std::string_view message) override {
    if (ended_) return;
    End();
    if (status < 400 || status > 599) status = 500;
    if (!job_->Claim()) return;
    pool_->RecordOutcome(*job_, status, Clock::now());
    JobResult r =
        JobResult::Error(status, status < 500 ? "BadRequestException" : "InternalServerException",
                         std::string(message));
    r.prompt_tokens = prompt_tokens_;
    r.completion_tokens = generated_;
    job_->Deliver(std::move(r));
  }

  bool ended() const { return ended_; }
  // Set by the loop once the sequence counts in the published running gauge.
  void set_counted_running() { counted_running_ = true; }

 private:
  // Marks it ended; a sequence counted as running leaves the gauge before its answer goes.
  void End();
  // An aborted sequence: counted under why it was cancelled, answered if anyone listens.
  void Abort() {
    if (!job_->Claim()) return;
    const ModelMetrics& m = pool_->metrics_;
    JobResult r;
    if (job_->client_gone()) {
      m.fail_client_disconnected->Inc();
      r = JobResult::Error(503, "ServiceUnavailableException",
                           "The client closed the connection before the answer ended");
    } else if (Clock::now() >= job_->deadline()) {
      m.fail_timeout->Inc();
      r = pool_->TimeoutError();
    } else {
      m.fail_unloaded->Inc();
      r = pool_->UnloadedError();
    }
    r.finish_reason = "abort";
    r.prompt_tokens = prompt_tokens_;
    r.completion_tokens = generated_;
    job_->Deliver(std::move(r));
  }

  WorkerPool* pool_;
  GenerationLoop* loop_;
  const ModelMetrics::Generation& g_;
  std::shared_ptr<Job> job_;
  const std::atomic<bool>* stop_;
  bool counted_running_ = false;
  bool admitted_ = false;
  bool ended_ = false;
  int prompt_tokens_ = 0;
  int generated_ = 0;
  Clock::time_point last_token_{};
};

// One worker's share of the version's generation gauges (running, held for room, KV
// blocks): it publishes changes of its own share into the pool's sums.
class GenerationLoop {
 public:
  GenerationLoop(WorkerPool* pool, WorkerPool::Worker* w, GenerativeHandler* handler)
      : pool_(pool), w_(w), handler_(handler), g_(pool->metrics_.generation) {}
  ~GenerationLoop() { Publish({}, 0); }  // this worker's share leaves the sums

  // Serves until the worker stops (true) or the handler's Step throws (false: every running
  // sequence failed with 500).
  bool Run();
  // Ends what is left: running sequences as aborted, held requests with 503 (unloaded).
  void EndAll();
  // A sequence counted in the running gauge ended: the gauge drops now, before its answer.
  void LeftRunning();

 private:
  // Admits waiting requests while the handler has room. `block`: wait for the first one.
  void Admit(bool block);
  // Ends the request held for room if its client left or its deadline passed.
  void ExpireHeld();
  void Publish(const GenerationStats& stats, int held);

  WorkerPool* pool_;
  WorkerPool::Worker* w_;
  GenerativeHandler* handler_;
  const ModelMetrics::Generation& g_;
  // Taken from the queue, no KV-cache room yet: first in line (Admit stops at the first such
  // request, so there is at most one).
  std::shared_ptr<Job> held_;
  std::vector<std::unique_ptr<GenerationSequence>> live_;
  std::vector<std::shared_ptr<Job>> gone_;
  GenerationStats published_;
  int published_held_ = 0;
};

void GenerationSequence::End() {
  ended_ = true;
  if (counted_running_) {
    counted_running_ = false;
    loop_->LeftRunning();
  }
}

void GenerationLoop::LeftRunning() {
  --published_.running;
  g_.running->Set(--pool_->gen_running_);
}

void GenerationLoop::Publish(const GenerationStats& stats, int held) {
  pool_->gen_running_ += stats.running - published_.running;
  pool_->gen_kv_used_ += stats.kv_blocks_used - published_.kv_blocks_used;
  pool_->gen_kv_total_ += stats.kv_blocks_total - published_.kv_blocks_total;
  pool_->gen_held_ += held - published_held_;
  published_ = stats;
  published_held_ = held;
  for (auto& s : live_) {
    if (!s->ended()) s->set_counted_running();
  }
  g_.running->Set(pool_->gen_running_.load());
  g_.waiting->Set(static_cast<double>(pool_->queue_.size()) + pool_->gen_held_.load());
  const int total = pool_->gen_kv_total_.load();
  g_.kv_cache_usage->Set(total > 0 ? static_cast<double>(pool_->gen_kv_used_.load()) / total : 0.0);
}

void GenerationLoop::ExpireHeld() {
  if (held_ == nullptr) return;
  if (held_->client_gone()) {
    gone_.push_back(std::move(held_));
    pool_->DropGone(gone_);
  } else if (Clock::now() >= held_->deadline()) {
    pool_->FailTimedOut(*held_);
  } else {
    return;
  }
  held_ = nullptr;
}

void GenerationLoop::Admit(bool block) {
  while (!w_->stop && handler_->FreeSlots() > 0) {
    std::shared_ptr<Job> job = std::move(held_);
    if (job == nullptr) {
      auto jobs = block ? pool_->queue_.PopBatch(1, std::chrono::milliseconds(0), w_->stop, &gone_)
                        : pool_->queue_.TryPop(1, &gone_);
      pool_->DropGone(gone_);
      if (jobs.empty()) return;
      job = std::move(jobs.front());
    }
    block = false;
    job->set_started(Clock::now());
    auto sequence = std::make_unique<GenerationSequence>(pool_, this, job, &w_->stop);
    AdmitResult result;
    try {
      result = handler_->Admit(sequence.get());
    } catch (const std::exception& e) {
      sequence->Fail(500, std::string("Prediction failed: ") + e.what());
      result = AdmitResult::kEnded;
    } catch (...) {
      sequence->Fail(500, "Prediction failed: unknown exception");
      result = AdmitResult::kEnded;
    }
    if (result == AdmitResult::kAdmitted) {
      live_.push_back(std::move(sequence));
    } else if (result == AdmitResult::kNoRoom) {
      if (live_.empty()) {
        // Nothing runs, so no room will ever free up for it.
        sequence->Fail(500,
                       "Prediction failed: the request does not fit in the model's "
                       "KV cache even when nothing else runs");
        continue;
      }
      held_ = std::move(job);
      return;
    }
  }
}

void GenerationLoop::EndAll() {
  for (auto& s : live_) {
    if (!s->ended()) s->Finish(tserve::FinishReason::kAbort);
  }
  live_.clear();
  if (held_ != nullptr) pool_->FailUnloaded(*held_);
  held_ = nullptr;
}

bool GenerationLoop::Run() {
  const ModelMetrics& m = pool_->metrics_;
  // A generative version's counters and gauges are on /metrics from its first worker's load,
  // at 0: its model shows on the dashboards before traffic, and the first tokens in rate().
  for (metrics::Counter* c : {g_.prompt_tokens_total, g_.generation_tokens_total, g_.success_stop,
                              g_.success_length, g_.success_abort}) {
    c->Expose();
  }
  Publish(handler_->Stats(), 0);
  pool_->SetState(w_, WorkerState::kReady);
  while (!w_->stop) {
    ExpireHeld();
    Admit(/*block=*/live_.empty() && held_ == nullptr);
    // The admitted count as running from their first token on, not from the next step's end.
    Publish(handler_->Stats(), held_ != nullptr ? 1 : 0);
    if (live_.empty()) continue;
    const auto t0 = Clock::now();
    try {
      handler_->Step();
    } catch (const std::exception& e) {
      spdlog::error("{}: generation step failed: {}; reloading the handler", w_->name, e.what());
      for (auto& s : live_) s->Fail(500, std::string("Prediction failed: ") + e.what());
      return false;
    } catch (...) {
      spdlog::error("{}: generation step failed; reloading the handler", w_->name);
      for (auto& s : live_) s->Fail(500, "Prediction failed: unknown exception");
      return false;
    }
    const auto t1 = Clock::now();
    // A decode step is a batch: its size and time are the batch metrics.
    m.batch_size->Observe(static_cast<double>(live_.size()));
    m.handler_duration->Observe(Seconds(t1 - t0));
    m.handler_time_ms->Set(Millis(t1 - t0));
    m.prediction_time_ms->Set(Millis(t1 - t0));
    live_.erase(
        std::remove_if(live_.begin(), live_.end(), [](const auto& s) { return s->ended(); }),
        live_.end());
    Publish(handler_->Stats(), held_ != nullptr ? 1 : 0);
  }
  return true;
}

bool WorkerPool::RunGeneration(Worker* w, GenerativeHandler* handler) {
  GenerationLoop loop(this, w, handler);
  bool ok = false;
  try {
    ok = loop.Run();
  } catch (const std::exception& e) {
    spdlog::error("{}: generation loop failed: {}", w->name, e.what());
  }
  loop.EndAll();
  return ok;
}

}  // namespace tserve::serving
