#include "metrics/text_format.h"

#include "metrics/java_double.h"

namespace tserve::metrics {

void AppendEscapedLabelValue(std::string_view v, std::string* out) {
  for (char c : v) {
    switch (c) {
      case '\\':
        out->append("\\\\");
        break;
      case '"':
        out->append("\\\"");
        break;
      case '\n':
        out->append("\\n");
        break;
      default:
        out->push_back(c);
    }
  }
}

void AppendEscapedHelp(std::string_view v, std::string* out) {
  for (char c : v) {
    switch (c) {
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      default:
        out->push_back(c);
    }
  }
}

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

void RenderText(const Snapshot& snapshot, const RenderOptions& options, std::string* out) {
  const NameFilter* filter = options.sample_filter;
  std::string name_buf;
  std::vector<std::string> le;
  for (const FamilySnapshot& fam : snapshot.families) {
    const FamilyDesc& d = *fam.desc;
    if (options.families != nullptr && options.families->count(d.name) == 0) continue;
    if (d.type != MetricType::kHistogram) {
      if (filter != nullptr && (fam.series.empty() || !filter->Contains(d.name))) continue;
      AppendHeader(d, out);
      for (const SeriesSnapshot& s : fam.series) {
        AppendSample(d.name, "", s.series->rendered_labels(), s.value, out);
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
      if (fam.series.empty() || !(want_bucket || want_count || want_sum)) continue;
    }
    AppendHeader(d, out);
    if (fam.series.empty()) continue;
    le.clear();
    for (double b : d.buckets) le.push_back(JavaDouble(b));
    le.emplace_back("+Inf");
    for (const SeriesSnapshot& s : fam.series) {
      const std::string& labels = s.series->rendered_labels();
      if (want_bucket) {
        for (size_t i = 0; i < s.cumulative.size(); ++i) {
          AppendBucket(d, labels, le[i], s.cumulative[i], out);
        }
      }
      if (want_count) {
        double count = s.cumulative.empty() ? 0.0 : static_cast<double>(s.cumulative.back());
        AppendSample(d.name, "_count", labels, count, out);
      }
      if (want_sum) AppendSample(d.name, "_sum", labels, s.sum, out);
    }
  }
}

}  // namespace tserve::metrics
