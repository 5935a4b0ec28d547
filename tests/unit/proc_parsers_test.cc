#include "sysmetrics/proc_parsers.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "sysmetrics/sampler.h"

namespace tserve::sysmetrics {
namespace {

const std::string kProcDir = std::string(TSERVE_FIXTURES_DIR) + "/proc";

std::string Fixture(const std::string& name) {
  std::ifstream in(kProcDir + "/" + name, std::ios::binary);
  EXPECT_TRUE(in) << "missing fixture " << name;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void ExpectContains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << text << "' lacks '" << part << "'";
}

// ---- /proc/stat ----

TEST(ProcParsersTest, ParsesAggregateCpuLine) {
  StatusOr<CpuTimes> t = ParseProcStat(Fixture("stat"));
  ASSERT_TRUE(t.ok()) << t.status().message();
  EXPECT_EQ(t->user, 10132153u);
  EXPECT_EQ(t->nice, 290696u);
  EXPECT_EQ(t->system, 3084719u);
  EXPECT_EQ(t->idle, 46828483u);
  EXPECT_EQ(t->iowait, 16683u);
  EXPECT_EQ(t->irq, 0u);
  EXPECT_EQ(t->softirq, 25195u);
  EXPECT_EQ(t->steal, 0u);
  EXPECT_EQ(t->guest, 175628u);
  EXPECT_EQ(t->guest_nice, 0u);
}

TEST(ProcParsersTest, OldKernelCpuLineLacksStealAndGuest) {
  StatusOr<CpuTimes> t = ParseProcStat(Fixture("stat_old_kernel"));
  ASSERT_TRUE(t.ok()) << t.status().message();
  EXPECT_EQ(t->user, 2255u);
  EXPECT_EQ(t->softirq, 456u);
  EXPECT_EQ(t->steal, 0u);
  EXPECT_EQ(t->guest, 0u);
  EXPECT_EQ(t->guest_nice, 0u);
}

TEST(ProcParsersTest, StatWithoutAggregateCpuLineIsAnError) {
  StatusOr<CpuTimes> t = ParseProcStat(Fixture("stat_no_cpu"));
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t.status().message(), "/proc/stat: no aggregate \"cpu\" line");
}

TEST(ProcParsersTest, StatWithBadCpuNumberIsAnError) {
  StatusOr<CpuTimes> t = ParseProcStat(Fixture("stat_bad_number"));
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(), "/proc/stat: bad number \"lots\" in the cpu line");
}

TEST(ProcParsersTest, StatWithShortCpuLineIsAnError) {
  StatusOr<CpuTimes> t = ParseProcStat("cpu  1 2 3\n");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(), "/proc/stat: the cpu line has 3 fields, need at least 4");
  EXPECT_FALSE(ParseProcStat("").ok());
}

TEST(ProcParsersTest, CpuPercentBetweenTwoReadings) {
  StatusOr<CpuTimes> prev = ParseProcStat(Fixture("stat"));
  StatusOr<CpuTimes> cur = ParseProcStat(Fixture("stat_later"));
  ASSERT_TRUE(prev.ok() && cur.ok());
  // Deltas: user 800, system 200, idle 700, iowait 100, softirq 20, guest 100.
  // total = 800 + 200 + 700 + 100 + 20 = 1820 (guest is inside user already);
  // busy = 1820 - 700 - 100 = 1020; 1020 / 1820 = 56.04 % -> 56.0.
  // Counting guest in the total would give 1120 / 1920 = 58.3: the test tells them apart.
  EXPECT_DOUBLE_EQ(CpuUtilizationPercent(*prev, *cur), 56.0);
}

TEST(ProcParsersTest, CpuPercentIsZeroWithoutElapsedTime) {
  StatusOr<CpuTimes> t = ParseProcStat(Fixture("stat"));
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(CpuUtilizationPercent(*t, *t), 0.0);
  EXPECT_EQ(CpuUtilizationPercent(CpuTimes{}, CpuTimes{}), 0.0);
}

TEST(ProcParsersTest, CpuPercentOfIdleAndFullyBusyHosts) {
  CpuTimes a;
  CpuTimes idle = a;
  idle.idle = 500;
  EXPECT_EQ(CpuUtilizationPercent(a, idle), 0.0);
  CpuTimes busy = a;
  busy.user = 300;
  busy.system = 200;
  busy.steal = 100;
  EXPECT_EQ(CpuUtilizationPercent(a, busy), 100.0);
}

TEST(ProcParsersTest, CpuPercentIgnoresCountersThatGoBackwards) {
  CpuTimes prev;
  prev.user = 100;
  prev.system = 50;
  prev.idle = 1000;
  CpuTimes cur;
  cur.user = 130;   // +30
  cur.system = 40;  // went backwards: counts as 0, not -10
  cur.idle = 1070;  // +70
  // busy 30 of total 100.
  EXPECT_DOUBLE_EQ(CpuUtilizationPercent(prev, cur), 30.0);
}

TEST(ProcParsersTest, CpuPercentRoundsToOneDecimal) {
  CpuTimes prev;
  CpuTimes cur;
  cur.user = 1;
  cur.idle = 2;  // 1 / 3 = 33.333... %
  EXPECT_DOUBLE_EQ(CpuUtilizationPercent(prev, cur), 33.3);
  cur.user = 2;
  cur.idle = 1;  // 66.666... %
  EXPECT_DOUBLE_EQ(CpuUtilizationPercent(prev, cur), 66.7);
}

TEST(ProcParsersTest, ParsesBootTime) {
  StatusOr<double> btime = ParseBootTime(Fixture("stat"));
  ASSERT_TRUE(btime.ok()) << btime.status().message();
  EXPECT_EQ(*btime, 1700000000.0);
}

TEST(ProcParsersTest, StatWithoutBootTimeIsAnError) {
  StatusOr<double> btime = ParseBootTime(Fixture("stat_no_cpu"));
  ASSERT_FALSE(btime.ok());
  EXPECT_EQ(btime.status().message(), "/proc/stat: no btime line");
}

TEST(ProcParsersTest, StatWithBadBootTimeIsAnError) {
  StatusOr<double> btime = ParseBootTime(Fixture("stat_bad_number"));
  ASSERT_FALSE(btime.ok());
  EXPECT_EQ(btime.status().message(), "/proc/stat: bad btime value \"soon\"");
}

// ---- /proc/meminfo ----

TEST(ProcParsersTest, ParsesMeminfo) {
  StatusOr<MemInfo> m = ParseMeminfo(Fixture("meminfo"));
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->total_kb, 16302020u);
  EXPECT_EQ(m->free_kb, 1183228u);
  EXPECT_EQ(m->available_kb, 9873416u);
  EXPECT_EQ(m->buffers_kb, 402112u);
  EXPECT_EQ(m->cached_kb, 8107136u);  // not SwapCached, which comes later
  EXPECT_EQ(m->sreclaimable_kb, 611040u);
  EXPECT_FALSE(m->available_estimated);
}

TEST(ProcParsersTest, ComputesMemoryLikePsutil) {
  StatusOr<MemInfo> m = ParseMeminfo(Fixture("meminfo"));
  ASSERT_TRUE(m.ok());
  MemoryFigures f = ComputeMemory(*m);
  // used = total - free - (Cached + SReclaimable) - Buffers
  //      = 16302020 - 1183228 - (8107136 + 611040) - 402112 = 5998504 kB = 5857.9140625 MiB
  EXPECT_DOUBLE_EQ(f.used_mb, 5857.9140625);
  // 9873416 kB / 1024 = 9642.0078125 MiB
  EXPECT_DOUBLE_EQ(f.available_mb, 9642.0078125);
  // (16302020 - 9873416) / 16302020 = 39.434 % -> 39.4
  EXPECT_DOUBLE_EQ(f.utilization_percent, 39.4);
}

TEST(ProcParsersTest, OldKernelMeminfoEstimatesAvailable) {
  StatusOr<MemInfo> m = ParseMeminfo(Fixture("meminfo_old_kernel"));
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_TRUE(m->available_estimated);
  // MemFree + Buffers + Cached = 123456 + 45678 + 789012
  EXPECT_EQ(m->available_kb, 958146u);
  EXPECT_EQ(m->sreclaimable_kb, 0u);
  MemoryFigures f = ComputeMemory(*m);
  EXPECT_DOUBLE_EQ(f.available_mb, 935.689453125);  // 958146 / 1024
  // 2055920 - 123456 - 789012 - 45678 = 1097774 kB
  EXPECT_DOUBLE_EQ(f.used_mb, 1072.044921875);
  // 1097774 / 2055920 = 53.396 % -> 53.4
  EXPECT_DOUBLE_EQ(f.utilization_percent, 53.4);
}

TEST(ProcParsersTest, ZeroMemAvailableIsEstimatedToo) {
  StatusOr<MemInfo> m = ParseMeminfo(
      "MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 0 kB\nBuffers: 20 kB\nCached: 30 kB\n");
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_TRUE(m->available_estimated);
  EXPECT_EQ(m->available_kb, 150u);
}

TEST(ProcParsersTest, MeminfoWithoutMemTotalIsAnError) {
  StatusOr<MemInfo> m = ParseMeminfo(Fixture("meminfo_no_total"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(m.status().message(), "/proc/meminfo: no MemTotal line");
}

TEST(ProcParsersTest, MeminfoWithoutMemFreeIsAnError) {
  StatusOr<MemInfo> m = ParseMeminfo("MemTotal: 1000 kB\nMemAvailable: 10 kB\n");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message(), "/proc/meminfo: no MemFree line");
}

TEST(ProcParsersTest, MeminfoWithBadMemTotalIsAnError) {
  StatusOr<MemInfo> m = ParseMeminfo(Fixture("meminfo_bad_total"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message(), "/proc/meminfo: bad MemTotal value \"sixteen gigs\"");
}

TEST(ProcParsersTest, UsedMemoryFallsBackWhenCachesExceedTheTotal) {
  MemInfo m;
  m.total_kb = 1000;
  m.free_kb = 100;
  m.cached_kb = 2000;  // distorted container figures
  m.available_kb = 500;
  MemoryFigures f = ComputeMemory(m);
  EXPECT_DOUBLE_EQ(f.used_mb, 900.0 / 1024);  // total - free
  EXPECT_DOUBLE_EQ(f.utilization_percent, 50.0);
}

TEST(ProcParsersTest, ZeroTotalMemoryGivesZeroPercent) {
  MemoryFigures f = ComputeMemory(MemInfo{});
  EXPECT_EQ(f.used_mb, 0.0);
  EXPECT_EQ(f.available_mb, 0.0);
  EXPECT_EQ(f.utilization_percent, 0.0);
}

// ---- statvfs ----

TEST(ProcParsersTest, ComputesDiskLikePsutil) {
  DiskFigures d = ComputeDisk(4096, 1000000, 400000, 350000);
  // used = (1000000 - 400000) * 4096 = 2457600000 B = 2.288818359375 GiB
  EXPECT_DOUBLE_EQ(d.used_gb, 2.288818359375);
  // available = 350000 * 4096 = 1433600000 B = 1.33514404296875 GiB
  EXPECT_DOUBLE_EQ(d.available_gb, 1.33514404296875);
  // 600000 / (600000 + 350000) = 63.16 % -> 63.2 (the root reserve is left out)
  EXPECT_DOUBLE_EQ(d.utilization_percent, 63.2);
}

TEST(ProcParsersTest, EmptyFileSystemGivesZeros) {
  DiskFigures d = ComputeDisk(4096, 0, 0, 0);
  EXPECT_EQ(d.used_gb, 0.0);
  EXPECT_EQ(d.available_gb, 0.0);
  EXPECT_EQ(d.utilization_percent, 0.0);
  // More free blocks than blocks (a broken file system) is not negative usage.
  EXPECT_EQ(ComputeDisk(4096, 10, 20, 5).used_gb, 0.0);
}

// ---- /proc/self/stat ----

TEST(ProcParsersTest, ParsesSelfStatWithSpacesAndParensInTheName) {
  // The command name is "my) srv (x".
  StatusOr<ProcSelfStat> s = ParseProcSelfStat(Fixture("self_stat"), 100, 4096);
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_DOUBLE_EQ(s->cpu_seconds, 18.0);  // (1234 + 566) / 100
  EXPECT_EQ(s->start_time_ticks, 987654u);
  EXPECT_DOUBLE_EQ(s->start_time_after_boot_s, 9876.54);
  EXPECT_EQ(s->vsize_bytes, 1234567890u);
  EXPECT_EQ(s->rss_bytes, 45678u * 4096u);  // 187097088
  EXPECT_EQ(s->num_threads, 17);
}

TEST(ProcParsersTest, TruncatedSelfStatIsAnError) {
  StatusOr<ProcSelfStat> s = ParseProcSelfStat(Fixture("self_stat_truncated"), 100, 4096);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(),
            "/proc/self/stat: 12 fields after the command name, need at least 22");
}

TEST(ProcParsersTest, SelfStatWithoutCommandNameIsAnError) {
  StatusOr<ProcSelfStat> s = ParseProcSelfStat("4242 tserve S 1", 100, 4096);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(), "/proc/self/stat: no ')' after the command name");
}

TEST(ProcParsersTest, SelfStatWithBadNumberIsAnError) {
  std::string text = Fixture("self_stat");
  text.replace(text.find(" 1234 566 "), 10, " 1234 x66 ");
  StatusOr<ProcSelfStat> s = ParseProcSelfStat(text, 100, 4096);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(), "/proc/self/stat: bad stime \"x66\"");
}

TEST(ProcParsersTest, SelfStatNeedsPositiveTicksAndPageSize) {
  EXPECT_FALSE(ParseProcSelfStat(Fixture("self_stat"), 0, 4096).ok());
  EXPECT_FALSE(ParseProcSelfStat(Fixture("self_stat"), 100, 0).ok());
}

// ---- rounding ----

TEST(ProcParsersTest, RoundsLikePython) {
  // Expected values are Python's round(x, 1).
  EXPECT_EQ(RoundToOneDecimal(0.25), 0.2);    // an exact tie: to even
  EXPECT_EQ(RoundToOneDecimal(12.25), 12.2);  // an exact tie: to even
  EXPECT_EQ(RoundToOneDecimal(0.35), 0.3);    // really 0.34999...
  EXPECT_EQ(RoundToOneDecimal(0.45), 0.5);    // really 0.45000...01
  EXPECT_EQ(RoundToOneDecimal(0.15), 0.1);
  EXPECT_EQ(RoundToOneDecimal(0.05), 0.1);
  EXPECT_EQ(RoundToOneDecimal(99.95), 100.0);
  EXPECT_EQ(RoundToOneDecimal(39.43440138093316), 39.4);
  EXPECT_EQ(RoundToOneDecimal(0.0), 0.0);
  EXPECT_EQ(RoundToOneDecimal(-1.26), -1.3);
}

// ---- the sampler on fixture folders ----

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "sysmetrics-XXXXXX").string();
    path_ = mkdtemp(pattern.data()) ? pattern : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  void Write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ + "/" + name, std::ios::binary | std::ios::trunc) << text;
  }

 private:
  std::string path_;
};

SystemSampler::Options FixtureOptions(std::string proc_root) {
  SystemSampler::Options options;
  options.proc_root = std::move(proc_root);
  options.disk_path = TSERVE_FIXTURES_DIR;
  options.enable_gpu = false;
  return options;
}

TEST(SystemSamplerTest, SampleOnceReadsTheFixtureFolder) {
  SystemSampler sampler(FixtureOptions(kProcDir), [](const SystemSample&) {});
  SystemSample first = sampler.SampleOnce();
  EXPECT_TRUE(first.errors.empty()) << first.errors.front();
  // With no earlier reading, the first CPU figure is the average since boot.
  ASSERT_TRUE(first.cpu_percent.has_value());
  EXPECT_DOUBLE_EQ(*first.cpu_percent, 22.4);
  ASSERT_TRUE(first.memory.has_value());
  EXPECT_DOUBLE_EQ(first.memory->used_mb, 5857.9140625);
  EXPECT_DOUBLE_EQ(first.memory->available_mb, 9642.0078125);
  EXPECT_DOUBLE_EQ(first.memory->utilization_percent, 39.4);
  ASSERT_TRUE(first.disk.has_value());  // the real file system under the fixtures
  EXPECT_GT(first.disk->used_gb + first.disk->available_gb, 0.0);
  EXPECT_GE(first.disk->utilization_percent, 0.0);
  EXPECT_LE(first.disk->utilization_percent, 100.0);
  EXPECT_TRUE(first.gpus.empty());

  SystemSample second = sampler.SampleOnce();
  ASSERT_TRUE(second.cpu_percent.has_value());
  EXPECT_EQ(*second.cpu_percent, 0.0);  // the same stat file: no time passed
}

TEST(SystemSamplerTest, CpuPercentComesFromConsecutiveReadings) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  dir.Write("meminfo", Fixture("meminfo"));
  dir.Write("stat", Fixture("stat"));
  SystemSampler sampler(FixtureOptions(dir.path()), [](const SystemSample&) {});
  EXPECT_EQ(sampler.SampleOnce().cpu_percent, 22.4);  // since boot
  dir.Write("stat", Fixture("stat_later"));
  SystemSample later = sampler.SampleOnce();
  ASSERT_TRUE(later.cpu_percent.has_value());
  EXPECT_DOUBLE_EQ(*later.cpu_percent, 56.0);  // see CpuPercentBetweenTwoReadings
}

TEST(SystemSamplerTest, UnreadableSourcesAreReportedNotFatal) {
  SystemSampler::Options options = FixtureOptions("/nonexistent-proc");
  options.disk_path = "/nonexistent-disk";
  SystemSampler sampler(options, [](const SystemSample&) {});
  SystemSample s = sampler.SampleOnce();
  EXPECT_FALSE(s.cpu_percent.has_value());
  EXPECT_FALSE(s.memory.has_value());
  EXPECT_FALSE(s.disk.has_value());
  ASSERT_EQ(s.errors.size(), 3u);
  ExpectContains(s.errors[0], "/nonexistent-proc/stat");
  ExpectContains(s.errors[1], "/nonexistent-proc/meminfo");
  ExpectContains(s.errors[2], "statvfs /nonexistent-disk");
}

TEST(SystemSamplerTest, MalformedFilesAreReportedByName) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  dir.Write("stat", Fixture("stat_no_cpu"));
  dir.Write("meminfo", Fixture("meminfo_no_total"));
  SystemSampler sampler(FixtureOptions(dir.path()), [](const SystemSample&) {});
  SystemSample s = sampler.SampleOnce();
  EXPECT_FALSE(s.memory.has_value());
  ASSERT_EQ(s.errors.size(), 2u);
  EXPECT_EQ(s.errors[0], "/proc/stat: no aggregate \"cpu\" line");
  EXPECT_EQ(s.errors[1], "/proc/meminfo: no MemTotal line");
  EXPECT_TRUE(s.disk.has_value());
}

}  // namespace
}  // namespace tserve::sysmetrics
