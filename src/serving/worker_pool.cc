#include "serving/worker_pool.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <system_error>

namespace tserve::serving {

namespace {

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
double Millis(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
double Micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

JobResult Error(int status, const char* type, std::string message) {
  JobResult r;
  r.status = status;
  r.error_type = type;
  r.body = std::move(message);
  return r;
}

}  // namespace

const char* WorkerStateName(WorkerState state) {
  switch (state) {
    case WorkerState::kLoading:
      return "LOADING";
    case WorkerState::kReady:
      return "READY";
    case WorkerState::kFailed:
      return "FAILED";
    case WorkerState::kStopped:
      return "STOPPED";
  }
  return "LOADING";
}

JobQueue::JobQueue(size_t capacity, metrics::Gauge* depth, Now now)
    : capacity_(capacity), depth_(depth), now_(std::move(now)) {}

void JobQueue::SizeChanged() {
  if (depth_ != nullptr) depth_->Set(static_cast<double>(jobs_.size()));
  if (jobs_.empty()) empty_cv_.SignalAll();
}

bool JobQueue::Push(std::shared_ptr<Job> job, std::vector<std::shared_ptr<Job>>* gone) {
  {
    MutexLock lock(&mu_);
    if (closed_) return false;
    if (jobs_.size() >= capacity_ && gone != nullptr) TakeGoneLocked(gone);
    if (jobs_.size() >= capacity_) return false;
    job->set_enqueued(now_());
    jobs_.push_back(std::move(job));
    SizeChanged();
  }
  cv_.Signal();
  return true;
}

std::vector<std::shared_ptr<Job>> JobQueue::PopBatch(size_t max_jobs,
                                                     std::chrono::milliseconds max_delay,
                                                     const std::atomic<bool>& stop,
                                                     std::vector<std::shared_ptr<Job>>* gone) {
  std::vector<std::shared_ptr<Job>> batch;
  MutexLock lock(&mu_);
  auto wake = [&]() REQUIRES(mu_) { return !jobs_.empty() || closed_ || stop.load(); };
  auto take = [&]() REQUIRES(mu_) {
    while (!jobs_.empty() && batch.size() < max_jobs) {
      std::shared_ptr<Job> job = std::move(jobs_.front());
      jobs_.pop_front();
      if (job->completed()) continue;  // timed out already
      if (gone != nullptr && job->client_gone()) {
        gone->push_back(std::move(job));
      } else {
        batch.push_back(std::move(job));
      }
    }
  };
  auto found_gone = [&] { return gone != nullptr && !gone->empty(); };
  while (batch.empty() && !found_gone()) {
    cv_.Wait(&mu_, wake);
    if (stop.load() || jobs_.empty()) break;  // stopping, or closed and drained
    take();
    if (batch.empty()) continue;  // only timed-out or abandoned jobs were there
    // Dynamic batching: wait up to max_delay after the first job for the batch to fill.
    const auto deadline = Clock::now() + max_delay;
    while (batch.size() < max_jobs) {
      if (!cv_.WaitUntil(&mu_, deadline, wake)) break;
      if (stop.load() || (closed_ && jobs_.empty())) break;
      take();
    }
  }
  SizeChanged();
  lock.Unlock();
  if (gone != nullptr) {
    // Clients may have left while the batch filled: ask once more before it runs.
    auto left = std::stable_partition(batch.begin(), batch.end(),
                                      [](const auto& job) { return !job->client_gone(); });
    std::move(left, batch.end(), std::back_inserter(*gone));
    batch.erase(left, batch.end());
  }
  return batch;
}

std::vector<std::shared_ptr<Job>> JobQueue::TryPop(size_t max_jobs,
                                                   std::vector<std::shared_ptr<Job>>* gone) {
  std::vector<std::shared_ptr<Job>> taken;
  MutexLock lock(&mu_);
  if (jobs_.empty()) return taken;
  while (!jobs_.empty() && taken.size() < max_jobs) {
    std::shared_ptr<Job> job = std::move(jobs_.front());
    jobs_.pop_front();
    if (job->completed()) continue;
    if (gone != nullptr && job->client_gone()) {
      gone->push_back(std::move(job));
    } else {
      taken.push_back(std::move(job));
    }
  }
  SizeChanged();
  return taken;
}

void JobQueue::ExpireOverdue(Clock::time_point now, const std::function<void(Job&)>& expire) {
  std::vector<std::shared_ptr<Job>> overdue;
  {
    MutexLock lock(&mu_);
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      if ((*it)->deadline() <= now) {
        overdue.push_back(std::move(*it));
        it = jobs_.erase(it);
      } else {
        ++it;
      }
    }
    if (!overdue.empty()) SizeChanged();
  }
  for (auto& job : overdue) expire(*job);
}

bool JobQueue::WaitEmpty(Clock::time_point until, const std::function<bool()>& give_up) {
  MutexLock lock(&mu_);
  empty_cv_.WaitUntil(&mu_, until, [&]() REQUIRES(mu_) { return jobs_.empty() || give_up(); });
  return jobs_.empty();
}

void JobQueue::Close() {
  {
    MutexLock lock(&mu_);
    closed_ = true;
  }
  cv_.SignalAll();
}

void JobQueue::TakeGoneLocked(std::vector<std::shared_ptr<Job>>* gone) {
  const size_t before = jobs_.size();
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    if ((*it)->client_gone()) {
      gone->push_back(std::move(*it));
      it = jobs_.erase(it);
    } else {
      ++it;
    }
  }
  if (jobs_.size() != before) SizeChanged();
}

std::vector<std::shared_ptr<Job>> JobQueue::TakeGone() {
  std::vector<std::shared_ptr<Job>> gone;
  MutexLock lock(&mu_);
  TakeGoneLocked(&gone);
  return gone;
}

std::vector<std::shared_ptr<Job>> JobQueue::Drain() {
  MutexLock lock(&mu_);
  std::vector<std::shared_ptr<Job>> out(std::make_move_iterator(jobs_.begin()),
                                        std::make_move_iterator(jobs_.end()));
  jobs_.clear();
  SizeChanged();
  return out;
}

void JobQueue::WakeAll() {
  // Taking the lock orders the caller's change (a stop flag, a worker count) before the
  // waiters' next look at it, so no wake-up is lost.
  { MutexLock lock(&mu_); }
  cv_.SignalAll();
  empty_cv_.SignalAll();
}

size_t JobQueue::size() const {
  MutexLock lock(&mu_);
  return jobs_.size();
}

WorkerPool::WorkerPool(PoolOptions options, const backend::HandlerFactory* factory,
                       metrics::Registry* registry, const ModelMetrics* metrics,
                       tserve::Metrics* handler_metrics, std::function<int()> next_worker_port)
    : options_(std::move(options)),
      factory_(factory),
      registry_(registry),
      metrics_(*metrics),
      handler_metrics_(handler_metrics),
      next_worker_port_(std::move(next_worker_port)),
      queue_(options_.queue_capacity, metrics_.queue_depth) {
  // spdlog's registry is a lazily built static inside its shared library: build it here,
  // before the workers, so its first use is not two workers racing on its initialisation.
  spdlog::default_logger_raw();
  metrics_.queue_depth->Set(0.0);
  PublishWorkerStates();
}

WorkerPool::~WorkerPool() { Shutdown(); }

SubmitResult WorkerPool::Submit(std::shared_ptr<Job> job) {
  // No worker at all, or every one failed to load (none ready or starting): 503 at once.
  if (worker_count() == 0 || (ready_.load() == 0 && starting_.load() == 0)) {
    metrics_.fail_no_worker->Inc();
    return SubmitResult::kNoWorker;
  }
  std::vector<std::shared_ptr<Job>> gone;
  const bool pushed = queue_.Push(std::move(job), &gone);
  DropGone(gone);
  if (!pushed) {
    metrics_.fail_queue_full->Inc();
    return SubmitResult::kQueueFull;
  }
  return SubmitResult::kAccepted;
}

int WorkerPool::worker_count() const {
  MutexLock lock(&workers_mu_);
  return static_cast<int>(workers_.size());
}

void WorkerPool::SetState(Worker* w, WorkerState state) {
  const WorkerState old = w->state.exchange(state);
  if (old == state) return;
  auto counter = [this](WorkerState s) -> std::atomic<int>* {
    switch (s) {
      case WorkerState::kLoading:
        return &starting_;
      case WorkerState::kReady:
        return &ready_;
      case WorkerState::kFailed:
        return &failed_;
      case WorkerState::kStopped:
        return nullptr;
    }
    return nullptr;
  };
  if (auto* c = counter(old)) c->fetch_sub(1);
  if (auto* c = counter(state)) c->fetch_add(1);
  PublishWorkerStates();
  queue_.WakeAll();  // WaitDrained gives up once no worker is ready
}

void WorkerPool::StopWorkers(const std::vector<std::unique_ptr<Worker>>& workers) {
  {
    MutexLock lock(&stop_mu_);
    for (const auto& w : workers) w->stop = true;
  }
  stop_cv_.SignalAll();
  queue_.WakeAll();
}

void WorkerPool::WaitDrained(Clock::time_point until) {
  (void)queue_.WaitEmpty(until, [this] { return ready_.load() == 0; });
}

void WorkerPool::PublishWorkerStates() {
  metrics_.workers_starting->Set(starting_.load());
  metrics_.workers_ready->Set(ready_.load());
  metrics_.workers_failed->Set(failed_.load() + start_failed_.load());
}

Status WorkerPool::SetWorkerCount(int count) {
  std::vector<std::unique_ptr<Worker>> stopping;
  Status status;
  {
    MutexLock lock(&workers_mu_);
    if (shut_down_) return Status::Ok();
    start_failed_ = 0;  // this call's target replaces the last one's
    while (static_cast<int>(workers_.size()) < count) {
      auto w = std::make_unique<Worker>();
      w->port = next_worker_port_();
      w->name =
          "W-" + std::to_string(w->port) + "-" + options_.model_name + "_" + options_.model_version;
      w->start_time = std::chrono::system_clock::now();
      auto gauge = WorkerLoadTimeGauge(registry_, w->name, options_.hostname);
      w->load_time = gauge.ok() ? *gauge : nullptr;
      starting_.fetch_add(1);  // state starts at kLoading
      Worker* raw = w.get();
      workers_.push_back(std::move(w));
      try {
        std::function<void()> body = [this, raw] { Run(raw); };
        raw->thread = options_.start_thread ? options_.start_thread(std::move(body))
                                            : std::thread(std::move(body));
      } catch (const std::system_error& e) {
        // Nothing runs for it: undo the worker and report the shortfall.
        starting_.fetch_sub(1);
        RemoveWorkerLoadTime(registry_, raw->name, options_.hostname);
        workers_.pop_back();
        const int started = static_cast<int>(workers_.size());
        start_failed_ = count - started;
        status = Status::Internal("Failed to start worker " + std::to_string(started + 1) + " of " +
                                  std::to_string(count) + " for model \"" + options_.model_name +
                                  "\" version " + options_.model_version + ": " + e.what());
        spdlog::error("{}", status.message());
        break;
      }
    }
    while (static_cast<int>(workers_.size()) > count) {
      stopping.push_back(std::move(workers_.back()));
      workers_.pop_back();
    }
  }
  PublishWorkerStates();
  if (stopping.empty()) return status;
  StopWorkers(stopping);
  for (auto& w : stopping) {
    if (w->thread.joinable()) w->thread.join();
    RemoveWorkerLoadTime(registry_, w->name, options_.hostname);
  }
  if (count == 0) FailQueuedIfNoWorker();  // scaled to zero: nobody will take them
  return status;
}

void WorkerPool::Shutdown() {
  if (shut_down_.exchange(true)) return;
  std::vector<std::unique_ptr<Worker>> all;
  {
    MutexLock lock(&workers_mu_);
    all = std::move(workers_);
    workers_.clear();
  }
  queue_.Close();
  StopWorkers(all);
  for (auto& w : all) {
    if (w->thread.joinable()) w->thread.join();
    RemoveWorkerLoadTime(registry_, w->name, options_.hostname);
  }
  for (auto& job : queue_.Drain()) FailUnloaded(*job);  // answered already (408): skipped
  start_failed_ = 0;
  PublishWorkerStates();
}

void WorkerPool::DropGone(std::vector<std::shared_ptr<Job>>& gone) {
  for (auto& job : gone) {
    if (!job->Claim()) continue;
    metrics_.fail_client_disconnected->Inc();
    // Nobody will read it; the transport drops it.
    job->Deliver(Error(503, "ServiceUnavailableException",
                       "The client closed the connection before the request was served"));
  }
  gone.clear();
}

void WorkerPool::FailQueuedIfNoWorker() {
  if (ready_.load() != 0 || starting_.load() != 0) return;
  for (auto& job : queue_.Drain()) {
    if (!job->Claim()) continue;
    metrics_.fail_no_worker->Inc();
    job->Deliver(Error(503, "ServiceUnavailableException",
                       "Model \"" + options_.model_name +
                           "\" has no worker to serve inference request. Please use scale "
                           "workers API to add workers."));
  }
}

JobResult WorkerPool::TimeoutError() const {
  return Error(
      408, "RequestTimeoutException",
      "Timed out waiting for model \"" + options_.model_name + "\" to answer (responseTimeout)");
}

JobResult WorkerPool::UnloadedError() const {
  return Error(503, "ServiceUnavailableException",
               "Model \"" + options_.model_name + "\" is being unloaded");
}

void WorkerPool::FailTimedOut(Job& job) {
  if (!job.Claim()) return;
  metrics_.fail_timeout->Inc();
  job.Deliver(TimeoutError());
}

void WorkerPool::FailUnloaded(Job& job) {
  if (!job.Claim()) return;
  metrics_.fail_unloaded->Inc();
  job.Deliver(UnloadedError());
}

void WorkerPool::ExpireOverdue(Clock::time_point now) {
  auto expire = [this](Job& job) { FailTimedOut(job); };
  queue_.ExpireOverdue(now, expire);
  auto gone = queue_.TakeGone();
  DropGone(gone);
  MutexLock lock(&running_mu_);
  MutexLock wlock(&workers_mu_);
  for (auto& w : workers_) {
    for (auto& job : w->running) {
      if (job->deadline() <= now) expire(*job);
    }
  }
}

std::vector<WorkerPool::WorkerInfo> WorkerPool::Workers() const {
  MutexLock lock(&workers_mu_);
  std::vector<WorkerInfo> out;
  for (const auto& w : workers_) out.push_back({w->port, w->name, w->state.load(), w->start_time});
  return out;
}

std::unique_ptr<Handler> WorkerPool::LoadHandler(Worker* w) {
  const auto t0 = Clock::now();
  auto handler = factory_->Create(options_.handler, options_.model_dir);
  if (!handler.ok()) {
    spdlog::error("{}: cannot create handler for model {}: {}", w->name, options_.model_name,
                  handler.status().message());
    return nullptr;
  }
  ModelContext ctx = options_;  // the model's part of the pool's settings
  ctx.worker_id = w->port;
  ctx.metrics = handler_metrics_;
  try {
    (*handler)->Initialize(ctx);
  } catch (const std::exception& e) {
    spdlog::error("{}: model {} failed to load: {}", w->name, options_.model_name, e.what());
    return nullptr;
  } catch (...) {
    // A plugin may throw anything; it must not escape the worker thread (std::terminate).
    spdlog::error(
        "{}: model {} failed to load: the handler's Initialize threw a "
        "non-standard exception",
        w->name, options_.model_name);
    return nullptr;
  }
  const double ms = Millis(Clock::now() - t0);
  if (w->load_time != nullptr) w->load_time->Set(std::round(ms));
  spdlog::info("{}: model {} version {} loaded in {:.0f} ms", w->name, options_.model_name,
               options_.model_version, ms);
  return std::move(*handler);
}

void WorkerPool::Run(Worker* w) {
  // A generative handler that broke (its Step threw) is reloaded: its state is unknown.
  while (!RunOnce(w)) {
  }
  SetState(w, WorkerState::kStopped);
}

bool WorkerPool::RunOnce(Worker* w) {
  std::unique_ptr<Handler> handler;
  auto backoff = std::chrono::milliseconds(1000);
  while (!w->stop) {
    handler = LoadHandler(w);
    if (handler != nullptr) break;
    metrics_.worker_load_failures->Inc();
    SetState(w, WorkerState::kFailed);
    FailQueuedIfNoWorker();
    spdlog::warn("{}: retrying in {} ms", w->name, backoff.count());
    {
      MutexLock lock(&stop_mu_);
      (void)stop_cv_.WaitFor(&stop_mu_, backoff, [w] { return w->stop.load(); });
    }
    backoff = std::min(backoff * 2, std::chrono::milliseconds(30000));
    if (!w->stop) SetState(w, WorkerState::kLoading);
  }
  if (handler == nullptr) return true;  // stopped while loading
  if (auto* generative = dynamic_cast<GenerativeHandler*>(handler.get())) {
    generative_ = true;
    if (RunGeneration(w, generative)) return true;  // ready once its metrics are out
    SetState(w, WorkerState::kLoading);
    return false;
  }
  SetState(w, WorkerState::kReady);
  {
    std::vector<std::shared_ptr<Job>> gone;
    while (!w->stop) {
      auto jobs = queue_.PopBatch(static_cast<size_t>(std::max(1, options_.batch_size)),
                                  options_.max_batch_delay, w->stop, &gone);
      DropGone(gone);
      if (jobs.empty()) {
        if (w->stop || shut_down_) break;
        continue;
      }
      RunBatch(w, handler.get(), jobs);
    }
  }
  return true;
}

void WorkerPool::RunBatch(Worker* w, Handler* handler, std::vector<std::shared_ptr<Job>>& jobs) {
  const auto picked = Clock::now();
  for (auto& job : jobs) job->set_started(picked);
  {
    MutexLock lock(&running_mu_);
    w->running = jobs;
  }
  tserve::Batch batch;
  batch.requests.reserve(jobs.size());
  for (const auto& job : jobs) {
    batch.requests.push_back({job->request_id(), job->content_type(), job->body()});
  }
  std::string error;
  Clock::time_point t0 = Clock::now(), t1 = t0, t2 = t0, t3 = t0;
  try {
    handler->Preprocess(batch);
    t1 = Clock::now();
    handler->Inference(batch);
    t2 = Clock::now();
    handler->Postprocess(batch);
    t3 = Clock::now();
    if (batch.responses.size() != jobs.size()) {
      error = "handler returned " + std::to_string(batch.responses.size()) + " responses for " +
              std::to_string(jobs.size()) + " requests";
    }
  } catch (const std::exception& e) {
    error = e.what();
  } catch (...) {
    error = "unknown exception";
  }
  const auto end = Clock::now();
  metrics_.batch_size->Observe(static_cast<double>(jobs.size()));
  if (error.empty()) {
    metrics_.handler_time_ms->Set(Millis(t3 - t0));
    metrics_.prediction_time_ms->Set(Millis(t2 - t1));
    metrics_.handler_duration->Observe(Seconds(t3 - t0));
    metrics_.worker_thread_time_ms->Set(Millis((end - picked) - (t3 - t0)));
    for (size_t i = 0; i < jobs.size(); ++i) {
      InferenceResponse& r = batch.responses[i];
      if (options_.max_response_size != 0 && r.body.size() > options_.max_response_size) {
        // max_response_size, as TorchServe: the response is refused, the request fails.
        if (jobs[i]->Claim()) {
          metrics_.fail_response_too_large->Inc();
          jobs[i]->Deliver(Error(500, "InternalServerException",
                                 "Prediction failed: the response of " +
                                     std::to_string(r.body.size()) +
                                     " bytes is larger than max_response_size (" +
                                     std::to_string(options_.max_response_size) + " bytes)"));
        }
        continue;
      }
      JobResult result;
      result.status = r.status;
      result.content_type = std::move(r.content_type);
      result.body = std::move(r.body);
      Finish(*jobs[i], std::move(result), end);
    }
  } else {
    spdlog::warn("{}: batch of {} failed: {}", w->name, jobs.size(), error);
    for (auto& job : jobs) {
      Finish(*job, Error(500, "InternalServerException", "Prediction failed: " + error), end);
    }
  }
  MutexLock lock(&running_mu_);
  w->running.clear();
}

void WorkerPool::Finish(Job& job, JobResult result, Clock::time_point end) {
  if (!job.Claim()) return;  // the reaper answered 408 already
  // Metrics first, then the answer: a client that got its response sees it counted.
  RecordOutcome(job, result.status, end);
  job.Deliver(std::move(result));
}

void WorkerPool::RecordOutcome(const Job& job, int status, Clock::time_point end) {
  if (status >= 200 && status < 300) {
    const ModelMetrics::VersionLabelled& l =
        job.explicit_version() ? metrics_.by_explicit : metrics_.by_default;
    const auto queued = job.started() - job.enqueued();
    l.latency_us->Add(Micros(end - job.arrival()));
    l.queue_latency_us->Add(Micros(queued));
    metrics_.queue_time_ms->Set(Millis(queued));
    metrics_.request_duration->Observe(Seconds(end - job.arrival()));
    metrics_.queue_duration->Observe(Seconds(queued));
  } else if (status >= 400 && status < 500) {
    metrics_.fail_bad_input->Inc();
  } else {
    metrics_.fail_handler_error->Inc();
  }
}

}  // namespace tserve::serving
