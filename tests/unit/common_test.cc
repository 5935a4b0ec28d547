#include "common/strings.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace tserve {
namespace {

using Parts = std::vector<std::string_view>;

TEST(StringsTest, TrimWhitespace) {
  EXPECT_EQ(TrimWhitespace(""), "");
  EXPECT_EQ(TrimWhitespace("   "), "");
  EXPECT_EQ(TrimWhitespace("abc"), "abc");
  EXPECT_EQ(TrimWhitespace(" \t\r\n\f\vabc d \t\r\n"), "abc d");
  EXPECT_EQ(TrimWhitespace("a b"), "a b");
}

TEST(StringsTest, TrimWhitespaceReturnsAViewIntoTheInput) {
  std::string_view s = "  x  ";
  std::string_view t = TrimWhitespace(s);
  EXPECT_EQ(t.data(), s.data() + 2);
}

TEST(StringsTest, TrimWhitespaceKeepsNonAsciiBytes) {
  EXPECT_EQ(TrimWhitespace(" \xC3\xA9 "), "\xC3\xA9");
}

TEST(StringsTest, SplitString) {
  EXPECT_EQ(SplitString("a,b,c", ','), (Parts{"a", "b", "c"}));
  EXPECT_EQ(SplitString("", ','), (Parts{""}));
  EXPECT_EQ(SplitString("abc", ','), (Parts{"abc"}));
  EXPECT_EQ(SplitString(",", ','), (Parts{"", ""}));
  EXPECT_EQ(SplitString("a,,b,", ','), (Parts{"a", "", "b", ""}));
  EXPECT_EQ(SplitString(" a , b ", ','), (Parts{" a ", " b "}));
  EXPECT_EQ(SplitString("x=1&y=2", '&'), (Parts{"x=1", "y=2"}));
}

TEST(StringsTest, EqualsIgnoreCase) {
  EXPECT_TRUE(EqualsIgnoreCase("", ""));
  EXPECT_TRUE(EqualsIgnoreCase("Content-Type", "content-type"));
  EXPECT_TRUE(EqualsIgnoreCase("TRUE", "true"));
  EXPECT_FALSE(EqualsIgnoreCase("true", "true "));
  EXPECT_FALSE(EqualsIgnoreCase("abc", "abd"));
  EXPECT_FALSE(EqualsIgnoreCase("a", ""));
}

TEST(StringsTest, ToLower) {
  EXPECT_EQ(ToLower(""), "");
  EXPECT_EQ(ToLower("MiXeD-Case_09"), "mixed-case_09");
  EXPECT_EQ(ToLower("\xC3\x89"), "\xC3\x89");  // bytes >= 0x80 untouched
}

TEST(StringsTest, EndsWith) {
  EXPECT_TRUE(EndsWith("model.mar", ".mar"));
  EXPECT_TRUE(EndsWith("model.mar", ""));
  EXPECT_TRUE(EndsWith(".mar", ".mar"));
  EXPECT_FALSE(EndsWith("mar", ".mar"));
  EXPECT_FALSE(EndsWith("model.MAR", ".mar"));
  EXPECT_FALSE(EndsWith("", "x"));
}

TEST(StringsTest, Quoted) {
  EXPECT_EQ(Quoted("my model"), "\"my model\"");
  EXPECT_EQ(Quoted(""), "\"\"");
  EXPECT_EQ(Quoted("caf\xc3\xa9"), "\"caf\xc3\xa9\"");  // UTF-8 kept
  // One line, with an unambiguous end.
  EXPECT_EQ(Quoted("a\"b\\c"), R"("a\"b\\c")");
  EXPECT_EQ(Quoted("x\ny\rz\t"), R"("x\ny\rz\t")");
  EXPECT_EQ(Quoted(std::string("\x01\x7f\0", 3)), R"("\x01\x7F\x00")");
}

TEST(StringsTest, ParseInt64Accepts) {
  EXPECT_EQ(ParseInt64("0"), 0);
  EXPECT_EQ(ParseInt64("42"), 42);
  EXPECT_EQ(ParseInt64("-42"), -42);
  EXPECT_EQ(ParseInt64("+42"), 42);
  EXPECT_EQ(ParseInt64("  7\t"), 7);
  EXPECT_EQ(ParseInt64("007"), 7);
  EXPECT_EQ(ParseInt64("9223372036854775807"), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(ParseInt64("-9223372036854775808"), std::numeric_limits<int64_t>::min());
}

TEST(StringsTest, ParseInt64Rejects) {
  for (const char* s :
       {"", " ", "+", "-", "abc", "1a", "a1", "1 2", "1.0", "1e3", "0x10", "9223372036854775808",
        "-9223372036854775809", "++1", "+-1", "--1", "1_000"}) {
    EXPECT_EQ(ParseInt64(s), std::nullopt) << '"' << s << '"';
  }
}

TEST(StringsTest, ParseDoubleAccepts) {
  EXPECT_EQ(ParseDouble("0"), 0.0);
  EXPECT_EQ(ParseDouble("1.5"), 1.5);
  EXPECT_EQ(ParseDouble("-2.25"), -2.25);
  EXPECT_EQ(ParseDouble("+3"), 3.0);
  EXPECT_EQ(ParseDouble(" 1e3 "), 1000.0);
  EXPECT_EQ(ParseDouble(".5"), 0.5);
  EXPECT_EQ(ParseDouble("5."), 5.0);
  EXPECT_EQ(ParseDouble("1E-4"), 1e-4);
}

TEST(StringsTest, ParseDoubleSpecialValues) {
  std::optional<double> inf = ParseDouble("inf");
  ASSERT_TRUE(inf.has_value());
  EXPECT_TRUE(std::isinf(*inf));
  std::optional<double> nan = ParseDouble("nan");
  ASSERT_TRUE(nan.has_value());
  EXPECT_TRUE(std::isnan(*nan));
}

TEST(StringsTest, ParseDoubleRejects) {
  for (const char* s : {"", " ", "+", "-", "abc", "1.5x", "1,5", "1 5", "0x1p3", "++1", "+-1",
                        "--1", "1e", "1e400"}) {
    EXPECT_EQ(ParseDouble(s), std::nullopt) << '"' << s << '"';
  }
}

TEST(StringsTest, ParseBool) {
  EXPECT_EQ(ParseBool("true"), true);
  EXPECT_EQ(ParseBool("TRUE"), true);
  EXPECT_EQ(ParseBool(" True "), true);
  EXPECT_EQ(ParseBool("false"), false);
  EXPECT_EQ(ParseBool("FaLsE"), false);
  for (const char* s : {"", "1", "0", "yes", "no", "on", "off", "t", "f", "truee", "tru e"}) {
    EXPECT_EQ(ParseBool(s), std::nullopt) << '"' << s << '"';
  }
}

TEST(StringsTest, PercentDecode) {
  EXPECT_EQ(PercentDecode("", false), "");
  EXPECT_EQ(PercentDecode("plain", false), "plain");
  EXPECT_EQ(PercentDecode("name%5B%5D", false), "name[]");
  EXPECT_EQ(PercentDecode("name%5b%5d", false), "name[]");
  EXPECT_EQ(PercentDecode("%41%42%43", false), "ABC");
  EXPECT_EQ(PercentDecode("a%20b", false), "a b");
  EXPECT_EQ(PercentDecode("caf%C3%A9", false), "caf\xC3\xA9");
  EXPECT_EQ(PercentDecode("%00", false), std::string(1, '\0'));
}

TEST(StringsTest, PercentDecodePlus) {
  EXPECT_EQ(PercentDecode("a+b", true), "a b");
  EXPECT_EQ(PercentDecode("a+b", false), "a+b");
  EXPECT_EQ(PercentDecode("a%2Bb", true), "a+b");
}

TEST(StringsTest, PercentDecodeKeepsMalformedEscapes) {
  EXPECT_EQ(PercentDecode("%", false), "%");
  EXPECT_EQ(PercentDecode("%4", false), "%4");
  EXPECT_EQ(PercentDecode("a%", false), "a%");
  EXPECT_EQ(PercentDecode("%zz", false), "%zz");
  EXPECT_EQ(PercentDecode("%4g", false), "%4g");
  EXPECT_EQ(PercentDecode("100%", false), "100%");
  EXPECT_EQ(PercentDecode("%%41", false), "%A");
  EXPECT_EQ(PercentDecode("%+1", true), "% 1");
}

TEST(StringsTest, PercentDecodeDecodesOnce) { EXPECT_EQ(PercentDecode("%2541", false), "%41"); }

TEST(StringsTest, LocalHostnameIsNotEmpty) {
  std::string h = LocalHostname();
  EXPECT_FALSE(h.empty());
  EXPECT_EQ(h.find('\0'), std::string::npos);
}

}  // namespace
}  // namespace tserve

namespace tserve {
namespace {

TEST(GsonHtmlSafeTest, EscapesAsGsonDoes) {
  EXPECT_EQ(GsonHtmlSafe(R"({"m": "a<b>&c='d'"})"),
            R"({"m": "a\u003cb\u003e\u0026c\u003d\u0027d\u0027"})");
  EXPECT_EQ(GsonHtmlSafe("\"\xE2\x80\xA8\xE2\x80\xA9\""), "\"\\u2028\\u2029\"");
  EXPECT_EQ(GsonHtmlSafe("{\n  \"k\": 1\n}"), "{\n  \"k\": 1\n}");
}

}  // namespace
}  // namespace tserve
