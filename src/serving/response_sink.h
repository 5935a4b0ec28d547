#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "common/move_only_function.h"

namespace tserve::serving {

// The outcome of one inference request.
struct JobResult {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::string error_type;  // TorchServe's error class when status is not 2xx
};

// Where the answer to one prediction goes: the transport's end of a Job. The inference API
// implements it over HTTP (api/inference_api.cc), tests over a promise.
//
// The response path, now and later:
//  - Today an answer is one part: the worker (or the reaper, or a refusal) calls Finish once
//    with the whole JobResult.
//  - Streaming (the next issue: tokens as they are made) adds `SendPart(chunk)` to Target:
//    zero or more parts, in order, then the one Finish that ends the answer (its status and
//    headers then travel with the first part). The contract below already holds for that:
//    everything goes through one sink that one party owns at a time, and the Job's Claim
//    decides once who ends it.
//
// Contract: Finish is called at most once (a second call does nothing), from any thread, by
// whoever completed the Job (Job::Claim). client_gone() may be asked from any thread at any
// time, also while Finish runs. A sink dropped without Finish calls nothing: the transport
// keeps its own guard (an http::Responder dropped unsent answers 500).
// Move-only. Thread safety: Finish by one thread (the Job's claimer); client_gone by any.
class ResponseSink {
 public:
  // Implemented by the transport.
  class Target {
   public:
    virtual ~Target() = default;
    // The whole answer (today's single part), exactly once.
    virtual void Finish(JobResult result) = 0;
    // True once the client is known to have gone (its answer would be lost). Any thread;
    // only ever goes false -> true. Must be cheap: the queue asks it of every job.
    virtual bool client_gone() const { return false; }
  };

  ResponseSink() = default;  // answers go nowhere
  explicit ResponseSink(std::unique_ptr<Target> target) : target_(std::move(target)) {}
  ResponseSink(ResponseSink&&) noexcept = default;
  ResponseSink& operator=(ResponseSink&&) noexcept = default;
  ResponseSink(const ResponseSink&) = delete;
  ResponseSink& operator=(const ResponseSink&) = delete;

  // A sink over a function (tests, in-process callers); `gone` answers client_gone (empty:
  // never gone).
  static ResponseSink Of(MoveOnlyFunction<void(JobResult)> finish,
                         std::function<bool()> gone = nullptr) {
    return ResponseSink(std::make_unique<FunctionTarget>(std::move(finish), std::move(gone)));
  }

  void Finish(JobResult result) {
    if (target_ == nullptr || finished_) return;
    finished_ = true;
    target_->Finish(std::move(result));
  }
  bool finished() const { return finished_; }
  bool client_gone() const { return target_ != nullptr && target_->client_gone(); }

 private:
  class FunctionTarget final : public Target {
   public:
    FunctionTarget(MoveOnlyFunction<void(JobResult)> finish, std::function<bool()> gone)
        : finish_(std::move(finish)), gone_(std::move(gone)) {}
    void Finish(JobResult result) override {
      if (finish_) finish_(std::move(result));
    }
    bool client_gone() const override { return gone_ && gone_(); }

   private:
    MoveOnlyFunction<void(JobResult)> finish_;
    std::function<bool()> gone_;
  };

  // Never replaced while the sink is in a Job (client_gone reads it from other threads).
  std::unique_ptr<Target> target_;
  bool finished_ = false;
};

}  // namespace tserve::serving
