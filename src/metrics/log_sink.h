#pragma once

#include <cstdio>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include "common/mutex.h"
#include "common/status.h"
#include "common/thread_annotations.h"
#include "metrics/metric.h"

namespace tserve::metrics {

// Formats one metric event as a TorchServe log-mode line (without the trailing newline):
//   2023-07-17T17:00:25,016 - Requests2XX.Count:1.0|#Level:Host|#hostname:h,timestamp:1689613225
// Dimensions other than the host name go after the first `|#`; the host name (the series'
// Hostname/hostname label, else `hostname`) and the epoch seconds after the second.
// `now_ms` is the wall clock in milliseconds since the epoch. Pure function.
std::string FormatLogLine(const Series& series, double value, const std::string& hostname,
                          int64_t now_ms);

// The EventSink of log and legacy mode: appends each recorded value to ts_metrics.log
// (metrics.yaml's ts_metrics and tserve's own families) or model_metrics.log
// (model_metrics) in `dir`. Thread safe (one mutex; log mode is not the fast path).
class LogFileSink final : public EventSink {
 public:
  // skip: families not to log (legacy mode keeps the ts_* counters on /metrics only).
  static StatusOr<std::unique_ptr<LogFileSink>> Open(const std::string& dir, std::string hostname,
                                                     std::set<std::string> skip = {});
  ~LogFileSink() override;
  void Record(const Series& series, double value) override EXCLUDES(mu_);
  void Flush() EXCLUDES(mu_);

  // For tests: replaces the wall clock.
  void SetClockForTest(std::function<int64_t()> now_ms) { now_ms_ = std::move(now_ms); }

 private:
  LogFileSink() = default;
  // Serializes writes, so that each line is written and flushed whole. The stream pointers
  // are set once, by Open, before the sink is shared.
  Mutex mu_;
  FILE* ts_ PT_GUARDED_BY(mu_) = nullptr;
  FILE* model_ PT_GUARDED_BY(mu_) = nullptr;
  std::string hostname_;
  std::set<std::string> skip_;
  std::function<int64_t()> now_ms_;
};

}  // namespace tserve::metrics
