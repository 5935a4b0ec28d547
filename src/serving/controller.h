#pragma once

#include <deque>
#include <functional>
#include <string_view>
#include <thread>
#include <vector>

#include "common/move_only_function.h"
#include "common/mutex.h"
#include "common/status.h"
#include "serving/job.h"

namespace tserve::serving {

// The background side of the model versions, shared by all of them:
//  - a control thread that carries out slow changes (scaling joins workers, unloading
//    drains queues) one at a time, in the order they were posted, never on an HTTP thread;
//  - a reaper thread that every kReapInterval calls `tick` (the manager expires overdue
//    jobs there) and then looks at the waits being watched (a synchronous scale waiting for
//    its workers), so that no control task ever blocks on a wait.
// Thread safety: all methods may be called from any thread; Shutdown once (later calls and
// the destructor do nothing more).
class Controller {
 public:
  static constexpr std::chrono::milliseconds kReapInterval{100};
  using Tick = std::function<void(Clock::time_point now)>;
  // A watched wait. Called on the reaper thread with `now`; returns true once it has
  // completed (it is dropped then). At Shutdown it is called with stopping = true and must
  // complete.
  using Check = MoveOnlyFunction<bool(Clock::time_point now, bool stopping)>;

  explicit Controller(Tick tick);
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // Runs `task` on the control thread after the tasks posted before it. After Shutdown the
  // task is dropped without running.
  void Post(MoveOnlyFunction<void()> task) EXCLUDES(control_mu_);
  // Watches `check` from the next reaper round on (after Shutdown: completes it at once
  // with stopping = true).
  void Watch(Check check) EXCLUDES(waits_mu_);
  // Stops the reaper, runs the control tasks already posted, stops the control thread, then
  // completes every watched wait with stopping = true.
  void Shutdown() EXCLUDES(reaper_mu_, control_mu_, waits_mu_);

 private:
  void ReapLoop() EXCLUDES(reaper_mu_);
  void ControlLoop() EXCLUDES(control_mu_);
  // Completes the waits that are done (all of them when `stopping`).
  void CheckWaits(bool stopping) EXCLUDES(waits_mu_);

  const Tick tick_;

  Mutex reaper_mu_;
  CondVar reaper_cv_;
  bool stopping_ GUARDED_BY(reaper_mu_) = false;

  Mutex control_mu_;
  CondVar control_cv_;
  std::deque<MoveOnlyFunction<void()>> control_tasks_ GUARDED_BY(control_mu_);
  bool control_stop_ GUARDED_BY(control_mu_) = false;

  Mutex waits_mu_;
  std::vector<Check> waits_ GUARDED_BY(waits_mu_);
  bool waits_closed_ GUARDED_BY(waits_mu_) = false;

  std::thread reaper_;
  std::thread control_;
};

// How many worker threads all model versions together may run (max_workers_total): each
// version reserves its target count here before it starts workers.
// Thread safety: all methods may be called from any thread.
class WorkerBudget {
 public:
  explicit WorkerBudget(int limit) : limit_(limit) {}
  int limit() const { return limit_; }
  // Moves `model`'s reservation from `held` to `want` workers. Growing it past the limit is
  // InvalidArgument naming the model, the total and the limit, and changes nothing;
  // shrinking always succeeds.
  Status Change(std::string_view model, int held, int want) EXCLUDES(mu_);
  int reserved() const EXCLUDES(mu_);

 private:
  const int limit_;
  mutable Mutex mu_;
  int reserved_ GUARDED_BY(mu_) = 0;  // Σ the versions' reservations
};

}  // namespace tserve::serving
