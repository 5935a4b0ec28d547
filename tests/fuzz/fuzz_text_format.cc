// The Prometheus exposition renderer: families with fuzzed (valid) names, label names,
// arbitrary label values and help texts (plugins and model names put user text there), and
// arbitrary values (NaN, ±Inf, negatives), rendered with and without a name[] filter.
// The output is parsed back by a small exposition parser below, which checks that every line
// is a HELP, TYPE or sample line, that help texts and label values round-trip through the
// escaping, that values are numbers, and that every histogram's _count equals its +Inf bucket.
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "metrics/registry.h"
#include "metrics/text_format.h"

namespace m = tserve::metrics;

namespace {

std::string Name(FuzzedDataProvider& p, bool label) {
  static constexpr std::string_view kFirst =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:";
  static constexpr std::string_view kRest =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:0123456789";
  const std::string_view first = label ? kFirst.substr(0, kFirst.size() - 1) : kFirst;
  const std::string_view rest = label ? kRest.substr(0, 63) : kRest;
  std::string s(1, first[p.ConsumeIntegral<uint8_t>() % first.size()]);
  const size_t n = p.ConsumeIntegralInRange<size_t>(0, 8);
  for (size_t i = 0; i < n; ++i) {
    char c = rest[p.ConsumeIntegral<uint8_t>() % rest.size()];
    if (label && c == ':') c = '_';
    s.push_back(c);
  }
  return s;
}

double Value(FuzzedDataProvider& p) {
  switch (p.ConsumeIntegralInRange<int>(0, 5)) {
    case 0:
      return std::nan("");
    case 1:
      return INFINITY;
    case 2:
      return -INFINITY;
    case 3:
      return static_cast<double>(p.ConsumeIntegral<int32_t>());
    default:
      return p.ConsumeFloatingPoint<double>();
  }
}

// Parses `"..."` at text[*pos] with the exposition format's escapes (\\, \", \n).
bool ParseQuoted(std::string_view text, size_t* pos, std::string* out) {
  if (*pos >= text.size() || text[*pos] != '"') return false;
  ++*pos;
  while (*pos < text.size()) {
    char c = text[(*pos)++];
    if (c == '"') return true;
    if (c == '\n') return false;
    if (c != '\\') {
      out->push_back(c);
      continue;
    }
    if (*pos >= text.size()) return false;
    char e = text[(*pos)++];
    if (e == '\\')
      out->push_back('\\');
    else if (e == '"')
      out->push_back('"');
    else if (e == 'n')
      out->push_back('\n');
    else
      return false;
  }
  return false;
}

std::string UnescapeHelp(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && s[i + 1] == 'n') {
      out.push_back('\n');
      ++i;
    } else if (s[i] == '\\' && i + 1 < s.size() && s[i + 1] == '\\') {
      out.push_back('\\');
      ++i;
    } else {
      TSERVE_FUZZ_CHECK(s[i] != '\\');  // no other escape is written
      out.push_back(s[i]);
    }
  }
  return out;
}

bool IsMetricName(std::string_view s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool IsNumber(const std::string& s) {
  if (s == "NaN" || s == "+Inf" || s == "-Inf") return true;  // the text format's spelling
  if (s.empty()) return false;
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && s.find_first_of("nNiI") == std::string::npos;
}

struct Expected {
  std::string help;
  m::MetricType type;
  std::set<std::vector<std::string>> series;  // label values of each series
};

struct Sample {
  std::string name;
  std::vector<std::pair<std::string, std::string>> labels;
  std::string value;
};

// Checks `text` against what was registered.
void Check(const std::string& text, const std::map<std::string, Expected>& families) {
  TSERVE_FUZZ_CHECK(text.empty() || text.back() == '\n');
  std::string current;  // the family of the last HELP line
  std::map<std::vector<std::string>, std::string> counts, inf_buckets;  // histogram checks
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    TSERVE_FUZZ_CHECK(eol != std::string::npos);
    std::string_view line(text.data() + pos, eol - pos);
    size_t next = eol + 1;
    if (line.rfind("# HELP ", 0) == 0) {
      std::string_view rest = line.substr(7);
      size_t sp = rest.find(' ');
      TSERVE_FUZZ_CHECK(sp != std::string_view::npos);
      current = std::string(rest.substr(0, sp));
      auto it = families.find(current);
      TSERVE_FUZZ_CHECK(it != families.end());
      TSERVE_FUZZ_CHECK(UnescapeHelp(rest.substr(sp + 1)) == it->second.help);
    } else if (line.rfind("# TYPE ", 0) == 0) {
      std::string_view rest = line.substr(7);
      TSERVE_FUZZ_CHECK(rest.substr(0, rest.find(' ')) == current);
      std::string_view type = rest.substr(rest.find(' ') + 1);
      TSERVE_FUZZ_CHECK(type == m::MetricTypeName(families.at(current).type));
    } else {
      // A sample: name{l="v",...,} value
      Sample s;
      size_t i = 0;
      while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
      s.name = std::string(line.substr(0, i));
      TSERVE_FUZZ_CHECK(IsMetricName(s.name));
      if (i < line.size() && line[i] == '{') {
        ++i;
        std::string_view whole(text.data() + pos, text.size() - pos);
        while (i < line.size() && line[i] != '}') {
          size_t eq = line.find('=', i);
          TSERVE_FUZZ_CHECK(eq != std::string_view::npos);
          std::string lname(line.substr(i, eq - i));
          TSERVE_FUZZ_CHECK(IsMetricName(lname) && lname.find(':') == std::string::npos);
          size_t q = eq + 1;
          std::string value;
          TSERVE_FUZZ_CHECK(ParseQuoted(whole, &q, &value));
          TSERVE_FUZZ_CHECK(q < line.size() && line[q] == ',');  // TorchServe's trailing comma
          s.labels.emplace_back(lname, value);
          i = q + 1;
        }
        TSERVE_FUZZ_CHECK(i < line.size() && line[i] == '}');
        ++i;
      }
      TSERVE_FUZZ_CHECK(i < line.size() && line[i] == ' ');
      s.value = std::string(line.substr(i + 1));
      if (!IsNumber(s.value)) std::fprintf(stderr, "bad value: %s\n", s.value.c_str());
      TSERVE_FUZZ_CHECK(IsNumber(s.value));
      // The sample belongs to the current family, and its label values to one of its series.
      const Expected& fam = families.at(current);
      std::string suffix = s.name.substr(std::min(s.name.size(), current.size()));
      TSERVE_FUZZ_CHECK(s.name.compare(0, current.size(), current) == 0);
      std::vector<std::string> values;
      std::string le;
      for (const auto& [k, v] : s.labels) {
        if (fam.type == m::MetricType::kHistogram && suffix == "_bucket" && k == "le") {
          le = v;
        } else {
          values.push_back(v);
        }
      }
      if (fam.type == m::MetricType::kHistogram) {
        TSERVE_FUZZ_CHECK(suffix == "_bucket" || suffix == "_count" || suffix == "_sum");
        if (suffix == "_bucket") TSERVE_FUZZ_CHECK(!le.empty());
        if (suffix == "_bucket" && le == "+Inf") inf_buckets[values] = s.value;
        if (suffix == "_count") counts[values] = s.value;
      } else {
        TSERVE_FUZZ_CHECK(suffix.empty());
      }
      TSERVE_FUZZ_CHECK(fam.series.count(values) == 1);
    }
    pos = next;
  }
  for (const auto& [values, count] : counts) {
    auto it = inf_buckets.find(values);
    if (it != inf_buckets.end()) TSERVE_FUZZ_CHECK(it->second == count);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider p(data, size);
  m::Registry registry;
  std::map<std::string, Expected> expected;
  std::vector<std::string> filter_names;
  const int n_families = p.ConsumeIntegralInRange<int>(1, 4);
  for (int f = 0; f < n_families; ++f) {
    m::FamilyDesc d;
    d.name = Name(p, false);
    d.type = static_cast<m::MetricType>(p.ConsumeIntegralInRange<int>(0, 2));
    d.help = p.ConsumeRandomLengthString(64);
    const int n_labels = p.ConsumeIntegralInRange<int>(0, 3);
    std::set<std::string> seen;
    for (int l = 0; l < n_labels; ++l) {
      std::string label = Name(p, true);
      if (label == "le" || !seen.insert(label).second) continue;
      d.label_names.push_back(label);
    }
    if (d.type == m::MetricType::kHistogram) {
      double b = p.ConsumeFloatingPointInRange<double>(-1e6, 1e6);
      const int n_buckets = p.ConsumeIntegralInRange<int>(0, 4);
      for (int i = 0; i < n_buckets; ++i) {
        d.buckets.push_back(b);
        b += 1 + p.ConsumeFloatingPointInRange<double>(0, 1e6);
      }
    }
    if (p.ConsumeBool()) filter_names.push_back(d.name + (p.ConsumeBool() ? "_count" : ""));
    const std::string name = d.name;
    const std::vector<std::string> label_names = d.label_names;
    Expected e{d.help, d.type, {}};
    auto family = registry.Add(std::move(d));
    if (!family.ok()) continue;
    const int n_series = p.ConsumeIntegralInRange<int>(0, 3);
    for (int s = 0; s < n_series; ++s) {
      std::vector<std::string> values;
      for (size_t l = 0; l < label_names.size(); ++l)
        values.push_back(p.ConsumeRandomLengthString(24));
      m::Labels labels;
      for (size_t l = 0; l < label_names.size(); ++l)
        labels.emplace_back(label_names[l], values[l]);
      const double v = Value(p);
      switch (e.type) {
        case m::MetricType::kCounter:
          if (auto c = family.value()->GetCounter(labels, true); c.ok()) {
            if (v >= 0)
              c.value()->Add(v);
            else
              c.value()->Inc();
            e.series.insert(values);
          }
          break;
        case m::MetricType::kGauge:
          if (auto g = family.value()->GetGauge(labels, true); g.ok()) {
            g.value()->Set(v);
            e.series.insert(values);
          }
          break;
        case m::MetricType::kHistogram:
          if (auto h = family.value()->GetHistogram(labels, true); h.ok()) {
            h.value()->Observe(v);
            if (p.ConsumeBool()) h.value()->Observe(Value(p));
            e.series.insert(values);
          }
          break;
      }
    }
    expected[name] = std::move(e);
  }
  const m::Snapshot snapshot = registry.Collect();
  std::string out;
  m::RenderText(snapshot, {}, &out);
  Check(out, expected);
  m::NameFilter filter(filter_names);
  m::RenderOptions options;
  options.sample_filter = &filter;
  std::string filtered;
  m::RenderText(snapshot, options, &filtered);
  Check(filtered, expected);
  return 0;
}
