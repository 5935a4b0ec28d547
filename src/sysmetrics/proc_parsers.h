#pragma once

// Pure parsers for /proc text and pure arithmetic on statvfs figures: no I/O here, so
// every function is unit-tested on fixture text. The figures follow psutil, which is what
// TorchServe's system metrics report (ts/metrics/system_metrics.py).
// All functions are thread safe (they touch nothing but their arguments).

#include <cstdint>
#include <string_view>

#include "common/status.h"

namespace tserve::sysmetrics {

// The aggregate "cpu " line of /proc/stat, in clock ticks (USER_HZ). Fields an older
// kernel does not print (steal, guest, guest_nice) read as 0.
struct CpuTimes {
  uint64_t user = 0;
  uint64_t nice = 0;
  uint64_t system = 0;
  uint64_t idle = 0;
  uint64_t iowait = 0;
  uint64_t irq = 0;
  uint64_t softirq = 0;
  uint64_t steal = 0;
  uint64_t guest = 0;       // already counted in user
  uint64_t guest_nice = 0;  // already counted in nice
};

// Parses the aggregate "cpu " line (not "cpu0"...). Needs at least user, nice, system, idle.
StatusOr<CpuTimes> ParseProcStat(std::string_view text);

// psutil.cpu_percent() between two readings: busy delta / total delta * 100, where idle
// time is idle + iowait and guest/guest_nice are left out of the total (the kernel already
// counts them in user/nice). Fields that went backwards count as 0 (as psutil and top do).
// 0.0 when no time passed; clamped to [0, 100]; rounded to one decimal.
double CpuUtilizationPercent(const CpuTimes& prev, const CpuTimes& cur);

// The /proc/stat "btime" line: the boot time in seconds since the epoch.
StatusOr<double> ParseBootTime(std::string_view proc_stat_text);

// The /proc/meminfo lines the memory figures need, in kB.
struct MemInfo {
  uint64_t total_kb = 0;
  uint64_t free_kb = 0;
  uint64_t buffers_kb = 0;
  uint64_t cached_kb = 0;        // "Cached"
  uint64_t sreclaimable_kb = 0;  // "SReclaimable" (reclaimable slab), 0 when absent
  uint64_t available_kb = 0;     // "MemAvailable", or the estimate below
  bool available_estimated = false;
};

// Needs MemTotal and MemFree. When MemAvailable is missing (kernels before 3.14) or 0 (a
// kernel bug psutil works around, its issue #1915) it is estimated as
// MemFree + Buffers + Cached and available_estimated is set. Buffers, Cached and
// SReclaimable read as 0 when absent.
StatusOr<MemInfo> ParseMeminfo(std::string_view text);

// Host memory as TorchServe reports it (psutil.virtual_memory()), in MiB ("Megabytes").
struct MemoryFigures {
  // psutil's `used`: total - free - buffers - (cached + SReclaimable), or total - free
  // when that goes negative (containers). TorchServe's MemoryUsed.
  double used_mb = 0;
  double available_mb = 0;  // MemoryAvailable
  // psutil's `percent`: (total - available) / total * 100, one decimal. MemoryUtilization.
  double utilization_percent = 0;
};
MemoryFigures ComputeMemory(const MemInfo& info);

// A file system as psutil.disk_usage() reports it, in GiB ("Gigabytes").
struct DiskFigures {
  double used_gb = 0;       // (blocks - bfree) * frsize: DiskUsage
  double available_gb = 0;  // bavail * frsize, what non-root may still use: DiskAvailable
  // used / (used + available) * 100, one decimal: DiskUtilization. Measured against what
  // a normal user can reach, so it is above used/total by the root reserve.
  double utilization_percent = 0;
};
// Arguments straight from statvfs: f_frsize, f_blocks, f_bfree, f_bavail.
DiskFigures ComputeDisk(uint64_t block_size, uint64_t blocks, uint64_t bfree, uint64_t bavail);

// The figures of /proc/<pid>/stat that the process_* metrics need.
struct ProcSelfStat {
  double cpu_seconds = 0;              // utime + stime
  uint64_t start_time_ticks = 0;       // starttime: clock ticks after boot
  double start_time_after_boot_s = 0;  // the same in seconds; add ParseBootTime for epoch
  uint64_t rss_bytes = 0;              // rss pages * page size
  uint64_t vsize_bytes = 0;
  int64_t num_threads = 0;
};
// `text` is the whole stat line. The command name (field 2) may hold spaces and ')', so
// the fields are counted from the line's last ')'.
StatusOr<ProcSelfStat> ParseProcSelfStat(std::string_view text, long clock_ticks_per_sec,
                                         long page_size);

// Python's round(x, 1): the nearest one-decimal double, ties to even on the exact binary
// value (so 0.25 -> 0.2, 0.35 -> 0.3 because 0.35 is really 0.34999...). Non-finite values
// pass through.
double RoundToOneDecimal(double x);

}  // namespace tserve::sysmetrics
