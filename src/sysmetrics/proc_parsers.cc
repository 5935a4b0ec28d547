#include "sysmetrics/proc_parsers.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "common/strings.h"

namespace tserve::sysmetrics {
namespace {

bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

std::vector<std::string_view> Fields(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && IsBlank(line[i])) ++i;
    size_t start = i;
    while (i < line.size() && !IsBlank(line[i])) ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

std::optional<uint64_t> ParseU64(std::string_view s) {
  if (s.empty()) return std::nullopt;
  uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

// Calls fn(fields) for each line until it returns true; returns whether one did.
template <typename Fn>
bool ForEachLine(std::string_view text, Fn fn) {
  for (std::string_view line : SplitString(text, '\n')) {
    if (fn(Fields(line))) return true;
  }
  return false;
}

}  // namespace

StatusOr<CpuTimes> ParseProcStat(std::string_view text) {
  std::vector<std::string_view> fields;
  bool found = ForEachLine(text, [&](std::vector<std::string_view> f) {
    if (f.empty() || f[0] != "cpu") return false;
    fields = std::move(f);
    return true;
  });
  if (!found) return Status::InvalidArgument("/proc/stat: no aggregate \"cpu\" line");
  size_t n = fields.size() - 1;
  if (n < 4) {
    return Status::InvalidArgument("/proc/stat: the cpu line has " + std::to_string(n) +
                                   " fields, need at least 4");
  }
  uint64_t values[10] = {};
  for (size_t i = 0; i < std::min<size_t>(n, 10); ++i) {
    std::optional<uint64_t> v = ParseU64(fields[i + 1]);
    if (!v) {
      return Status::InvalidArgument("/proc/stat: bad number " + Quoted(fields[i + 1]) +
                                     " in the cpu line");
    }
    values[i] = *v;
  }
  CpuTimes t;
  t.user = values[0];
  t.nice = values[1];
  t.system = values[2];
  t.idle = values[3];
  t.iowait = values[4];
  t.irq = values[5];
  t.softirq = values[6];
  t.steal = values[7];
  t.guest = values[8];
  t.guest_nice = values[9];
  return t;
}

double CpuUtilizationPercent(const CpuTimes& prev, const CpuTimes& cur) {
  // Counters can step backwards (psutil issues #392, #645, #1210): clamp each delta to 0.
  auto delta = [](uint64_t a, uint64_t b) { return b > a ? static_cast<double>(b - a) : 0.0; };
  double user = delta(prev.user, cur.user);
  double nice = delta(prev.nice, cur.nice);
  double system = delta(prev.system, cur.system);
  double idle = delta(prev.idle, cur.idle);
  double iowait = delta(prev.iowait, cur.iowait);
  double irq = delta(prev.irq, cur.irq);
  double softirq = delta(prev.softirq, cur.softirq);
  double steal = delta(prev.steal, cur.steal);
  double total = user + nice + system + idle + iowait + irq + softirq + steal;
  double busy = total - idle - iowait;
  if (total <= 0) return 0.0;
  double percent = busy / total * 100;
  return RoundToOneDecimal(std::clamp(percent, 0.0, 100.0));
}

StatusOr<double> ParseBootTime(std::string_view proc_stat_text) {
  std::optional<std::string_view> value;
  ForEachLine(proc_stat_text, [&](const std::vector<std::string_view>& f) {
    if (f.size() < 2 || f[0] != "btime") return false;
    value = f[1];
    return true;
  });
  if (!value) return Status::InvalidArgument("/proc/stat: no btime line");
  std::optional<uint64_t> v = ParseU64(*value);
  if (!v) return Status::InvalidArgument("/proc/stat: bad btime value " + Quoted(*value));
  return static_cast<double>(*v);
}

StatusOr<MemInfo> ParseMeminfo(std::string_view text) {
  struct Wanted {
    std::string_view key;
    std::optional<uint64_t> value;
  };
  Wanted wanted[] = {{"MemTotal", {}}, {"MemFree", {}}, {"MemAvailable", {}},
                     {"Buffers", {}},  {"Cached", {}},  {"SReclaimable", {}}};
  for (std::string_view line : SplitString(text, '\n')) {
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view key = line.substr(0, colon);
    for (Wanted& w : wanted) {
      if (w.key != key || w.value) continue;
      std::string_view raw = TrimWhitespace(line.substr(colon + 1));
      std::string_view number = raw;
      if (number.size() >= 2 && number.substr(number.size() - 2) == "kB") {
        number = TrimWhitespace(number.substr(0, number.size() - 2));
      }
      w.value = ParseU64(number);
      if (!w.value) {
        return Status::InvalidArgument("/proc/meminfo: bad " + std::string(key) + " value " +
                                       Quoted(raw));
      }
    }
  }
  auto& [mem_total, mem_free, mem_available, buffers, cached, sreclaimable] = wanted;
  if (!mem_total.value) return Status::InvalidArgument("/proc/meminfo: no MemTotal line");
  if (!mem_free.value) return Status::InvalidArgument("/proc/meminfo: no MemFree line");
  MemInfo info;
  info.total_kb = *mem_total.value;
  info.free_kb = *mem_free.value;
  info.buffers_kb = buffers.value.value_or(0);
  info.cached_kb = cached.value.value_or(0);
  info.sreclaimable_kb = sreclaimable.value.value_or(0);
  if (mem_available.value && *mem_available.value > 0) {
    info.available_kb = *mem_available.value;
  } else {
    // What `free` reported as available before the kernel computed MemAvailable.
    info.available_kb = info.free_kb + info.buffers_kb + info.cached_kb;
    info.available_estimated = true;
  }
  return info;
}

MemoryFigures ComputeMemory(const MemInfo& info) {
  // psutil computes in bytes; kB -> MiB is the same exact power-of-two scaling.
  auto total = static_cast<int64_t>(info.total_kb);
  auto mem_free = static_cast<int64_t>(info.free_kb);
  int64_t used = total - mem_free - static_cast<int64_t>(info.cached_kb + info.sreclaimable_kb) -
                 static_cast<int64_t>(info.buffers_kb);
  // psutil: a negative figure means distorted container numbers; fall back to total - free.
  if (used < 0) used = std::max<int64_t>(total - mem_free, 0);
  MemoryFigures m;
  m.used_mb = static_cast<double>(used) / 1024;
  m.available_mb = static_cast<double>(info.available_kb) / 1024;
  if (info.total_kb > 0) {
    double busy = static_cast<double>(info.total_kb) - static_cast<double>(info.available_kb);
    // Divide first, then scale: psutil's usage_percent order, for the same rounding.
    m.utilization_percent = RoundToOneDecimal(busy / static_cast<double>(info.total_kb) * 100);
  }
  return m;
}

DiskFigures ComputeDisk(uint64_t block_size, uint64_t blocks, uint64_t bfree, uint64_t bavail) {
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  uint64_t used = (blocks > bfree ? blocks - bfree : 0) * block_size;
  uint64_t avail = bavail * block_size;
  DiskFigures d;
  d.used_gb = static_cast<double>(used) / kGiB;
  d.available_gb = static_cast<double>(avail) / kGiB;
  uint64_t total_user = used + avail;
  if (total_user > 0) {
    d.utilization_percent =
        RoundToOneDecimal(static_cast<double>(used) / static_cast<double>(total_user) * 100);
  }
  return d;
}

StatusOr<ProcSelfStat> ParseProcSelfStat(std::string_view text, long clock_ticks_per_sec,
                                         long page_size) {
  if (clock_ticks_per_sec <= 0 || page_size <= 0) {
    return Status::InvalidArgument("ParseProcSelfStat: clock ticks and page size must be > 0");
  }
  size_t paren = text.rfind(')');
  if (paren == std::string_view::npos) {
    return Status::InvalidArgument("/proc/self/stat: no ')' after the command name");
  }
  // Fields after the command name start at field 3 (state); field k is rest[k - 3].
  std::vector<std::string_view> rest = Fields(TrimWhitespace(text.substr(paren + 1)));
  constexpr size_t kNeeded = 24 - 3 + 1;  // up to rss, field 24
  if (rest.size() < kNeeded) {
    return Status::InvalidArgument("/proc/self/stat: " + std::to_string(rest.size()) +
                                   " fields after the command name, need at least " +
                                   std::to_string(kNeeded));
  }
  uint64_t values[5] = {};
  struct Field {
    int number;
    const char* name;
  };
  constexpr Field kFields[] = {
      {14, "utime"}, {15, "stime"}, {20, "num_threads"}, {22, "starttime"}, {23, "vsize"}};
  for (size_t i = 0; i < std::size(kFields); ++i) {
    std::string_view raw = rest[kFields[i].number - 3];
    std::optional<uint64_t> v = ParseU64(raw);
    if (!v) {
      return Status::InvalidArgument("/proc/self/stat: bad " + std::string(kFields[i].name) + " " +
                                     Quoted(raw));
    }
    values[i] = *v;
  }
  // rss is printed signed (%ld); a negative value would be a kernel bug, so refuse it too.
  std::string_view raw_rss = rest[24 - 3];
  std::optional<uint64_t> rss = ParseU64(raw_rss);
  if (!rss) return Status::InvalidArgument("/proc/self/stat: bad rss " + Quoted(raw_rss));

  auto ticks = static_cast<double>(clock_ticks_per_sec);
  ProcSelfStat s;
  s.cpu_seconds = static_cast<double>(values[0] + values[1]) / ticks;
  s.num_threads = static_cast<int64_t>(values[2]);
  s.start_time_ticks = values[3];
  s.start_time_after_boot_s = static_cast<double>(values[3]) / ticks;
  s.vsize_bytes = values[4];
  s.rss_bytes = *rss * static_cast<uint64_t>(page_size);
  return s;
}

double RoundToOneDecimal(double x) {
  if (!std::isfinite(x)) return x;
  // printf rounds the exact binary value to nearest, ties to even: Python's round() rule.
  char buf[400];
  std::snprintf(buf, sizeof(buf), "%.1f", x);
  return std::strtod(buf, nullptr);
}

}  // namespace tserve::sysmetrics
