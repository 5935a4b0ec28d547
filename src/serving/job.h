#pragma once

#include <atomic>
#include <chrono>
#include <string>

#include "serving/response_sink.h"

namespace tserve::serving {

using Clock = std::chrono::steady_clock;

// One inference request on its way through a model's queue and a worker. Created by
// ModelVersion::Submit, shared by the queue, the worker and the timeout reaper; completed
// exactly once (the first of worker, reaper and refusal wins), from any thread, through its
// ResponseSink.
class Job {
 public:
  Job(std::string request_id, std::string body, std::string content_type, bool explicit_version,
      Clock::time_point arrival, Clock::time_point deadline, ResponseSink sink)
      : request_id_(std::move(request_id)),
        body_(std::move(body)),
        content_type_(std::move(content_type)),
        explicit_version_(explicit_version),
        arrival_(arrival),
        deadline_(deadline),
        sink_(std::move(sink)) {}

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

  // One part of the answer (a generation's text), before the job is claimed: only its
  // worker calls it (docs/design.md "Generation").
  void SendPart(JobPart part) { sink_.SendPart(std::move(part)); }

  // Whether the client that sent the request has gone (its answer would be lost): asked
  // of the sink, from any thread.
  bool client_gone() const { return sink_.client_gone(); }

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
  ResponseSink sink_;  // Finish only by the claimer (Deliver); client_gone by anyone
  std::atomic<bool> completed_{false};
};

}  // namespace tserve::serving
