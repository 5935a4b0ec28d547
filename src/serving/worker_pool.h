#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "backend/handler_factory.h"
#include "common/mutex.h"
#include "metrics/registry.h"
#include "serving/job.h"
#include "serving/model_metrics.h"
#include "tserve/handler.h"

namespace tserve::serving {

// The settings of one model version's pool. They are the ModelContext every worker's
// handler is initialised with (model_name, model_version, handler, model_dir,
// serialized_file, config, batch_size, intra_op_threads; worker_id and metrics are set per
// worker), and the pool's own below.
struct PoolOptions : ModelContext {
  std::chrono::milliseconds max_batch_delay{100};
  size_t queue_capacity = 100;
  std::string hostname;
  // max_response_size: a larger response body answers 500 instead (0: no limit).
  size_t max_response_size = 0;
  // Starts a worker's thread; throws std::system_error when it cannot (as std::thread
  // does). Empty: std::thread. Injectable so tests can make thread creation fail.
  std::function<std::thread(std::function<void()>)> start_thread;
};

// A bounded job queue with dynamic batching. Thread safety: all methods are safe to call
// concurrently. `now` is injectable for tests (stamps and batch deadlines use it; waiting
// uses the real clock with the deadline translated).
class JobQueue {
 public:
  using Now = std::function<Clock::time_point()>;
  JobQueue(size_t capacity, metrics::Gauge* depth, Now now = &Clock::now);

  // False when full (the caller answers 503 at once) or closed. With `gone`, a full queue
  // first gives up the jobs whose client has gone (moved there for the caller to complete),
  // so abandoned requests never keep a live one out.
  bool Push(std::shared_ptr<Job> job, std::vector<std::shared_ptr<Job>>* gone = nullptr)
      EXCLUDES(mu_);
  // Blocks for the first job, then gathers up to max_jobs, waiting at most max_delay after
  // the first one for more. Jobs already completed (timed out) are dropped. Empty once the
  // queue is closed and drained, or when `stop` becomes true. With `gone`, jobs whose
  // client has gone (Job::client_gone, asked when a job is taken and again just before
  // the batch is returned) are moved there instead of into the batch, for the caller to
  // complete; the call then also returns when only such jobs were found.
  std::vector<std::shared_ptr<Job>> PopBatch(size_t max_jobs, std::chrono::milliseconds max_delay,
                                             const std::atomic<bool>& stop,
                                             std::vector<std::shared_ptr<Job>>* gone = nullptr)
      EXCLUDES(mu_);
  // Takes up to max_jobs queued jobs without waiting (none: empty). Completed (timed out)
  // jobs are dropped; with `gone`, jobs whose client has gone are moved there.
  std::vector<std::shared_ptr<Job>> TryPop(size_t max_jobs,
                                           std::vector<std::shared_ptr<Job>>* gone = nullptr)
      EXCLUDES(mu_);
  // Completes (through `expire`) and removes queued jobs whose deadline has passed.
  void ExpireOverdue(Clock::time_point now, const std::function<void(Job&)>& expire) EXCLUDES(mu_);
  // Blocks until the queue is empty, `give_up()` is true (asked with the queue's lock held,
  // after every WakeAll), or `until` passes; returns whether it is empty.
  bool WaitEmpty(Clock::time_point until, const std::function<bool()>& give_up) EXCLUDES(mu_);
  // Refuses new jobs and wakes waiting workers; queued jobs can still be popped.
  void Close() EXCLUDES(mu_);
  // Removes and returns the queued jobs whose client has gone.
  std::vector<std::shared_ptr<Job>> TakeGone() EXCLUDES(mu_);
  // Removes and returns every queued job.
  std::vector<std::shared_ptr<Job>> Drain() EXCLUDES(mu_);
  // Wakes every waiter (PopBatch, WaitEmpty) to look again at what it waits for.
  void WakeAll() EXCLUDES(mu_);
  size_t size() const EXCLUDES(mu_);
  size_t capacity() const { return capacity_; }

 private:
  // Moves the jobs whose client has gone to `gone`.
  void TakeGoneLocked(std::vector<std::shared_ptr<Job>>* gone) REQUIRES(mu_);
  // After jobs_ shrank or grew: the depth gauge, and WaitEmpty's wake-up when empty.
  void SizeChanged() REQUIRES(mu_);

  const size_t capacity_;
  metrics::Gauge* depth_;
  Now now_;
  mutable Mutex mu_;
  CondVar cv_;        // jobs arrived, closed, or a worker must look at its stop flag
  CondVar empty_cv_;  // the queue became empty, or WakeAll
  std::deque<std::shared_ptr<Job>> jobs_ GUARDED_BY(mu_);
  bool closed_ GUARDED_BY(mu_) = false;
};

// What a worker is doing. TorchServe's describe shows READY/UNLOADING; tserve shows LOADING,
// READY, FAILED (WorkerStateName).
enum class WorkerState { kLoading, kReady, kFailed, kStopped };
const char* WorkerStateName(WorkerState state);

// What Submit did with a job. Each refusal is counted under its own failure reason
// (fail_queue_full, fail_no_worker) and leaves the job for the caller to complete.
enum class SubmitResult { kAccepted, kQueueFull, kNoWorker };

// The workers of one model version: N threads, each with its own Handler instance, taking
// batches from the queue. A worker whose handler cannot load retries with back-off; a batch
// whose handler throws fails with 500s and the worker goes on. Every latency is derived
// from the job's stamps and recorded through the model version's ModelMetrics.
//
// Lock order (each may be taken while holding the ones before it, never the other way):
//   running_mu_ -> workers_mu_ -> JobQueue's mutex;  stop_mu_ is taken alone.
// No callback (a job's sink, a handler) runs with workers_mu_ or the queue's mutex held;
// the reaper completes running jobs with running_mu_ and workers_mu_ held (a sink only
// hands the answer to its transport).
// Thread safety: all public methods may be called from any thread.
class WorkerPool {
 public:
  // `metrics` is the model version's one copy: it must outlive the pool.
  WorkerPool(PoolOptions options, const backend::HandlerFactory* factory,
             metrics::Registry* registry, const ModelMetrics* metrics,
             tserve::Metrics* handler_metrics, std::function<int()> next_worker_port);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Stamps the enqueue time and queues the job; never blocks. Refused (no worker ready or
  // loading, or the queue full): counted, and the job is left uncompleted for the caller.
  SubmitResult Submit(std::shared_ptr<Job> job);

  // Starts or stops workers until `count` run. Stopped workers finish their batch first.
  // A worker thread that cannot be started (std::system_error: the process is out of
  // threads or memory) is an Internal error naming how many started; the workers that did
  // start keep running and the shortfall shows as ts_workers{state="failed"} until the
  // next SetWorkerCount. Never throws.
  Status SetWorkerCount(int count) EXCLUDES(workers_mu_);
  // Completes overdue jobs (queued or running) with 408, and drops queued jobs whose client
  // has gone (client_disconnected). The reaper calls it every 100 ms.
  void ExpireOverdue(Clock::time_point now) EXCLUDES(running_mu_, workers_mu_);
  // Blocks until the queue is empty, or no worker is ready to empty it, or `until`.
  void WaitDrained(Clock::time_point until);
  // Stops every worker after its current batch; queued jobs answer 503.
  void Shutdown() EXCLUDES(workers_mu_);

  int worker_count() const EXCLUDES(workers_mu_);
  int ready_workers() const { return ready_.load(std::memory_order_relaxed); }
  // True when no worker is still loading (each is ready or has failed).
  bool all_settled() const { return starting_.load(std::memory_order_relaxed) == 0; }
  size_t queue_depth() const { return queue_.size(); }
  // Whether a worker has loaded a handler that is a GenerativeHandler.
  bool generative() const { return generative_.load(std::memory_order_relaxed); }
  size_t queue_capacity() const { return queue_.capacity(); }
  const PoolOptions& options() const { return options_; }

  struct WorkerInfo {
    int id;
    std::string name;
    WorkerState state;
    std::chrono::system_clock::time_point start_time;
  };
  std::vector<WorkerInfo> Workers() const EXCLUDES(workers_mu_);

 private:
  struct Worker {
    int port = 0;
    std::string name;
    std::thread thread;
    std::atomic<bool> stop{false};  // set under stop_mu_ (StopWorkers), read anywhere
    std::atomic<WorkerState> state{WorkerState::kLoading};
    std::chrono::system_clock::time_point start_time;
    metrics::Gauge* load_time = nullptr;
    // The batch it is running, for the timeout reaper; guarded by the pool's running_mu_
    // (not annotated: the analysis cannot name the enclosing object's mutex).
    std::vector<std::shared_ptr<Job>> running;
  };

  void Run(Worker* w);
  // Loads the handler (retrying with back-off) and serves until the worker stops: true; or
  // false when a generative handler broke and must be loaded again.
  bool RunOnce(Worker* w);
  // The loop of a generative handler (worker_generation.cc): admit waiting requests while
  // it has room, then one Step over the running ones. True when the worker stopped; false
  // when the handler's Step threw (every running sequence was failed with 500).
  bool RunGeneration(Worker* w, GenerativeHandler* handler);
  std::unique_ptr<Handler> LoadHandler(Worker* w);
  void RunBatch(Worker* w, Handler* handler, std::vector<std::shared_ptr<Job>>& jobs)
      EXCLUDES(running_mu_);
  void Finish(Job& job, JobResult result, Clock::time_point end);
  // The metrics of a claimed job's outcome (status), before its answer is delivered.
  void RecordOutcome(const Job& job, int status, Clock::time_point end);
  void SetState(Worker* w, WorkerState state);
  // Sets the workers' stop flags and wakes them (from a back-off wait or the queue).
  void StopWorkers(const std::vector<std::unique_ptr<Worker>>& workers) EXCLUDES(stop_mu_);
  // Answers queued jobs 503 when no worker is ready or loading (all failed).
  void FailQueuedIfNoWorker();
  // The answers of a job that ran out of time (408) and of one the version's unload or the
  // server's exit cut short (503).
  JobResult TimeoutError() const;
  JobResult UnloadedError() const;
  // Claims the job (if nobody has) and answers it with those, counted as timeout / unloaded.
  void FailTimedOut(Job& job);
  void FailUnloaded(Job& job);
  // Answers jobs whose client has gone (counted as client_disconnected).
  void DropGone(std::vector<std::shared_ptr<Job>>& gone);
  void PublishWorkerStates();

  const PoolOptions options_;
  const backend::HandlerFactory* factory_;
  metrics::Registry* registry_;
  const ModelMetrics& metrics_;  // the model version's
  tserve::Metrics* handler_metrics_;
  std::function<int()> next_worker_port_;
  JobQueue queue_;
  std::atomic<int> ready_{0};
  std::atomic<int> starting_{0};
  std::atomic<int> failed_{0};
  std::atomic<int> start_failed_{0};  // workers of the last SetWorkerCount that never started
  // Generation gauges, summed over the workers (each adds the change of its own share).
  std::atomic<bool> generative_{false};
  std::atomic<int> gen_running_{0};
  std::atomic<int> gen_held_{0};  // taken from the queue, waiting for KV-cache room
  std::atomic<int> gen_kv_used_{0};
  std::atomic<int> gen_kv_total_{0};
  friend class GenerationSequence;
  friend class GenerationLoop;

  mutable Mutex running_mu_ ACQUIRED_BEFORE(workers_mu_);  // guards Worker::running
  mutable Mutex workers_mu_;
  std::vector<std::unique_ptr<Worker>> workers_ GUARDED_BY(workers_mu_);
  Mutex stop_mu_;  // with stop_cv_: a failed worker's back-off ends early when stopped
  CondVar stop_cv_;
  std::atomic<bool> shut_down_{false};
};

}  // namespace tserve::serving
