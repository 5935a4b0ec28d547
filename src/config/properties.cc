#include "config/properties.h"

#include <cstdint>
#include <optional>

namespace tserve {

namespace {

// Java's Properties.load treats only these three as blanks (not '\v', not '\r'/'\n').
bool IsPropertiesBlank(char c) { return c == ' ' || c == '\t' || c == '\f'; }

bool IsEol(char c) { return c == '\r' || c == '\n'; }

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void AppendUtf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Reads the 4 hex digits of a \uXXXX escape whose 'u' is at s[pos]; nullopt when malformed.
std::optional<uint32_t> ReadUnicodeEscape(std::string_view s, size_t pos) {
  if (pos + 4 >= s.size()) return std::nullopt;
  uint32_t v = 0;
  for (size_t k = 1; k <= 4; ++k) {
    int d = HexDigit(s[pos + k]);
    if (d < 0) return std::nullopt;
    v = v * 16 + static_cast<uint32_t>(d);
  }
  return v;
}

// Java's loadConvert: resolves escapes in a raw key or value. \uXXXX yields UTF-16 code
// units; a surrogate pair written as two escapes becomes one UTF-8 character, and a lone
// surrogate (unrepresentable in UTF-8) becomes U+FFFD. Bytes >= 0x80 pass through, so
// UTF-8 files keep their text (Java would read them as ISO-8859-1).
StatusOr<std::string> Unescape(std::string_view raw, int line) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c != '\\') {
      out.push_back(c);
      continue;
    }
    if (i + 1 >= raw.size()) break;  // a lone trailing backslash is dropped, as Java does
    c = raw[++i];
    switch (c) {
      case 't':
        out.push_back('\t');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'u': {
        std::optional<uint32_t> unit = ReadUnicodeEscape(raw, i);
        if (!unit) {
          std::string shown(raw.substr(i - 1, 6));
          return Status::InvalidArgument("malformed \\uXXXX escape \"" + shown + "\" on line " +
                                         std::to_string(line));
        }
        i += 4;
        uint32_t cp = *unit;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          // A high surrogate: combine with an immediately following \uDC00-\uDFFF escape.
          std::optional<uint32_t> low;
          if (i + 2 < raw.size() && raw[i + 1] == '\\' && raw[i + 2] == 'u') {
            low = ReadUnicodeEscape(raw, i + 2);
          }
          if (low && *low >= 0xDC00 && *low <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (*low - 0xDC00);
            i += 6;
          } else {
            cp = 0xFFFD;
          }
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          cp = 0xFFFD;
        }
        AppendUtf8(cp, out);
        break;
      }
      default:
        out.push_back(c);  // \\, \=, \:, \#, \!, \<space> and any other char: itself
        break;
    }
  }
  return out;
}

// Splits a logical line into raw key and raw value exactly as Properties.load does: the key
// ends at the first unescaped '=', ':' or blank; blanks and at most one '='/':' after it are
// skipped; the rest (trailing blanks included) is the value.
void SplitKeyValue(std::string_view line, std::string_view& key, std::string_view& value) {
  size_t key_len = 0;
  size_t value_start = line.size();
  bool has_sep = false;
  bool preceding_backslash = false;
  while (key_len < line.size()) {
    char c = line[key_len];
    if ((c == '=' || c == ':') && !preceding_backslash) {
      value_start = key_len + 1;
      has_sep = true;
      break;
    }
    if (IsPropertiesBlank(c) && !preceding_backslash) {
      value_start = key_len + 1;
      break;
    }
    preceding_backslash = (c == '\\') ? !preceding_backslash : false;
    ++key_len;
  }
  while (value_start < line.size()) {
    char c = line[value_start];
    if (!IsPropertiesBlank(c)) {
      if (!has_sep && (c == '=' || c == ':')) {
        has_sep = true;
      } else {
        break;
      }
    }
    ++value_start;
  }
  key = line.substr(0, key_len);
  value = line.substr(value_start);
}

// The 1-based line of a position. Positions are asked for in increasing order, so the
// cursor only moves forward. "\r\n", "\r" and "\n" each end one line.
class LineCounter {
 public:
  explicit LineCounter(std::string_view text) : text_(text) {}
  int LineAt(size_t pos) {
    for (; pos_ < pos && pos_ < text_.size(); ++pos_) {
      char c = text_[pos_];
      if (c == '\n' || (c == '\r' && (pos_ + 1 >= text_.size() || text_[pos_ + 1] != '\n'))) {
        ++line_;
      }
    }
    return line_;
  }

 private:
  std::string_view text_;
  size_t pos_ = 0;
  int line_ = 1;
};

Status AddProperty(std::string_view logical, int line, std::vector<Property>& out) {
  std::string_view raw_key;
  std::string_view raw_value;
  SplitKeyValue(logical, raw_key, raw_value);
  StatusOr<std::string> key = Unescape(raw_key, line);
  if (!key.ok()) return key.status();
  StatusOr<std::string> value = Unescape(raw_value, line);
  if (!value.ok()) return value.status();
  out.push_back(Property{std::move(key).value(), std::move(value).value(), line});
  return Status::Ok();
}

}  // namespace

// A transcription of Java 17's Properties.LineReader.readLine, whose corner cases are the
// contract (tests compare against it): a comment starts wherever the logical line is still
// empty, even right after a continuation; an empty or blank next line ends a continued one;
// a lone "\" before EOF yields an empty key.
StatusOr<std::vector<Property>> ParseProperties(std::string_view text) {
  // A UTF-8 byte order mark is not part of the first key (editors on Windows add one).
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  const size_t n = text.size();
  LineCounter lines(text);
  std::vector<Property> out;
  std::string logical;
  int start_line = 0;
  bool skip_blanks = true;
  bool appended_line_begin = false;  // just continued: an EOL now ends the logical line
  bool preceding_backslash = false;
  size_t off = 0;
  auto finish = [&]() -> Status {
    if (preceding_backslash) logical.pop_back();  // "\" at EOF continues into nothing
    return AddProperty(logical, start_line, out);
  };
  while (true) {
    if (off >= n) {
      if (logical.empty()) return out;
      if (Status s = finish(); !s.ok()) return s;
      return out;
    }
    const size_t pos = off;
    const char c = text[off++];
    if (skip_blanks) {
      if (IsPropertiesBlank(c)) continue;
      if (!appended_line_begin && IsEol(c)) continue;
      skip_blanks = false;
      appended_line_begin = false;
    }
    if (logical.empty() && (c == '#' || c == '!')) {  // a comment runs to its EOL, no further
      while (off < n && !IsEol(text[off])) ++off;
      if (off >= n) return out;
      ++off;
      skip_blanks = true;
      continue;
    }
    if (!IsEol(c)) {
      if (logical.empty()) start_line = lines.LineAt(pos);
      logical.push_back(c);
      preceding_backslash = (c == '\\') ? !preceding_backslash : false;
      continue;
    }
    if (logical.empty()) {  // an empty line right after a continuation
      skip_blanks = true;
      continue;
    }
    if (off >= n) {
      if (Status s = finish(); !s.ok()) return s;
      return out;
    }
    if (preceding_backslash) {
      // Continuation: drop the backslash and the next line's leading blanks.
      logical.pop_back();
      skip_blanks = true;
      appended_line_begin = true;
      preceding_backslash = false;
      if (c == '\r' && text[off] == '\n') ++off;
      continue;
    }
    if (Status s = AddProperty(logical, start_line, out); !s.ok()) return s;
    logical.clear();
    skip_blanks = true;
    appended_line_begin = false;
  }
}

StatusOr<std::string> ExpandEnvReferences(std::string_view value,
                                          const std::map<std::string, std::string>& env) {
  // Same matches as TorchServe's \$\$([^$]+[^$])\$\$ (leftmost, a name without '$'), except
  // that one-character names are accepted too. Substituted text is inserted literally and
  // never re-expanded.
  std::string out;
  out.reserve(value.size());
  size_t i = 0;
  while (i < value.size()) {
    if (value.compare(i, 2, "$$") == 0) {
      size_t name_begin = i + 2;
      size_t name_end = value.find('$', name_begin);
      if (name_end != std::string_view::npos && name_end > name_begin &&
          value.compare(name_end, 2, "$$") == 0) {
        std::string name(value.substr(name_begin, name_end - name_begin));
        auto it = env.find(name);
        if (it == env.end()) {
          return Status::InvalidArgument("environment variable " + name + " is not set");
        }
        out.append(it->second);
        i = name_end + 2;
        continue;
      }
    }
    out.push_back(value[i]);
    ++i;
  }
  return out;
}

}  // namespace tserve
