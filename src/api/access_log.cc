#include "api/access_log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>

#include <filesystem>

#include "common/file.h"

namespace tserve::api {

StatusOr<std::unique_ptr<AccessLog>> AccessLog::Open(const std::string& dir) {
  if (dir.empty()) return std::unique_ptr<AccessLog>(new AccessLog(nullptr, ""));
  const std::string path = (std::filesystem::path(dir) / "access_log.log").string();
  if (Status s = MakeDirectories(dir); !s.ok()) {
    return Status::Unavailable("cannot open the access log " + path + ": " + s.message());
  }
  try {
    auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path);
    auto logger = std::make_shared<spdlog::logger>("ACCESS_LOG", std::move(sink));
    logger->set_pattern("%Y-%m-%dT%H:%M:%S,%e - %v");
    logger->set_level(spdlog::level::info);
    logger->flush_on(spdlog::level::off);  // flushed by the flusher thread, not per line
    // (not registered with spdlog: a second Open must not clash)
    return std::unique_ptr<AccessLog>(new AccessLog(std::move(logger), path));
  } catch (const spdlog::spdlog_ex& e) {
    return Status::Unavailable("cannot open the access log " + path + ": " + e.what());
  }
}

AccessLog::AccessLog(std::shared_ptr<spdlog::logger> logger, std::string path)
    : logger_(std::move(logger)), path_(std::move(path)) {
  if (logger_ != nullptr) flusher_ = std::thread([this] { FlushLoop(); });
}

AccessLog::~AccessLog() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  cv_.SignalAll();
  if (flusher_.joinable()) flusher_.join();
  Flush();
}

void AccessLog::FlushLoop() {
  MutexLock lock(&mu_);
  while (!cv_.WaitFor(&mu_, kFlushPeriod, [this]() REQUIRES(mu_) { return stop_; })) {
    lock.Unlock();
    Flush();
    lock.Lock();
  }
}

void AccessLog::Flush() {
  if (logger_ != nullptr) logger_->flush();
}

void AccessLog::Log(const http::AccessRecord& r) {
  if (logger_ == nullptr) return;
  logger_->info("{} \"{} {} HTTP/{}.{}\" {} {} x-request-id={}", r.remote, r.method, r.target,
                r.version / 10, r.version % 10, r.status, r.duration.count(), r.request_id);
}

}  // namespace tserve::api
