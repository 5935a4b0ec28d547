#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backend/handler_factory.h"
#include "metrics/registry.h"
#include "serving/job.h"
#include "serving/model_metrics.h"
#include "tserve/handler.h"

namespace tserve::serving {

// The settings of one model version's pool.
struct PoolOptions {
  std::string model_name;
  std::string model_version;
  std::string handler;  // manifest handler: a built-in name or a plugin path
  std::string model_dir;
  std::string serialized_file;                // absolute, or "" when the manifest names none
  std::map<std::string, std::string> config;  // model-config.yaml scalars, for the handler
  int batch_size = 1;
  std::chrono::milliseconds max_batch_delay{100};
  size_t queue_capacity = 100;
  int intra_op_threads = 1;
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
  bool Push(std::shared_ptr<Job> job, std::vector<std::shared_ptr<Job>>* gone = nullptr);
  // Blocks for the first job, then gathers up to max_jobs, waiting at most max_delay after
  // the first one for more. Jobs already completed (timed out) are dropped. Empty once the
  // queue is closed and drained, or when `stop` becomes true. With `gone`, jobs whose
  // client has gone (Job::client_gone, asked when a job is taken and again just before
  // the batch is returned) are moved there instead of into the batch, for the caller to
  // complete; the call then also returns when only such jobs were found.
  std::vector<std::shared_ptr<Job>> PopBatch(size_t max_jobs, std::chrono::milliseconds max_delay,
                                             const std::atomic<bool>& stop,
                                             std::vector<std::shared_ptr<Job>>* gone = nullptr);
  // Completes (through `expire`) and removes queued jobs whose deadline has passed.
  void ExpireOverdue(Clock::time_point now, const std::function<void(Job&)>& expire);
  // Refuses new jobs and wakes waiting workers; queued jobs can still be popped.
  void Close();
  // Removes and returns the queued jobs whose client has gone.
  std::vector<std::shared_ptr<Job>> TakeGone();
  // Removes and returns every queued job.
  std::vector<std::shared_ptr<Job>> Drain();
  void WakeAll();
  size_t size() const;
  size_t capacity() const { return capacity_; }

 private:
  const size_t capacity_;
  metrics::Gauge* depth_;
  Now now_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> jobs_;
  bool closed_ = false;

  // Moves the jobs whose client has gone to `gone`; mu_ held.
  void TakeGoneLocked(std::vector<std::shared_ptr<Job>>* gone);
};

// The workers of one model version: N threads, each with its own Handler instance, taking
// batches from the queue. A worker whose handler cannot load retries with back-off; a batch
// whose handler throws fails with 500s and the worker goes on. Every latency is derived
// from the job's stamps and recorded through the pre-resolved ModelMetrics.
// Thread safety: all public methods may be called from any thread.
class WorkerPool {
 public:
  WorkerPool(PoolOptions options, const backend::HandlerFactory* factory,
             metrics::Registry* registry, ModelMetrics metrics, tserve::Metrics* handler_metrics,
             std::function<int()> next_worker_port);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  enum class SubmitResult { kAccepted, kQueueFull, kNoWorker };
  // Stamps the enqueue time and queues the job; never blocks.
  SubmitResult Submit(std::shared_ptr<Job> job);

  // Starts or stops workers until `count` run. Stopped workers finish their batch first.
  // A worker thread that cannot be started (std::system_error: the process is out of
  // threads or memory) is an Internal error naming how many started; the workers that did
  // start keep running and the shortfall shows as ts_workers{state="failed"} until the
  // next SetWorkerCount. Never throws.
  Status SetWorkerCount(int count);
  // Completes overdue jobs (queued or running) with 408, and drops queued jobs whose client
  // has gone (client_disconnected). The reaper calls it every 100 ms.
  void ExpireOverdue(Clock::time_point now);
  // Stops every worker after its current batch; queued jobs answer 503.
  void Shutdown();

  int worker_count() const;
  int ready_workers() const { return ready_.load(std::memory_order_relaxed); }
  // True when no worker is still loading (each is ready or has failed).
  bool all_settled() const { return starting_.load(std::memory_order_relaxed) == 0; }
  size_t queue_depth() const { return queue_.size(); }
  size_t queue_capacity() const { return queue_.capacity(); }
  const PoolOptions& options() const { return options_; }

  struct WorkerInfo {
    int id;
    std::string name;
    std::string status;  // "LOADING", "READY", "FAILED" (TorchServe's words are READY/UNLOADING)
    std::chrono::system_clock::time_point start_time;
  };
  std::vector<WorkerInfo> Workers() const;

 private:
  struct Worker {
    int port = 0;
    std::string name;
    std::thread thread;
    std::atomic<bool> stop{false};
    std::atomic<int> state{0};  // 0 loading, 1 ready, 2 failed
    std::chrono::system_clock::time_point start_time;
    metrics::Gauge* load_time = nullptr;
    // The batch it is running, for the timeout reaper; guarded by running_mu_.
    std::vector<std::shared_ptr<Job>> running;
  };

  void Run(Worker* w);
  std::unique_ptr<Handler> LoadHandler(Worker* w);
  void RunBatch(Worker* w, Handler* handler, std::vector<std::shared_ptr<Job>>& jobs);
  void Finish(Job& job, JobResult result, Clock::time_point end);
  void SetState(Worker* w, int state);
  // Answers queued jobs 503 when no worker is ready or loading (all failed).
  void FailQueuedIfNoWorker();
  // Answers jobs whose client has gone (counted as client_disconnected).
  void DropGone(std::vector<std::shared_ptr<Job>>& gone);
  void PublishWorkerStates();

  const PoolOptions options_;
  const backend::HandlerFactory* factory_;
  metrics::Registry* registry_;
  const ModelMetrics metrics_;
  tserve::Metrics* handler_metrics_;
  std::function<int()> next_worker_port_;
  JobQueue queue_;
  std::atomic<int> ready_{0};
  std::atomic<int> starting_{0};
  std::atomic<int> failed_{0};
  std::atomic<int> start_failed_{0};  // workers of the last SetWorkerCount that never started

  mutable std::mutex workers_mu_;  // guards workers_
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::unique_ptr<Worker>> retiring_;  // stopped, being joined
  mutable std::mutex running_mu_;                  // guards Worker::running
  std::atomic<bool> shut_down_{false};
};

}  // namespace tserve::serving
