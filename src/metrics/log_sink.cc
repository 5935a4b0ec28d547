#include "metrics/log_sink.h"

#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>

#include "common/file.h"
#include "common/strings.h"
#include "metrics/java_double.h"

namespace tserve::metrics {

namespace {

bool IsHostnameLabel(const std::string& name) { return EqualsIgnoreCase(name, "hostname"); }

void AppendTimestamp(int64_t now_ms, std::string* out) {
  time_t secs = static_cast<time_t>(now_ms / 1000);
  struct tm tm_local;
  localtime_r(&secs, &tm_local);
  char buf[40];
  size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm_local);
  out->append(buf, n);
  char ms[8];
  snprintf(ms, sizeof(ms), ",%03d", static_cast<int>(now_ms % 1000));
  out->append(ms);
}

}  // namespace

std::string FormatLogLine(const Series& series, double value, const std::string& hostname,
                          int64_t now_ms) {
  const FamilyDesc& d = series.family();
  std::string line;
  line.reserve(160);
  AppendTimestamp(now_ms, &line);
  line.append(" - ");
  line.append(d.name);
  line.push_back('.');
  line.append(d.unit);
  line.push_back(':');
  AppendJavaDouble(value, &line);
  line.append("|#");
  std::string host = hostname;
  bool first = true;
  for (size_t i = 0; i < d.label_names.size() && i < series.label_values().size(); ++i) {
    if (IsHostnameLabel(d.label_names[i])) {
      host = series.label_values()[i];
      continue;
    }
    if (!first) line.push_back(',');
    first = false;
    line.append(d.label_names[i]);
    line.push_back(':');
    line.append(series.label_values()[i]);
  }
  line.append("|#hostname:");
  line.append(host);
  line.append(",timestamp:");
  line.append(std::to_string(now_ms / 1000));
  return line;
}

StatusOr<std::unique_ptr<LogFileSink>> LogFileSink::Open(const std::string& dir,
                                                         std::string hostname,
                                                         std::set<std::string> skip) {
  Status s = MakeDirectories(dir);
  if (!s.ok()) return s;
  std::unique_ptr<LogFileSink> sink(new LogFileSink());
  std::string ts_path = dir + "/ts_metrics.log";
  std::string model_path = dir + "/model_metrics.log";
  sink->ts_ = fopen(ts_path.c_str(), "a");
  if (sink->ts_ == nullptr) {
    return Status::Internal("cannot open " + ts_path + ": " + strerror(errno));
  }
  sink->model_ = fopen(model_path.c_str(), "a");
  if (sink->model_ == nullptr) {
    return Status::Internal("cannot open " + model_path + ": " + strerror(errno));
  }
  sink->hostname_ = std::move(hostname);
  sink->skip_ = std::move(skip);
  sink->now_ms_ = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  return sink;
}

LogFileSink::~LogFileSink() {
  if (ts_ != nullptr) fclose(ts_);
  if (model_ != nullptr) fclose(model_);
}

void LogFileSink::Record(const Series& series, double value) {
  const FamilyDesc& d = series.family();
  if (!skip_.empty() && skip_.count(d.name) != 0) return;
  std::string line = FormatLogLine(series, value, hostname_, now_ms_());
  line.push_back('\n');
  MutexLock lock(&mu_);
  FILE* f = d.section == MetricSection::kModel ? model_ : ts_;
  fwrite(line.data(), 1, line.size(), f);
  fflush(f);  // log shippers tail these files; a line must not wait in a buffer
}

void LogFileSink::Flush() {
  MutexLock lock(&mu_);
  fflush(ts_);
  fflush(model_);
}

}  // namespace tserve::metrics
