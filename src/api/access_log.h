#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "common/mutex.h"
#include "common/status.h"
#include "common/thread_annotations.h"
#include "http/server.h"

namespace spdlog {
class logger;
}

namespace tserve::api {

// TorchServe's access log: one line per response, on every listener, in
// <log_location>/access_log.log, as TorchServe's ACCESS_LOG logger writes them plus the
// request id (the response's x-request-id), so that a request can be followed:
//   2026-01-01T12:00:00,123 - /127.0.0.1:50000 "GET /ping HTTP/1.1" 200 1 x-request-id=abc
// Lines go into the file's buffer under its lock (no system call per response: this is on
// every request's path) and a flusher thread writes them out every kFlushPeriod, so
// `tail -f` sees a line within a second; the destructor flushes what is left.
// Thread safety: Log may be called from any thread.
class AccessLog final : public http::AccessLogger {
 public:
  static constexpr std::chrono::milliseconds kFlushPeriod{500};

  // Creates `dir` when missing. "" logs nowhere (Open still succeeds).
  static StatusOr<std::unique_ptr<AccessLog>> Open(const std::string& dir);
  ~AccessLog() override;
  void Log(const http::AccessRecord& record) override;
  void Flush();
  const std::string& path() const { return path_; }

 private:
  AccessLog(std::shared_ptr<spdlog::logger> logger, std::string path);
  void FlushLoop() EXCLUDES(mu_);

  std::shared_ptr<spdlog::logger> logger_;
  std::string path_;
  Mutex mu_;
  CondVar cv_;  // signalled when stop_ is set
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread flusher_;
};

}  // namespace tserve::api
