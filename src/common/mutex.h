#pragma once

// Mutexes and a condition variable that Clang's thread-safety analysis can see (in the spirit
// of leveldb's port::Mutex / port::CondVar and absl::Mutex): thin wrappers over std::mutex,
// std::shared_mutex and std::condition_variable, annotated with common/thread_annotations.h.
// Use these, not the std types, for every mutex that guards data, and mark the data:
//
//   Mutex mu_;
//   CondVar cv_;                       // signalled when queue_ grows
//   std::deque<Job> queue_ GUARDED_BY(mu_);
//
//   void Push(Job j) EXCLUDES(mu_) {
//     MutexLock l(&mu_);
//     queue_.push_back(std::move(j));
//     cv_.Signal();
//   }
//   Job Pop() EXCLUDES(mu_) {
//     MutexLock l(&mu_);
//     while (queue_.empty()) cv_.Wait(&mu_);
//     ...
//   }
//
// None of these is recursive: locking a mutex the thread already holds deadlocks.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <utility>

#include "common/thread_annotations.h"

namespace tserve {

class CondVar;

namespace mutex_internal {
// Stops the process: a mutex's AssertHeld found it not held by the calling thread.
[[noreturn]] inline void DieNotHeld(const char* what) {
  std::fprintf(stderr, "tserve: %s: AssertHeld failed: not held by this thread\n", what);
  std::abort();
}
}  // namespace mutex_internal

// An exclusive lock. Not copyable or movable.
class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  // Blocks until the calling thread holds the mutex. It must not hold it already.
  void Lock() ACQUIRE() {
    mu_.lock();
    owner_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  }
  // Takes the mutex and returns true when it is free, else returns false at once.
  bool TryLock() TRY_ACQUIRE(true) {
    if (!mu_.try_lock()) return false;
    owner_.store(std::this_thread::get_id(), std::memory_order_relaxed);
    return true;
  }
  // Releases the mutex; the calling thread must hold it.
  void Unlock() RELEASE() {
    owner_.store(std::thread::id(), std::memory_order_relaxed);
    mu_.unlock();
  }
  // Stops the process (message on stderr, abort) unless the calling thread holds the mutex;
  // for the analysis, the mutex is held afterwards. For functions the analysis cannot follow
  // (callbacks run under a lock), and as a cheap run-time check (one relaxed atomic load).
  void AssertHeld() const ASSERT_CAPABILITY(this) {
    if (owner_.load(std::memory_order_relaxed) != std::this_thread::get_id()) {
      mutex_internal::DieNotHeld("Mutex");
    }
  }

 private:
  friend class CondVar;

  std::mutex mu_;
  // The thread holding mu_ (a default id when none): only for AssertHeld. Written by the
  // holder alone, so relaxed order is enough: a thread reads its own id back only if it
  // stored it itself.
  std::atomic<std::thread::id> owner_{};
};

// A reader/writer lock: many readers or one writer. Writers are not preferred over readers
// (std::shared_mutex's policy). Not copyable or movable.
class CAPABILITY("mutex") SharedMutex {
 public:
  SharedMutex() = default;
  SharedMutex(const SharedMutex&) = delete;
  SharedMutex& operator=(const SharedMutex&) = delete;

  // Exclusive (writer) lock: blocks until no other thread holds the mutex in any mode.
  void Lock() ACQUIRE() {
    mu_.lock();
    owner_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  }
  // Releases the exclusive lock; the calling thread must hold it.
  void Unlock() RELEASE() {
    owner_.store(std::thread::id(), std::memory_order_relaxed);
    mu_.unlock();
  }
  // Shared (reader) lock: blocks while a writer holds the mutex. The calling thread must not
  // hold it in either mode.
  void ReaderLock() ACQUIRE_SHARED() { mu_.lock_shared(); }
  // Releases a shared lock the calling thread holds.
  void ReaderUnlock() RELEASE_SHARED() { mu_.unlock_shared(); }
  // Stops the process unless the calling thread holds the exclusive lock (see Mutex).
  void AssertHeld() const ASSERT_CAPABILITY(this) {
    if (owner_.load(std::memory_order_relaxed) != std::this_thread::get_id()) {
      mutex_internal::DieNotHeld("SharedMutex");
    }
  }
  // Tells the analysis the calling thread holds at least a shared lock. Checks nothing at
  // run time (readers are not recorded).
  void AssertReaderHeld() const ASSERT_SHARED_CAPABILITY(this) {}

 private:
  std::shared_mutex mu_;
  std::atomic<std::thread::id> owner_{};  // the writer, for AssertHeld (see Mutex::owner_)
};

// Holds a Mutex for its scope: locks in the constructor, unlocks in the destructor.
// Unlock()/Lock() release and retake it inside the scope (say, around a callback); the
// destructor unlocks only if it is held then.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() RELEASE() {
    if (locked_) mu_->Unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  // Releases the mutex before the end of the scope; it must be held.
  void Unlock() RELEASE() {
    locked_ = false;
    mu_->Unlock();
  }
  // Retakes the mutex after Unlock().
  void Lock() ACQUIRE() {
    mu_->Lock();
    locked_ = true;
  }

 private:
  Mutex* const mu_;
  bool locked_ = true;
};

// Holds a SharedMutex in shared (reader) mode for its scope.
class SCOPED_CAPABILITY ReaderMutexLock {
 public:
  explicit ReaderMutexLock(SharedMutex* mu) ACQUIRE_SHARED(mu) : mu_(mu) { mu_->ReaderLock(); }
  ~ReaderMutexLock() RELEASE() { mu_->ReaderUnlock(); }
  ReaderMutexLock(const ReaderMutexLock&) = delete;
  ReaderMutexLock& operator=(const ReaderMutexLock&) = delete;

 private:
  SharedMutex* const mu_;
};

// Holds a SharedMutex exclusively (writer) for its scope.
class SCOPED_CAPABILITY WriterMutexLock {
 public:
  explicit WriterMutexLock(SharedMutex* mu) ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~WriterMutexLock() RELEASE() { mu_->Unlock(); }
  WriterMutexLock(const WriterMutexLock&) = delete;
  WriterMutexLock& operator=(const WriterMutexLock&) = delete;

 private:
  SharedMutex* const mu_;
};

// A condition variable used with a Mutex (std::condition_variable over the Mutex's
// std::mutex). Every wait takes the Mutex, which the calling thread must hold: the wait
// releases it while blocked and holds it again when it returns. Waits can wake without a
// signal (spuriously), so wait in a loop on the condition, or use the predicate forms:
//
//   while (!ready_) cv_.Wait(&mu_);                       // the analysis sees ready_ read
//   cv_.Wait(&mu_, [&]() REQUIRES(mu_) { return ready_; });
//
// A predicate runs with the mutex held; annotate the lambda REQUIRES(mu_) when it reads
// GUARDED_BY data (the analysis does not look into the caller's lock from a lambda).
// One CondVar may be used with different Mutexes, but never by two waits at once.
// Not copyable or movable.
class CondVar {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  // Releases *mu, blocks until signalled (or a spurious wake-up), retakes *mu.
  void Wait(Mutex* mu) REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    mu->owner_.store(std::thread::id(), std::memory_order_relaxed);
    cv_.wait(lock);
    mu->owner_.store(std::this_thread::get_id(), std::memory_order_relaxed);
    lock.release();  // *mu stays locked: the caller still holds it
  }

  // Waits until pred() is true (checked first, then after every wake-up, with *mu held).
  template <typename Predicate>
  void Wait(Mutex* mu, Predicate pred) REQUIRES(mu) {
    while (!CallPredicate(pred)) Wait(mu);
  }

  // As Wait(mu), but returns at the latest at deadline. Returns false when it returned
  // because the deadline passed, true when woken before it (by a signal or spuriously).
  template <typename Clock, typename Duration>
  bool WaitUntil(Mutex* mu, const std::chrono::time_point<Clock, Duration>& deadline) REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    mu->owner_.store(std::thread::id(), std::memory_order_relaxed);
    const std::cv_status status = cv_.wait_until(lock, deadline);
    mu->owner_.store(std::this_thread::get_id(), std::memory_order_relaxed);
    lock.release();
    return status == std::cv_status::no_timeout;
  }

  // Waits until pred() is true or the deadline passes; returns pred()'s last value (so
  // false means timed out with the condition still false).
  template <typename Clock, typename Duration, typename Predicate>
  bool WaitUntil(Mutex* mu, const std::chrono::time_point<Clock, Duration>& deadline,
                 Predicate pred) REQUIRES(mu) {
    while (!CallPredicate(pred)) {
      if (!WaitUntil(mu, deadline)) return CallPredicate(pred);
    }
    return true;
  }

  // As WaitUntil, with the deadline timeout from now (on the steady clock).
  template <typename Rep, typename Period>
  bool WaitFor(Mutex* mu, const std::chrono::duration<Rep, Period>& timeout) REQUIRES(mu) {
    return WaitUntil(mu, std::chrono::steady_clock::now() + timeout);
  }
  template <typename Rep, typename Period, typename Predicate>
  bool WaitFor(Mutex* mu, const std::chrono::duration<Rep, Period>& timeout, Predicate pred)
      REQUIRES(mu) {
    return WaitUntil(mu, std::chrono::steady_clock::now() + timeout, std::move(pred));
  }

  // Wakes one waiting thread, if any. Holding the mutex is not required (but changing the
  // condition without it can lose the wake-up).
  void Signal() { cv_.notify_one(); }
  // Wakes every waiting thread.
  void SignalAll() { cv_.notify_all(); }

 private:
  // The predicate reads the caller's guarded data with the mutex held; the analysis cannot
  // connect the caller's Mutex* parameter to the lambda's own REQUIRES, so it is not checked
  // here (it is checked in the lambda, when annotated).
  template <typename Predicate>
  static bool CallPredicate(Predicate& pred) NO_THREAD_SAFETY_ANALYSIS {
    return static_cast<bool>(pred());
  }

  std::condition_variable cv_;
};

}  // namespace tserve
