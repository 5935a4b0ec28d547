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
  // A generation's end (GenerativeHandler): why it ended ("stop", "length", "abort") and
  // its token counts; its text went out in parts (body is empty). "" / 0 otherwise.
  std::string finish_reason;
  int prompt_tokens = 0;
  int completion_tokens = 0;

  // A successful answer, and an error in TorchServe's shape (`type`: its error class).
  static JobResult Answer(int status, std::string content_type, std::string body) {
    JobResult r;
    r.status = status;
    r.content_type = std::move(content_type);
    r.body = std::move(body);
    return r;
  }
  static JobResult Error(int status, std::string type, std::string message) {
    JobResult r;
    r.status = status;
    r.error_type = std::move(type);
    r.body = std::move(message);
    return r;
  }
};

// One part of an answer sent in parts: a generation's new text and how many tokens it is.
struct JobPart {
  std::string text;
  int tokens = 0;
};

// Where the answer to one prediction goes: the transport's end of a Job. The inference API
// implements it over HTTP (api/inference_api.cc), tests over a promise.
//
// The response path:
//  - A batch handler's answer is one part: the worker (or the reaper, or a refusal) calls
//    Finish once with the whole JobResult.
//  - A generation (GenerativeHandler) sends zero or more parts (SendPart), in order, then
//    the one Finish that ends the answer: its status, with finish_reason and the token
//    counts, and an empty body. Only the worker that runs the sequence sends them (the
//    reaper never completes a running generation: the worker ends it, cancelled, at its
//    next step), so parts and Finish come from one thread. A part is sent only when status
//    200 is certain; an error found after the first part ends the answer early (the
//    transport decides how: never a second status line).
//
// Contract: Finish is called at most once (a second call does nothing), from any thread, by
// whoever completed the Job (Job::Claim); SendPart only before it, by the same party. client_gone()
// may be asked from any thread at any time, also while Finish runs. A sink dropped without Finish
// calls nothing: the transport keeps its own guard (an http::Responder dropped unsent answers 500).
// Move-only. Thread safety: Finish by one thread (the Job's claimer); client_gone by any.
class ResponseSink {
 public:
  // Implemented by the transport.
  class Target {
   public:
    virtual ~Target() = default;
    // The whole answer, or the end of one sent in parts, exactly once.
    virtual void Finish(JobResult result) = 0;
    // One part of the answer, before Finish. The default gathers the parts, and Finish then
    // gets their text as its body (a transport that does not stream needs nothing more).
    virtual void SendPart(JobPart part) { gathered_ += part.text; }
    // True once the client is known to have gone (its answer would be lost). Any thread;
    // only ever goes false -> true. Must be cheap: the queue asks it of every job.
    virtual bool client_gone() const { return false; }

   protected:
    // The text of the parts the default SendPart gathered.
    std::string TakeGathered() { return std::move(gathered_); }

   private:
    std::string gathered_;
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
  void SendPart(JobPart part) {
    if (target_ == nullptr || finished_) return;
    target_->SendPart(std::move(part));
  }
  bool finished() const { return finished_; }
  bool client_gone() const { return target_ != nullptr && target_->client_gone(); }

 private:
  class FunctionTarget final : public Target {
   public:
    FunctionTarget(MoveOnlyFunction<void(JobResult)> finish, std::function<bool()> gone)
        : finish_(std::move(finish)), gone_(std::move(gone)) {}
    void Finish(JobResult result) override {
      if (result.body.empty()) result.body = TakeGathered();
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
