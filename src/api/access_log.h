#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "http/server.h"

namespace spdlog {
class logger;
}

namespace tserve::api {

// TorchServe's access log: one line per response, on every listener, in
// <log_location>/access_log.log, as TorchServe's ACCESS_LOG logger writes them plus the
// request id (the response's x-request-id), so that a request can be followed:
//   2026-01-01T12:00:00,123 - /127.0.0.1:50000 "GET /ping HTTP/1.1" 200 1 x-request-id=abc
// Each line is written as it is logged (one write per response, under the file's lock, as
// log4j's default immediateFlush in TorchServe), so `tail -f` and tests see it at once.
// Thread safety: Log may be called from any thread.
class AccessLog final : public http::AccessLogger {
 public:
  // Creates `dir` when missing. "" logs nowhere (Open still succeeds).
  static StatusOr<std::unique_ptr<AccessLog>> Open(const std::string& dir);
  ~AccessLog() override;
  void Log(const http::AccessRecord& record) override;
  void Flush();
  const std::string& path() const { return path_; }

 private:
  AccessLog(std::shared_ptr<spdlog::logger> logger, std::string path)
      : logger_(std::move(logger)), path_(std::move(path)) {}
  std::shared_ptr<spdlog::logger> logger_;
  std::string path_;
};

}  // namespace tserve::api
