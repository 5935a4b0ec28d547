#pragma once

#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "common/thread_annotations.h"
#include "metrics/metric.h"

namespace tserve::metrics {

// Label values given by dimension name; bound to the family's declared order by name.
using Labels = std::vector<std::pair<std::string_view, std::string_view>>;

// One family as read at scrape time: its visible series (those with a recorded value),
// sorted by label values, and their values in flat arrays (no allocation per series).
// `keep_alive` holds the family's series list as it was, so a concurrent Remove cannot free
// a series under the renderer.
struct FamilySnapshot {
  const FamilyDesc* desc = nullptr;
  std::shared_ptr<const std::vector<std::shared_ptr<Series>>> keep_alive;
  std::vector<const Series*> series;
  std::vector<double> values;        // the value (counter, gauge) or the sum (histogram)
  std::vector<uint64_t> cumulative;  // histograms: buckets + 1 cumulative counts per series

  // Histogram series i's cumulative bucket counts, +Inf last.
  std::span<const uint64_t> Cumulative(size_t i) const {
    const size_t n = desc->buckets.size() + 1;
    return {cumulative.data() + i * n, n};
  }
};

// Families sorted by name: the input of the text renderer.
struct Snapshot {
  std::vector<FamilySnapshot> families;
};

// A metric family: its description and its series, keyed by label values.
// Thread safety: all methods are safe to call concurrently. Creating, removing and
// snapshotting series take the family's mutex; recording through a returned handle does not.
class Family {
 public:
  Family(FamilyDesc desc, EventSink* sink);
  const FamilyDesc& desc() const { return desc_; }

  // Returns the series for these labels, creating it on first use. Every declared
  // dimension must be given; labels the family does not declare are an error when strict,
  // and ignored otherwise (so a user's metrics.yaml may drop a dimension of a built-in
  // metric). Type mismatches are errors.
  StatusOr<Counter*> GetCounter(const Labels& labels, bool strict = false);
  StatusOr<Gauge*> GetGauge(const Labels& labels, bool strict = false);
  StatusOr<Histogram*> GetHistogram(const Labels& labels, bool strict = false);

  // Drops the series with these labels (e.g. a stopped worker's). Handles to it must no
  // longer be used by the caller; a scrape in progress keeps it alive until done.
  void Remove(const Labels& labels) EXCLUDES(mu_);
  // Gives back one use of `series` (every Get* that returned it took one). The series is
  // dropped, as by Remove, when its last use is given back, so a series shared by several
  // owners (a model's versions share their model_version="default" series) lives until
  // the last one releases it. Series never released (most of them) are never dropped. A
  // series of another family, or one Remove/Clear dropped (while a scrape still holds it),
  // is ignored. A handle must not be used, nor released again, after its last release.
  void Release(const Series* series) EXCLUDES(mu_);
  // Drops every series.
  void Clear() EXCLUDES(mu_);
  size_t SeriesCount() const EXCLUDES(mu_);

  FamilySnapshot Snapshot() const EXCLUDES(mu_);

 private:
  StatusOr<Series*> GetSeries(const Labels& labels, bool strict, MetricType want) EXCLUDES(mu_);

  const FamilyDesc desc_;
  EventSink* const sink_;
  mutable Mutex mu_;
  struct Entry {
    std::shared_ptr<Series> series;
    uint64_t uses = 0;  // Get* calls that returned it, less Release calls
  };
  std::map<std::vector<std::string>, Entry> index_ GUARDED_BY(mu_);
  // The series in index_ order, rebuilt by the first snapshot after a change; shared with
  // snapshots in progress (which read the values in it without the lock).
  mutable std::shared_ptr<const std::vector<std::shared_ptr<Series>>> list_ GUARDED_BY(mu_);
  mutable bool list_dirty_ GUARDED_BY(mu_) = true;
};

// All metric families of one server. main owns it and passes it down (no singleton).
// Thread safety: safe for concurrent use; Add/Find/Collect take an internal mutex.
class Registry {
 public:
  // sink: where every recorded value also goes (log/legacy mode); null for none.
  explicit Registry(EventSink* sink = nullptr) : sink_(sink) {}
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Adds a family. The same name twice is an AlreadyExists error.
  StatusOr<Family*> Add(FamilyDesc desc) EXCLUDES(mu_);
  // Adds the family, or returns the existing one when its type and labels agree.
  StatusOr<Family*> GetOrAdd(FamilyDesc desc);
  Family* Find(std::string_view name) const EXCLUDES(mu_);

  // Convenience for wiring: the series of a configured family, or a detached series that
  // records into nothing visible when the family is not in metrics.yaml (the user removed
  // it). Errors only for a type mismatch or a missing dimension.
  StatusOr<Counter*> CounterFor(std::string_view name, const Labels& labels);
  StatusOr<Gauge*> GaugeFor(std::string_view name, const Labels& labels);
  StatusOr<Histogram*> HistogramFor(std::string_view name, const Labels& labels);
  // Gives back a series returned by CounterFor/GaugeFor/HistogramFor (see Family::Release):
  // a model's series go away with the model. Detached series are shared and kept.
  void Release(const Series* series);
  // How many detached series exist: at most one per (name, type), however often they are
  // asked for.
  size_t DetachedCount() const EXCLUDES(mu_);

  // Runs before every Collect (e.g. to refresh process metrics). Hooks run under the
  // collect lock, one scrape at a time.
  void AddCollectHook(std::function<void()> hook) EXCLUDES(collect_mu_);

  // Reads every family (or those `want` accepts: a filtered scrape reads only what it
  // renders). Takes locks; allocation happens here, never on the record path.
  using FamilyPredicate = std::function<bool(const FamilyDesc&)>;
  Snapshot Collect(const FamilyPredicate& want = nullptr) const EXCLUDES(collect_mu_, mu_);

  EventSink* sink() const { return sink_; }

 private:
  // The series of `type` that no family lists, one per (name, type), shared by every
  // caller: recorded into, never rendered, never freed (the names are the code's).
  Series* Detached(std::string_view name, MetricType type) EXCLUDES(mu_);

  EventSink* const sink_;
  // Lock order: collect_mu_, then mu_, then a Family's mu_ (hooks look series up).
  mutable Mutex collect_mu_ ACQUIRED_BEFORE(mu_);  // serializes hooks
  mutable Mutex mu_;
  std::map<std::string, std::unique_ptr<Family>, std::less<>> families_ GUARDED_BY(mu_);
  struct DetachedSeries {
    std::unique_ptr<FamilyDesc> desc;
    std::unique_ptr<Series> series;
  };
  std::map<std::pair<std::string, MetricType>, DetachedSeries, std::less<>> detached_
      GUARDED_BY(mu_);
  std::vector<std::function<void()>> hooks_ GUARDED_BY(collect_mu_);
};

}  // namespace tserve::metrics
