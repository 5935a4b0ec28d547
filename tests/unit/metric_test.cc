#include "metrics/metric.h"

#include <gtest/gtest.h>

#include <cmath>
#include <thread>
#include <vector>

#include "metrics/registry.h"

namespace tserve::metrics {
namespace {

FamilyDesc Desc(const std::string& name, MetricType type, std::vector<std::string> labels = {}) {
  FamilyDesc d;
  d.name = name;
  d.type = type;
  d.help = TorchServeHelp(type, "Count");
  d.unit = "Count";
  d.label_names = std::move(labels);
  return d;
}

TEST(RegistryTest, SameLabelsReturnSameCounter) {
  Registry r;
  Family* f = *r.Add(Desc("Requests2XX", MetricType::kCounter, {"Level", "Hostname"}));
  Counter* a = *f->GetCounter({{"Level", "Host"}, {"Hostname", "h"}});
  Counter* b = *f->GetCounter({{"Hostname", "h"}, {"Level", "Host"}});  // bound by name
  EXPECT_EQ(a, b);
  Counter* c = *f->GetCounter({{"Level", "Host"}, {"Hostname", "other"}});
  EXPECT_NE(a, c);
  EXPECT_EQ(f->SeriesCount(), 2u);
}

TEST(RegistryTest, MissingDimensionIsAClearError) {
  Registry r;
  Family* f = *r.Add(Desc("HandlerTime", MetricType::kGauge, {"ModelName", "Level", "Hostname"}));
  auto g = f->GetGauge({{"ModelName", "m"}, {"Level", "Model"}});
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().message(),
            "metric \"HandlerTime\" needs dimension \"Hostname\", which was not given");
}

TEST(RegistryTest, UnknownDimensionIsAnErrorWhenStrict) {
  Registry r;
  Family* f = *r.Add(Desc("X", MetricType::kGauge, {"A"}));
  EXPECT_TRUE(f->GetGauge({{"A", "1"}, {"B", "2"}}).ok());  // lenient: ignored
  auto strict = f->GetGauge({{"A", "1"}, {"B", "2"}}, /*strict=*/true);
  ASSERT_FALSE(strict.ok());
  EXPECT_NE(strict.status().message().find("has no dimension \"B\""), std::string::npos);
}

TEST(RegistryTest, TypeMismatchIsAnError) {
  Registry r;
  Family* f = *r.Add(Desc("X", MetricType::kGauge));
  auto c = f->GetCounter({});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), "metric \"X\" is a gauge, not a counter");
}

TEST(RegistryTest, DuplicateFamilyIsAnError) {
  Registry r;
  ASSERT_TRUE(r.Add(Desc("X", MetricType::kGauge)).ok());
  auto again = r.Add(Desc("X", MetricType::kGauge));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists);
  EXPECT_TRUE(r.GetOrAdd(Desc("X", MetricType::kGauge)).ok());
  EXPECT_FALSE(r.GetOrAdd(Desc("X", MetricType::kCounter)).ok());
}

TEST(RegistryTest, UnconfiguredFamilyGivesDetachedSeries) {
  Registry r;
  auto c = r.CounterFor("NotInYaml", {{"Level", "Host"}});
  ASSERT_TRUE(c.ok());
  (*c)->Inc();  // records into nothing visible
  EXPECT_TRUE(r.Collect().families.empty());
}

// Issue 7: a family left out of metrics.yaml gave every model load new detached series,
// never freed. They are shared now: asking 1,000 times allocates one.
TEST(RegistryTest, DetachedSeriesAreSharedNotAllocatedPerCall) {
  Registry r;
  Counter* first = *r.CounterFor("not_in_yaml", {{"model_name", "m"}});
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(*r.CounterFor("not_in_yaml", {{"model_name", "m" + std::to_string(i)}}), first);
    r.Release(first);  // ignored: detached series are kept
  }
  Gauge* g = *r.GaugeFor("not_in_yaml", {});  // another type: its own series
  EXPECT_NE(static_cast<Series*>(g), static_cast<Series*>(first));
  EXPECT_EQ(r.DetachedCount(), 2u);
}

TEST(RegistryTest, ReleaseDropsASeriesWithItsLastUse) {
  Registry r;
  Family* f = *r.Add(Desc("ts_x", MetricType::kCounter, {"model_name"}));
  Counter* a = *r.CounterFor("ts_x", {{"model_name", "a"}});
  Counter* shared = *f->GetCounter({{"model_name", "a"}});  // a second owner of the same
  ASSERT_EQ(a, shared);
  Counter* kept = *f->GetCounter({{"model_name", "b"}});  // never released
  kept->Inc();
  a->Inc();
  EXPECT_EQ(f->SeriesCount(), 2u);
  r.Release(a);
  EXPECT_EQ(f->SeriesCount(), 2u);  // the other owner still records into it
  shared->Inc();
  r.Release(shared);
  EXPECT_EQ(f->SeriesCount(), 1u);
  ASSERT_EQ(f->Snapshot().series.size(), 1u);
  EXPECT_EQ(f->Snapshot().series[0], kept);
  // A series re-created after its release is a new one, with its own use count.
  Counter* again = *r.CounterFor("ts_x", {{"model_name", "a"}});
  EXPECT_EQ(f->SeriesCount(), 2u);
  r.Release(again);
  EXPECT_EQ(f->SeriesCount(), 1u);
  r.Release(nullptr);  // ignored
  EXPECT_EQ(f->SeriesCount(), 1u);
}

TEST(RegistryTest, RemoveDropsSeriesButSnapshotKeepsItAlive) {
  Registry r;
  Family* f = *r.Add(Desc("WorkerLoadTime", MetricType::kGauge, {"WorkerName"}));
  (*f->GetGauge({{"WorkerName", "W-9000-m_1.0"}}))->Set(12.0);
  Snapshot before = r.Collect();
  f->Remove({{"WorkerName", "W-9000-m_1.0"}});
  EXPECT_EQ(f->SeriesCount(), 0u);
  ASSERT_EQ(before.families[0].series.size(), 1u);
  EXPECT_EQ(before.families[0].series[0]->label_values()[0], "W-9000-m_1.0");
  EXPECT_TRUE(r.Collect().families[0].series.empty());
}

TEST(CounterTest, ConcurrentIncrementsAreExact) {
  Registry r;
  Family* f = *r.Add(Desc("C", MetricType::kCounter));
  Counter* c = *f->GetCounter({});
  constexpr int kThreads = 4;
  constexpr int kPer = 100000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([c] {
      for (int i = 0; i < kPer; ++i) c->Inc();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c->Value(), static_cast<double>(kThreads * kPer));
}

TEST(CounterTest, ExposeShowsAnUntouchedCounterAtZeroAndKeepsAValue) {
  Registry r;
  Family* f = *r.Add(Desc("C", MetricType::kCounter));
  Counter* c = *f->GetCounter({});
  EXPECT_TRUE(IsUntouched(c->Value()));  // not on /metrics yet
  c->Expose();
  EXPECT_FALSE(IsUntouched(c->Value()));
  EXPECT_EQ(c->Value(), 0.0);
  c->Add(2.5);
  c->Expose();  // does not reset
  EXPECT_EQ(c->Value(), 2.5);
}

TEST(CounterTest, AddsFractions) {
  Registry r;
  Counter* c = *(*r.Add(Desc("C", MetricType::kCounter)))->GetCounter({});
  c->Add(290000.5);
  c->Add(371.129);
  EXPECT_DOUBLE_EQ(c->Value(), 290371.629);
}

TEST(GaugeTest, SetAndAdd) {
  Registry r;
  Gauge* g = *(*r.Add(Desc("G", MetricType::kGauge)))->GetGauge({});
  g->Set(5.0);
  g->Add(-2.0);
  EXPECT_EQ(g->Value(), 3.0);
}

TEST(HistogramTest, BucketsAreUpperInclusive) {
  Registry r;
  FamilyDesc d = Desc("H", MetricType::kHistogram);
  d.buckets = {1.0, 2.0, 5.0};
  Histogram* h = *(*r.Add(d))->GetHistogram({});
  for (double v : {0.5, 1.0, 1.5, 2.0, 4.0, 7.0, 100.0}) h->Observe(v);
  std::vector<uint64_t> counts;
  h->ReadCounts(&counts);
  EXPECT_EQ(counts, (std::vector<uint64_t>{2, 2, 1, 2}));
  EXPECT_EQ(h->Count(), 7u);
  EXPECT_DOUBLE_EQ(h->Sum(), 116.0);
  Snapshot s = r.Collect();
  auto cumulative = s.families[0].Cumulative(0);
  EXPECT_EQ(std::vector<uint64_t>(cumulative.begin(), cumulative.end()),
            (std::vector<uint64_t>{2, 4, 5, 7}));
}

TEST(HistogramTest, DefaultBucketsWhenNoneGiven) {
  Registry r;
  Family* f = *r.Add(Desc("H", MetricType::kHistogram));
  EXPECT_EQ(f->desc().buckets, DefaultBuckets());
  FamilyDesc bad = Desc("Bad", MetricType::kHistogram);
  bad.buckets = {1.0, 1.0};
  EXPECT_FALSE(r.Add(bad).ok());
}

TEST(HistogramTest, ConcurrentObservationsAreExact) {
  Registry r;
  Histogram* h = *(*r.Add(Desc("H", MetricType::kHistogram)))->GetHistogram({});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([h] {
      for (int i = 0; i < 50000; ++i) h->Observe(0.25);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(h->Count(), 200000u);
  EXPECT_DOUBLE_EQ(h->Sum(), 50000.0);
}

class RecordingSink : public EventSink {
 public:
  void Record(const Series& s, double v) override { events.emplace_back(s.family().name, v); }
  std::vector<std::pair<std::string, double>> events;
};

TEST(EventSinkTest, EveryRecordReachesTheSink) {
  RecordingSink sink;
  Registry r(&sink);
  Counter* c = *(*r.Add(Desc("C", MetricType::kCounter)))->GetCounter({});
  Gauge* g = *(*r.Add(Desc("G", MetricType::kGauge)))->GetGauge({});
  c->Inc();
  c->Add(2.5);
  g->Set(7.0);
  ASSERT_EQ(sink.events.size(), 3u);
  EXPECT_EQ(sink.events[0], std::make_pair(std::string("C"), 1.0));
  EXPECT_EQ(sink.events[1], std::make_pair(std::string("C"), 2.5));
  EXPECT_EQ(sink.events[2], std::make_pair(std::string("G"), 7.0));
}

TEST(RegistryTest, SeriesAppearOnlyOnceRecorded) {
  // TorchServe: a metric defined but never observed prints HELP/TYPE only.
  Registry r;
  Family* c = *r.Add(Desc("C", MetricType::kCounter, {"k"}));
  Family* g = *r.Add(Desc("G", MetricType::kGauge, {"k"}));
  Family* h = *r.Add(Desc("H", MetricType::kHistogram, {"k"}));
  Counter* c1 = *c->GetCounter({{"k", "1"}});
  Gauge* g1 = *g->GetGauge({{"k", "1"}});
  Histogram* h1 = *h->GetHistogram({{"k", "1"}});
  for (const auto& fam : r.Collect().families) EXPECT_TRUE(fam.series.empty()) << fam.desc->name;
  EXPECT_EQ(c1->Value(), 0.0);  // reads as zero all the same
  c1->Add(0.0);                 // a recorded zero is a sample
  g1->Set(0.0);
  h1->Observe(0.0);
  for (const auto& fam : r.Collect().families) {
    ASSERT_EQ(fam.series.size(), 1u) << fam.desc->name;
    EXPECT_FALSE(std::signbit(fam.values[0])) << fam.desc->name;
  }
}

TEST(RegistryTest, CollectHooksRunBeforeSnapshot) {
  Registry r;
  Gauge* g = *(*r.Add(Desc("G", MetricType::kGauge)))->GetGauge({});
  int calls = 0;
  r.AddCollectHook([&] { g->Set(++calls); });
  EXPECT_EQ(r.Collect().families[0].values[0], 1.0);
  EXPECT_EQ(r.Collect().families[0].values[0], 2.0);
}

}  // namespace
}  // namespace tserve::metrics
