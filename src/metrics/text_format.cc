#include "metrics/text_format.h"

#include "metrics/java_double.h"

namespace tserve::metrics {

namespace {

// The text format's escapes: backslash and newline, and '"' in label values only.
void AppendEscaped(std::string_view v, bool quotes, std::string* out) {
  for (char c : v) {
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '\n') {
      out->append("\\n");
    } else if (c == '"' && quotes) {
      out->append("\\\"");
    } else {
      out->push_back(c);
    }
  }
}

}  // namespace

void AppendEscapedLabelValue(std::string_view v, std::string* out) { AppendEscaped(v, true, out); }

void AppendEscapedHelp(std::string_view v, std::string* out) { AppendEscaped(v, false, out); }

std::string RenderLabels(const std::vector<std::string>& names,
                         const std::vector<std::string>& values) {
  std::string out;
  if (names.empty()) return out;
  out.push_back('{');
  for (size_t i = 0; i < names.size(); ++i) {
    out.append(names[i]);
    out.append("=\"");
    AppendEscapedLabelValue(i < values.size() ? values[i] : std::string_view(), &out);
    out.append("\",");
  }
  out.push_back('}');
  return out;
}

namespace {

void AppendHeader(const FamilyDesc& d, std::string* out) {
  out->append("# HELP ");
  out->append(d.name);
  out->push_back(' ');
  AppendEscapedHelp(d.help, out);
  out->append("\n# TYPE ");
  out->append(d.name);
  out->push_back(' ');
  out->append(MetricTypeName(d.type));
  out->push_back('\n');
}

void AppendSample(std::string_view name, std::string_view suffix, std::string_view labels,
                  double value, std::string* out) {
  out->append(name);
  out->append(suffix);
  out->append(labels);
  out->push_back(' ');
  AppendJavaDouble(value, out);
  out->push_back('\n');
}

// A bucket sample's labels: the series' labels with le="..." added last, keeping
// TorchServe's trailing comma.
void AppendBucket(const FamilyDesc& d, const std::string& labels, const std::string& le,
                  uint64_t count, std::string* out) {
  out->append(d.name);
  out->append("_bucket");
  if (labels.empty()) {
    out->append("{le=\"");
  } else {
    out->append(labels, 0, labels.size() - 1);  // without the closing '}'
    out->append("le=\"");
  }
  out->append(le);
  out->append("\",} ");
  AppendJavaDouble(static_cast<double>(count), out);
  out->push_back('\n');
}

}  // namespace

bool NameFilter::MayMatch(const FamilyDesc& d) const {
  if (d.type != MetricType::kHistogram) return Contains(d.name);
  std::string name;
  for (const char* suffix : {"_bucket", "_count", "_sum"}) {
    name.assign(d.name).append(suffix);
    if (Contains(name)) return true;
  }
  return false;
}

bool WantsFamily(const RenderOptions& options, const FamilyDesc& d) {
  if (options.families != nullptr && options.families->count(d.name) == 0) return false;
  return options.sample_filter == nullptr || options.sample_filter->MayMatch(d);
}

void RenderText(const Snapshot& snapshot, const RenderOptions& options, std::string* out) {
  const NameFilter* filter = options.sample_filter;
  std::string name_buf;
  std::vector<std::string> le;
  for (const FamilySnapshot& fam : snapshot.families) {
    const FamilyDesc& d = *fam.desc;
    if (!WantsFamily(options, d)) continue;
    // With a filter, a family without samples is dropped entirely (TorchServe).
    if (filter != nullptr && fam.series.empty()) continue;
    AppendHeader(d, out);
    if (d.type != MetricType::kHistogram) {
      for (size_t i = 0; i < fam.series.size(); ++i) {
        AppendSample(d.name, "", fam.series[i]->rendered_labels(), fam.values[i], out);
      }
      continue;
    }
    bool want_bucket = true, want_count = true, want_sum = true;
    if (filter != nullptr) {
      name_buf.assign(d.name).append("_bucket");
      want_bucket = filter->Contains(name_buf);
      name_buf.assign(d.name).append("_count");
      want_count = filter->Contains(name_buf);
      name_buf.assign(d.name).append("_sum");
      want_sum = filter->Contains(name_buf);
    }
    if (fam.series.empty()) continue;
    le.clear();
    for (double b : d.buckets) le.push_back(JavaDouble(b));
    le.emplace_back("+Inf");
    for (size_t i = 0; i < fam.series.size(); ++i) {
      const std::string& labels = fam.series[i]->rendered_labels();
      std::span<const uint64_t> cumulative = fam.Cumulative(i);
      if (want_bucket) {
        for (size_t b = 0; b < cumulative.size(); ++b) {
          AppendBucket(d, labels, le[b], cumulative[b], out);
        }
      }
      if (want_count) {
        AppendSample(d.name, "_count", labels, static_cast<double>(cumulative.back()), out);
      }
      if (want_sum) AppendSample(d.name, "_sum", labels, fam.values[i], out);
    }
  }
}

}  // namespace tserve::metrics
