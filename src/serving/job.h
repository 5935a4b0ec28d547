#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>

namespace tserve::serving {

using Clock = std::chrono::steady_clock;

// The outcome of one inference request.
struct JobResult {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::string error_type;  // TorchServe's error class when status is not 2xx
};

// One inference request on its way through a model's queue and a worker. Created by the
// inference API, shared by the queue, the worker and the timeout reaper; completed exactly
// once (the first of worker and reaper wins), from any thread.
class Job {
 public:
  using Done = std::function<void(JobResult)>;
  // Answers, from any thread, whether the client that sent the request has gone (its
  // answer would be lost). Must be cheap: the queue asks it of every job it hands out.
  using GoneProbe = std::function<bool()>;

  Job(std::string request_id, std::string body, std::string content_type, bool explicit_version,
      Clock::time_point arrival, Clock::time_point deadline, Done done)
      : request_id_(std::move(request_id)),
        body_(std::move(body)),
        content_type_(std::move(content_type)),
        explicit_version_(explicit_version),
        arrival_(arrival),
        deadline_(deadline),
        done_(std::move(done)) {}

  // Delivers the result if the job is not complete yet; returns whether this call did.
  bool Complete(JobResult result) {
    if (!Claim()) return false;
    Deliver(std::move(result));
    return true;
  }
  // The two halves of Complete, for callers that record metrics in between so that a
  // client that got its answer always sees it counted: Claim wins the job (once), Deliver
  // (only after a successful Claim) sends the result.
  bool Claim() { return !completed_.exchange(true, std::memory_order_acq_rel); }
  void Deliver(JobResult result);
  bool completed() const { return completed_.load(std::memory_order_acquire); }

  // Set once, before the job is submitted; without a probe the client is never gone.
  void set_gone_probe(GoneProbe probe) { gone_probe_ = std::move(probe); }
  bool client_gone() const { return gone_probe_ && gone_probe_(); }

  const std::string& request_id() const { return request_id_; }
  const std::string& body() const { return body_; }
  const std::string& content_type() const { return content_type_; }
  bool explicit_version() const { return explicit_version_; }
  Clock::time_point arrival() const { return arrival_; }
  Clock::time_point deadline() const { return deadline_; }
  Clock::time_point enqueued() const { return enqueued_; }
  Clock::time_point started() const { return started_; }
  void set_enqueued(Clock::time_point t) { enqueued_ = t; }
  void set_started(Clock::time_point t) { started_ = t; }

 private:
  const std::string request_id_;
  const std::string body_;
  const std::string content_type_;
  const bool explicit_version_;
  const Clock::time_point arrival_;
  const Clock::time_point deadline_;
  Clock::time_point enqueued_{};
  Clock::time_point started_{};
  Done done_;
  GoneProbe gone_probe_;
  std::atomic<bool> completed_{false};
};

}  // namespace tserve::serving
