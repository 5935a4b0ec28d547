#include "common/mutex.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <vector>

namespace tserve {
namespace {

// A counter whose lock discipline the clang build checks (-Wthread-safety).
class Counter {
 public:
  void Add(int n) EXCLUDES(mu_) {
    MutexLock l(&mu_);
    total_ += n;
    cv_.SignalAll();
  }
  int Get() EXCLUDES(mu_) {
    MutexLock l(&mu_);
    return total_;
  }
  // Blocks until the total reaches at least n.
  void AwaitAtLeast(int n) EXCLUDES(mu_) {
    MutexLock l(&mu_);
    cv_.Wait(&mu_, [&]() REQUIRES(mu_) { return total_ >= n; });
    mu_.AssertHeld();  // held again after the wait
  }
  // As AwaitAtLeast, the loop form.
  void AwaitAtLeastLoop(int n) EXCLUDES(mu_) {
    MutexLock l(&mu_);
    while (total_ < n) cv_.Wait(&mu_);
  }
  bool AwaitFor(int n, std::chrono::milliseconds timeout) EXCLUDES(mu_) {
    MutexLock l(&mu_);
    return cv_.WaitFor(&mu_, timeout, [&]() REQUIRES(mu_) { return total_ >= n; });
  }

 private:
  Mutex mu_;
  CondVar cv_;
  int total_ GUARDED_BY(mu_) = 0;
};

// True when the mutex was free: takes it and gives it back.
bool TryLockAndUnlock(Mutex* mu) {
  if (!mu->TryLock()) return false;
  mu->Unlock();
  return true;
}

TEST(MutexTest, MutexLockSerializesWriters) {
  Counter c;
  constexpr int kThreads = 4;
  constexpr int kAdds = 10000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kAdds; ++i) c.Add(1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.Get(), kThreads * kAdds);
}

TEST(MutexTest, TryLockFailsWhileAnotherThreadHoldsIt) {
  Mutex mu;
  mu.Lock();
  bool got = false;
  std::thread([&] {
    if (mu.TryLock()) {
      got = true;
      mu.Unlock();
    }
  }).join();
  EXPECT_FALSE(got);
  mu.Unlock();
  if (mu.TryLock()) {
    mu.AssertHeld();
    mu.Unlock();
  } else {
    ADD_FAILURE() << "TryLock failed on a free mutex";
  }
}

TEST(MutexTest, MutexLockUnlockAndRelockInsideTheScope) {
  Mutex mu;
  {
    MutexLock l(&mu);
    mu.AssertHeld();
    l.Unlock();
    // Free now: another thread can take it.
    bool got = false;
    std::thread([&] {
      if (mu.TryLock()) {
        got = true;
        mu.Unlock();
      }
    }).join();
    EXPECT_TRUE(got);
    l.Lock();
    mu.AssertHeld();
  }
  // The destructor released it.
  EXPECT_TRUE(TryLockAndUnlock(&mu));
  {
    MutexLock l(&mu);
    l.Unlock();
  }  // the destructor does not unlock twice
  EXPECT_TRUE(TryLockAndUnlock(&mu));
}

TEST(MutexDeathTest, AssertHeldStopsTheProcessWhenNotHeld) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Mutex mu;
  EXPECT_DEATH(mu.AssertHeld(), "AssertHeld failed");
  // Held by another thread is not held by this one.
  mu.Lock();
  EXPECT_DEATH(std::thread([&] { mu.AssertHeld(); }).join(), "AssertHeld failed");
  mu.Unlock();
  SharedMutex smu;
  EXPECT_DEATH(smu.AssertHeld(), "AssertHeld failed");
}

TEST(MutexTest, SharedMutexAdmitsReadersTogether) {
  SharedMutex mu;
  ReaderMutexLock first(&mu);
  mu.AssertReaderHeld();
  // A second reader gets in while the first one holds it (no deadlock).
  bool second_in = false;
  std::thread([&] {
    ReaderMutexLock second(&mu);
    second_in = true;
  }).join();
  EXPECT_TRUE(second_in);
}

TEST(MutexTest, SharedMutexWriterExcludesReadersAndWriters) {
  SharedMutex mu;
  int value = 0;  // guarded by mu
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5000; ++i) {
        WriterMutexLock l(&mu);
        mu.AssertHeld();
        ++value;
      }
    });
    threads.emplace_back([&] {
      for (int i = 0; i < 5000; ++i) {
        ReaderMutexLock l(&mu);
        EXPECT_GE(value, 0);
      }
    });
  }
  for (auto& t : threads) t.join();
  WriterMutexLock l(&mu);
  EXPECT_EQ(value, 4 * 5000);
}

TEST(CondVarTest, WaitWithPredicateReturnsOnceTheConditionHolds) {
  Counter c;
  std::thread waiter([&] { c.AwaitAtLeast(3); });
  std::thread loop_waiter([&] { c.AwaitAtLeastLoop(3); });
  for (int i = 0; i < 3; ++i) c.Add(1);
  waiter.join();
  loop_waiter.join();
  EXPECT_EQ(c.Get(), 3);
}

TEST(CondVarTest, SignalAllWakesEveryWaiter) {
  Counter c;
  std::vector<std::thread> waiters;
  for (int i = 0; i < 4; ++i) waiters.emplace_back([&] { c.AwaitAtLeast(1); });
  c.Add(1);  // one SignalAll
  for (auto& t : waiters) t.join();
}

TEST(CondVarTest, WaitForReturnsFalseWhenTheConditionNeverHolds) {
  Counter c;
  EXPECT_FALSE(c.AwaitFor(1, std::chrono::milliseconds(1)));
  c.Add(1);
  EXPECT_TRUE(c.AwaitFor(1, std::chrono::milliseconds(1)));  // true at once, no wait
}

TEST(CondVarTest, WaitUntilAPastDeadlineReturnsWithTheMutexHeld) {
  Mutex mu;
  CondVar cv;
  MutexLock l(&mu);
  EXPECT_FALSE(cv.WaitUntil(&mu, std::chrono::steady_clock::now() - std::chrono::seconds(1)));
  mu.AssertHeld();
  EXPECT_FALSE(cv.WaitFor(&mu, std::chrono::milliseconds(0), [] { return false; }));
  EXPECT_TRUE(cv.WaitUntil(&mu, std::chrono::system_clock::now(), [] { return true; }));
  mu.AssertHeld();
}

}  // namespace
}  // namespace tserve
