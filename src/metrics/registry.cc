#include "metrics/registry.h"

#include <algorithm>

namespace tserve::metrics {

namespace {

const char* TypeWord(MetricType t) { return MetricTypeName(t); }

}  // namespace

Family::Family(FamilyDesc desc, EventSink* sink) : desc_(std::move(desc)), sink_(sink) {}

StatusOr<Series*> Family::GetSeries(const Labels& labels, bool strict, MetricType want) {
  if (want != desc_.type) {
    return Status::InvalidArgument("metric \"" + desc_.name + "\" is a " + TypeWord(desc_.type) +
                                   ", not a " + TypeWord(want));
  }
  std::vector<std::string> values;
  values.reserve(desc_.label_names.size());
  for (const std::string& dim : desc_.label_names) {
    auto it =
        std::find_if(labels.begin(), labels.end(), [&](const auto& kv) { return kv.first == dim; });
    if (it == labels.end()) {
      return Status::InvalidArgument("metric \"" + desc_.name + "\" needs dimension \"" + dim +
                                     "\", which was not given");
    }
    values.emplace_back(it->second);
  }
  if (strict) {
    for (const auto& [name, value] : labels) {
      if (std::find(desc_.label_names.begin(), desc_.label_names.end(), name) ==
          desc_.label_names.end()) {
        return Status::InvalidArgument("metric \"" + desc_.name + "\" has no dimension \"" +
                                       std::string(name) + "\" in metrics.yaml");
      }
    }
  }
  MutexLock lock(&mu_);
  auto it = index_.find(values);
  if (it != index_.end()) {
    ++it->second.uses;
    return it->second.series.get();
  }
  std::shared_ptr<Series> s;
  switch (desc_.type) {
    case MetricType::kCounter:
      s = std::make_shared<Counter>(&desc_, values, sink_);
      break;
    case MetricType::kGauge:
      s = std::make_shared<Gauge>(&desc_, values, sink_);
      break;
    case MetricType::kHistogram:
      s = std::make_shared<Histogram>(&desc_, values, sink_);
      break;
  }
  Series* raw = s.get();
  index_.emplace(std::move(values), Entry{std::move(s), 1});
  list_dirty_ = true;
  return raw;
}

StatusOr<Counter*> Family::GetCounter(const Labels& labels, bool strict) {
  auto s = GetSeries(labels, strict, MetricType::kCounter);
  if (!s.ok()) return s.status();
  return static_cast<Counter*>(*s);
}

StatusOr<Gauge*> Family::GetGauge(const Labels& labels, bool strict) {
  auto s = GetSeries(labels, strict, MetricType::kGauge);
  if (!s.ok()) return s.status();
  return static_cast<Gauge*>(*s);
}

StatusOr<Histogram*> Family::GetHistogram(const Labels& labels, bool strict) {
  auto s = GetSeries(labels, strict, MetricType::kHistogram);
  if (!s.ok()) return s.status();
  return static_cast<Histogram*>(*s);
}

void Family::Remove(const Labels& labels) {
  std::vector<std::string> values;
  for (const std::string& dim : desc_.label_names) {
    auto it =
        std::find_if(labels.begin(), labels.end(), [&](const auto& kv) { return kv.first == dim; });
    if (it == labels.end()) return;
    values.emplace_back(it->second);
  }
  MutexLock lock(&mu_);
  if (index_.erase(values) != 0) list_dirty_ = true;
}

void Family::Release(const Series* series) {
  if (series == nullptr || &series->family() != &desc_) return;
  MutexLock lock(&mu_);
  auto it = index_.find(series->label_values());
  if (it == index_.end() || it->second.series.get() != series) return;
  if (it->second.uses > 0) --it->second.uses;
  if (it->second.uses == 0) {
    index_.erase(it);
    list_dirty_ = true;
  }
}

void Family::Clear() {
  MutexLock lock(&mu_);
  index_.clear();
  list_dirty_ = true;
}

size_t Family::SeriesCount() const {
  MutexLock lock(&mu_);
  return index_.size();
}

FamilySnapshot Family::Snapshot() const {
  FamilySnapshot snap;
  snap.desc = &desc_;
  {
    MutexLock lock(&mu_);
    if (list_dirty_) {
      auto list = std::make_shared<std::vector<std::shared_ptr<Series>>>();
      list->reserve(index_.size());
      for (const auto& [values, entry] : index_) list->push_back(entry.series);
      list_ = std::move(list);
      list_dirty_ = false;
    }
    snap.keep_alive = list_;
  }
  // Values are read without the lock: the list is immutable and keeps its series alive.
  const auto& all = *snap.keep_alive;
  snap.series.reserve(all.size());
  snap.values.reserve(all.size());
  switch (desc_.type) {
    case MetricType::kCounter:
      for (const auto& s : all) {
        double v = static_cast<const Counter&>(*s).Value();
        if (IsUntouched(v)) continue;
        snap.series.push_back(s.get());
        snap.values.push_back(v);
      }
      break;
    case MetricType::kGauge:
      for (const auto& s : all) {
        double v = static_cast<const Gauge&>(*s).Value();
        if (IsUntouched(v)) continue;
        snap.series.push_back(s.get());
        snap.values.push_back(v);
      }
      break;
    case MetricType::kHistogram: {
      const size_t n = desc_.buckets.size() + 1;
      std::vector<uint64_t> counts;
      for (const auto& s : all) {
        const auto& h = static_cast<const Histogram&>(*s);
        h.ReadCounts(&counts);
        for (size_t i = 1; i < n; ++i) counts[i] += counts[i - 1];
        if (counts[n - 1] == 0) continue;
        snap.series.push_back(s.get());
        snap.values.push_back(h.Sum());
        snap.cumulative.insert(snap.cumulative.end(), counts.begin(), counts.end());
      }
      break;
    }
  }
  return snap;
}

StatusOr<Family*> Registry::Add(FamilyDesc desc) {
  if (desc.type == MetricType::kHistogram) {
    if (desc.buckets.empty()) desc.buckets = DefaultBuckets();
    for (size_t i = 1; i < desc.buckets.size(); ++i) {
      if (!(desc.buckets[i] > desc.buckets[i - 1])) {
        return Status::InvalidArgument("histogram \"" + desc.name +
                                       "\": buckets must be strictly ascending");
      }
    }
  }
  MutexLock lock(&mu_);
  if (families_.count(desc.name) != 0) {
    return Status::AlreadyExists("metric \"" + desc.name + "\" is defined twice");
  }
  std::string name = desc.name;
  auto family = std::make_unique<Family>(std::move(desc), sink_);
  Family* raw = family.get();
  families_.emplace(std::move(name), std::move(family));
  return raw;
}

StatusOr<Family*> Registry::GetOrAdd(FamilyDesc desc) {
  if (Family* f = Find(desc.name)) {
    if (f->desc().type != desc.type || f->desc().label_names != desc.label_names) {
      return Status::AlreadyExists("metric \"" + desc.name +
                                   "\" already exists with another type or dimensions");
    }
    return f;
  }
  return Add(std::move(desc));
}

Family* Registry::Find(std::string_view name) const {
  MutexLock lock(&mu_);
  auto it = families_.find(name);
  return it == families_.end() ? nullptr : it->second.get();
}

Series* Registry::Detached(std::string_view name, MetricType type) {
  MutexLock lock(&mu_);
  auto key = std::make_pair(std::string(name), type);
  auto it = detached_.find(key);
  if (it != detached_.end()) return it->second.series.get();
  auto desc = std::make_unique<FamilyDesc>();
  desc->name = key.first;
  desc->type = type;
  std::unique_ptr<Series> s;
  switch (type) {
    case MetricType::kCounter:
      s = std::make_unique<Counter>(desc.get(), std::vector<std::string>{}, nullptr);
      break;
    case MetricType::kGauge:
      s = std::make_unique<Gauge>(desc.get(), std::vector<std::string>{}, nullptr);
      break;
    case MetricType::kHistogram:
      desc->buckets = DefaultBuckets();
      s = std::make_unique<Histogram>(desc.get(), std::vector<std::string>{}, nullptr);
      break;
  }
  Series* raw = s.get();
  detached_.emplace(std::move(key), DetachedSeries{std::move(desc), std::move(s)});
  return raw;
}

size_t Registry::DetachedCount() const {
  MutexLock lock(&mu_);
  return detached_.size();
}

void Registry::Release(const Series* series) {
  if (series == nullptr) return;
  // A detached series' description is not a family's: Find gives another desc (or none),
  // and Family::Release ignores a series that is not its own.
  if (Family* f = Find(series->family().name)) f->Release(series);
}

StatusOr<Counter*> Registry::CounterFor(std::string_view name, const Labels& labels) {
  if (Family* f = Find(name)) return f->GetCounter(labels);
  return static_cast<Counter*>(Detached(name, MetricType::kCounter));
}

StatusOr<Gauge*> Registry::GaugeFor(std::string_view name, const Labels& labels) {
  if (Family* f = Find(name)) return f->GetGauge(labels);
  return static_cast<Gauge*>(Detached(name, MetricType::kGauge));
}

StatusOr<Histogram*> Registry::HistogramFor(std::string_view name, const Labels& labels) {
  if (Family* f = Find(name)) return f->GetHistogram(labels);
  return static_cast<Histogram*>(Detached(name, MetricType::kHistogram));
}

void Registry::AddCollectHook(std::function<void()> hook) {
  MutexLock lock(&collect_mu_);
  hooks_.push_back(std::move(hook));
}

Snapshot Registry::Collect(const FamilyPredicate& want) const {
  {
    MutexLock lock(&collect_mu_);
    for (const auto& hook : hooks_) hook();
  }
  std::vector<const Family*> families;
  {
    MutexLock lock(&mu_);
    families.reserve(families_.size());
    for (const auto& [name, f] : families_) {
      if (!want || want(f->desc())) families.push_back(f.get());
    }
  }
  Snapshot snap;
  snap.families.reserve(families.size());
  for (const Family* f : families) snap.families.push_back(f->Snapshot());
  return snap;
}

}  // namespace tserve::metrics
