#pragma once

// Clang thread-safety annotations (https://clang.llvm.org/docs/ThreadSafetyAnalysis.html).
// They write the lock discipline into the code: a Clang build with -Wthread-safety (on for
// every tserve target, and an error with -Werror) checks that each GUARDED_BY member is only
// touched with its mutex held, that REQUIRES functions are called with it held, and so on.
// On other compilers they expand to nothing.
//
// Use them with the annotated types of common/mutex.h (Mutex, SharedMutex, MutexLock, ...):
// std::mutex itself carries no annotations, so the analysis cannot see it being locked.
//
//   class Counter {
//    public:
//     void Add(int n) EXCLUDES(mu_) { MutexLock l(&mu_); total_ += n; }
//    private:
//     void AddLocked(int n) REQUIRES(mu_) { total_ += n; }
//     Mutex mu_;
//     int total_ GUARDED_BY(mu_) = 0;
//   };

#if defined(__clang__)
#define TSERVE_THREAD_ANNOTATION_(x) __attribute__((x))
#else
#define TSERVE_THREAD_ANNOTATION_(x)
#endif

// A class that is a lock ("mutex") or another capability a thread can hold.
#define CAPABILITY(x) TSERVE_THREAD_ANNOTATION_(capability(x))
// An RAII class that acquires a capability in its constructor and releases it in its
// destructor (MutexLock).
#define SCOPED_CAPABILITY TSERVE_THREAD_ANNOTATION_(scoped_lockable)

// The data member is read and written only with the capability held (shared for reads is
// enough when the capability is a reader/writer lock).
#define GUARDED_BY(x) TSERVE_THREAD_ANNOTATION_(guarded_by(x))
// The data the pointer member points to is guarded by the capability (the pointer is not).
#define PT_GUARDED_BY(x) TSERVE_THREAD_ANNOTATION_(pt_guarded_by(x))

// Lock order: this mutex is acquired before / after the listed ones. (Checked by clang only
// under -Wthread-safety-beta; written down here for readers either way.)
#define ACQUIRED_BEFORE(...) TSERVE_THREAD_ANNOTATION_(acquired_before(__VA_ARGS__))
#define ACQUIRED_AFTER(...) TSERVE_THREAD_ANNOTATION_(acquired_after(__VA_ARGS__))

// The caller must hold the capability (exclusively / at least shared) when calling.
#define REQUIRES(...) TSERVE_THREAD_ANNOTATION_(requires_capability(__VA_ARGS__))
#define REQUIRES_SHARED(...) TSERVE_THREAD_ANNOTATION_(requires_shared_capability(__VA_ARGS__))

// The function acquires / releases the capability (exclusively or shared). RELEASE_GENERIC
// releases it whichever way it is held.
#define ACQUIRE(...) TSERVE_THREAD_ANNOTATION_(acquire_capability(__VA_ARGS__))
#define ACQUIRE_SHARED(...) TSERVE_THREAD_ANNOTATION_(acquire_shared_capability(__VA_ARGS__))
#define RELEASE(...) TSERVE_THREAD_ANNOTATION_(release_capability(__VA_ARGS__))
#define RELEASE_SHARED(...) TSERVE_THREAD_ANNOTATION_(release_shared_capability(__VA_ARGS__))
#define RELEASE_GENERIC(...) TSERVE_THREAD_ANNOTATION_(release_generic_capability(__VA_ARGS__))

// The function tries to acquire the capability and returns the given value on success.
#define TRY_ACQUIRE(...) TSERVE_THREAD_ANNOTATION_(try_acquire_capability(__VA_ARGS__))
#define TRY_ACQUIRE_SHARED(...) \
  TSERVE_THREAD_ANNOTATION_(try_acquire_shared_capability(__VA_ARGS__))

// The caller must NOT hold the capability (the function acquires it itself; holding it
// already would deadlock a non-recursive mutex).
#define EXCLUDES(...) TSERVE_THREAD_ANNOTATION_(locks_excluded(__VA_ARGS__))

// The function checks at run time that the capability is held (and stops the process if it
// is not); the analysis assumes it held afterwards.
#define ASSERT_CAPABILITY(x) TSERVE_THREAD_ANNOTATION_(assert_capability(x))
#define ASSERT_SHARED_CAPABILITY(x) TSERVE_THREAD_ANNOTATION_(assert_shared_capability(x))

// The function returns a reference to the given capability (an accessor for a mutex).
#define RETURN_CAPABILITY(x) TSERVE_THREAD_ANNOTATION_(lock_returned(x))

// Turns the analysis off for one function: for code that is correct for reasons the analysis
// cannot follow (say so in a comment beside each use).
#define NO_THREAD_SAFETY_ANALYSIS TSERVE_THREAD_ANNOTATION_(no_thread_safety_analysis)
