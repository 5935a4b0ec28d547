#include "serving/controller.h"

#include <string>

namespace tserve::serving {

Controller::Controller(Tick tick) : tick_(std::move(tick)) {
  reaper_ = std::thread([this] { ReapLoop(); });
  control_ = std::thread([this] { ControlLoop(); });
}

Controller::~Controller() { Shutdown(); }

void Controller::Post(MoveOnlyFunction<void()> task) {
  {
    MutexLock lock(&control_mu_);
    if (control_stop_) return;
    control_tasks_.push_back(std::move(task));
  }
  control_cv_.Signal();
}

void Controller::ControlLoop() {
  MutexLock lock(&control_mu_);
  while (true) {
    control_cv_.Wait(&control_mu_, [this]() REQUIRES(control_mu_) {
      return control_stop_ || !control_tasks_.empty();
    });
    if (control_tasks_.empty()) return;  // stopping and nothing left
    MoveOnlyFunction<void()> task = std::move(control_tasks_.front());
    control_tasks_.pop_front();
    lock.Unlock();
    task();
    task = nullptr;  // its captures go before the next task runs
    lock.Lock();
  }
}

void Controller::Watch(Check check) {
  {
    MutexLock lock(&waits_mu_);
    if (!waits_closed_) {
      waits_.push_back(std::move(check));
      return;
    }
  }
  (void)check(Clock::now(), /*stopping=*/true);
}

void Controller::CheckWaits(bool stopping) {
  std::vector<Check> pending;
  {
    MutexLock lock(&waits_mu_);
    pending.swap(waits_);
    if (stopping) waits_closed_ = true;
  }
  // Checked without the lock: a check may complete a request (and that may post or watch).
  const auto now = Clock::now();
  std::vector<Check> still;
  for (Check& check : pending) {
    if (!check(now, stopping)) still.push_back(std::move(check));
  }
  if (still.empty()) return;
  MutexLock lock(&waits_mu_);
  for (Check& check : still) waits_.push_back(std::move(check));
}

void Controller::ReapLoop() {
  MutexLock lock(&reaper_mu_);
  while (!stopping_) {
    // A timer, not a poll: the reaper's work is due every kReapInterval.
    (void)reaper_cv_.WaitFor(&reaper_mu_, kReapInterval,
                             [this]() REQUIRES(reaper_mu_) { return stopping_; });
    if (stopping_) break;
    lock.Unlock();
    if (tick_) tick_(Clock::now());
    CheckWaits(/*stopping=*/false);
    lock.Lock();
  }
}

void Controller::Shutdown() {
  {
    MutexLock lock(&reaper_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  reaper_cv_.SignalAll();
  if (reaper_.joinable()) reaper_.join();
  {
    MutexLock lock(&control_mu_);
    control_stop_ = true;
  }
  control_cv_.SignalAll();
  if (control_.joinable()) control_.join();
  CheckWaits(/*stopping=*/true);  // after the control thread: it may have added some
}

Status WorkerBudget::Change(std::string_view model, int held, int want) {
  MutexLock lock(&mu_);
  const int total = reserved_ - held + want;
  if (want > held && total > limit_) {
    return Status::InvalidArgument("Cannot run " + std::to_string(want) + " workers for model \"" +
                                   std::string(model) + "\": " + std::to_string(total) +
                                   " workers in all would exceed the limit of " +
                                   std::to_string(limit_) + " (max_workers_total)");
  }
  reserved_ = total;
  return Status::Ok();
}

int WorkerBudget::reserved() const {
  MutexLock lock(&mu_);
  return reserved_;
}

}  // namespace tserve::serving
