#include "config/properties.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace tserve {
namespace {

using Pairs = std::vector<std::pair<std::string, std::string>>;

// Parses text that must be valid and returns its key/value pairs in order. Expected values
// of the syntax tests were checked against Java 17's java.util.Properties.load.
Pairs Parse(std::string_view text) {
  StatusOr<std::vector<Property>> r = ParseProperties(text);
  EXPECT_TRUE(r.ok()) << r.status().message();
  Pairs out;
  if (!r.ok()) return out;
  for (const Property& p : *r) out.emplace_back(p.key, p.value);
  return out;
}

std::vector<int> Lines(std::string_view text) {
  StatusOr<std::vector<Property>> r = ParseProperties(text);
  EXPECT_TRUE(r.ok()) << r.status().message();
  std::vector<int> out;
  if (!r.ok()) return out;
  for (const Property& p : *r) out.push_back(p.line);
  return out;
}

TEST(PropertiesTest, EmptyTextHasNoProperties) {
  EXPECT_EQ(Parse(""), Pairs{});
  EXPECT_EQ(Parse("\n\n   \n\t\f\r\n"), Pairs{});
}

TEST(PropertiesTest, ThreeSeparators) {
  EXPECT_EQ(Parse("a=1\nb:2\nc 3\nd\t4\ne\f5\n"),
            (Pairs{{"a", "1"}, {"b", "2"}, {"c", "3"}, {"d", "4"}, {"e", "5"}}));
}

TEST(PropertiesTest, BlanksAroundSeparatorAreDropped) {
  EXPECT_EQ(Parse("  a  =  1"), (Pairs{{"a", "1"}}));
  EXPECT_EQ(Parse("\t\fb :\t2"), (Pairs{{"b", "2"}}));
  EXPECT_EQ(Parse("c   3"), (Pairs{{"c", "3"}}));
}

TEST(PropertiesTest, ValueKeepsTrailingBlanksAsJavaDoes) {
  EXPECT_EQ(Parse("a=1  \t\nb=x y z \n"), (Pairs{{"a", "1  \t"}, {"b", "x y z "}}));
}

TEST(PropertiesTest, OnlyTheFirstSeparatorCounts) {
  EXPECT_EQ(Parse("a = = b"), (Pairs{{"a", "= b"}}));
  EXPECT_EQ(Parse("a==b"), (Pairs{{"a", "=b"}}));
  EXPECT_EQ(Parse("a b = c"), (Pairs{{"a", "b = c"}}));
  EXPECT_EQ(Parse("a :b"), (Pairs{{"a", "b"}}));
  EXPECT_EQ(Parse("a : : b"), (Pairs{{"a", ": b"}}));
  EXPECT_EQ(Parse("url=http://x:8080/a=b"), (Pairs{{"url", "http://x:8080/a=b"}}));
}

TEST(PropertiesTest, KeyWithoutValueAndValueWithoutKey) {
  EXPECT_EQ(Parse("lonely\nspaced   \n=v\n:w"),
            (Pairs{{"lonely", ""}, {"spaced", ""}, {"", "v"}, {"", "w"}}));
}

TEST(PropertiesTest, CommentLines) {
  EXPECT_EQ(Parse("# hash\n! bang\n   # indented\n\t!tab\na=1 # not a comment\n"),
            (Pairs{{"a", "1 # not a comment"}}));
}

TEST(PropertiesTest, CommentLineDoesNotContinue) {
  EXPECT_EQ(Parse("# comment \\\na=1\n! other \\\nb=2"), (Pairs{{"a", "1"}, {"b", "2"}}));
}

TEST(PropertiesTest, ContinuationDropsNextLineLeadingBlanks) {
  EXPECT_EQ(Parse("a=one\\\n    two\\\n\t\fthree\nb=2"), (Pairs{{"a", "onetwothree"}, {"b", "2"}}));
  EXPECT_EQ(Parse("a=one \\\n   two"), (Pairs{{"a", "one two"}}));
}

TEST(PropertiesTest, ContinuationInsideKey) {
  EXPECT_EQ(Parse("long\\\n  key=v"), (Pairs{{"longkey", "v"}}));
}

TEST(PropertiesTest, EvenBackslashesDoNotContinue) {
  EXPECT_EQ(Parse("a=x\\\\\nb=y"), (Pairs{{"a", "x\\"}, {"b", "y"}}));
  EXPECT_EQ(Parse("a=x\\\\\\\ny"), (Pairs{{"a", "x\\y"}}));
}

TEST(PropertiesTest, ContinuationWithCrLfAndCr) {
  EXPECT_EQ(Parse("a=1\\\r\n  2\r\nb=3\\\r  4\rc=5"),
            (Pairs{{"a", "12"}, {"b", "34"}, {"c", "5"}}));
}

TEST(PropertiesTest, EmptyOrBlankLineEndsContinuation) {
  EXPECT_EQ(Parse("a=1\\\n\nb=2"), (Pairs{{"a", "1"}, {"b", "2"}}));
  EXPECT_EQ(Parse("a=1\\\n   \nb=2"), (Pairs{{"a", "1"}, {"b", "2"}}));
}

TEST(PropertiesTest, ContinuedLineIsNotAComment) {
  EXPECT_EQ(Parse("a=1\\\n  # two"), (Pairs{{"a", "1# two"}}));
}

TEST(PropertiesTest, LoneBackslashLineThenCommentIsAComment) {
  // Java 17: the logical line is still empty, so '#' starts a comment.
  EXPECT_EQ(Parse("\\\n# comment\na=1"), (Pairs{{"a", "1"}}));
}

TEST(PropertiesTest, BackslashAtEndOfFile) {
  EXPECT_EQ(Parse("a=1\\"), (Pairs{{"a", "1"}}));
  EXPECT_EQ(Parse("a=1\\\n"), (Pairs{{"a", "1"}}));
  EXPECT_EQ(Parse("a=1\\\n   "), (Pairs{{"a", "1"}}));
  // A line holding only "\" before the end yields an empty key, as in Java.
  EXPECT_EQ(Parse("a=1\n\\"), (Pairs{{"a", "1"}, {"", ""}}));
}

TEST(PropertiesTest, CharacterEscapes) {
  EXPECT_EQ(Parse("a=\\t\\n\\r\\f\\\\"), (Pairs{{"a", "\t\n\r\f\\"}}));
  // Any other escaped character is itself (Java has no \b).
  EXPECT_EQ(Parse("a=\\b\\z\\\"\\'"), (Pairs{{"a", "bz\"'"}}));
}

TEST(PropertiesTest, EscapedSeparatorsAndBlanksInKey) {
  EXPECT_EQ(Parse("a\\=b=c"), (Pairs{{"a=b", "c"}}));
  EXPECT_EQ(Parse("a\\:b:c"), (Pairs{{"a:b", "c"}}));
  EXPECT_EQ(Parse("key\\ with\\ spaces = v"), (Pairs{{"key with spaces", "v"}}));
  EXPECT_EQ(Parse("\\#not_comment=1\n\\!x=2"), (Pairs{{"#not_comment", "1"}, {"!x", "2"}}));
  EXPECT_EQ(Parse("tab\\\tkey=v"), (Pairs{{"tab\tkey", "v"}}));
}

TEST(PropertiesTest, EscapedLeadingBlankInValueIsKept) {
  EXPECT_EQ(Parse("a=\\  x"), (Pairs{{"a", "  x"}}));
}

TEST(PropertiesTest, UnicodeEscapesBecomeUtf8) {
  EXPECT_EQ(Parse("a=\\u0041\\u00e9\\u00C9\\u4e2d"),
            (Pairs{{"a", "A\xC3\xA9\xC3\x89\xE4\xB8\xAD"}}));
  // A surrogate pair is one character; a lone surrogate is U+FFFD.
  EXPECT_EQ(Parse("a=\\uD83D\\uDE00"), (Pairs{{"a", "\xF0\x9F\x98\x80"}}));
  EXPECT_EQ(Parse("a=\\uD83Dx\\uDE00"), (Pairs{{"a", "\xEF\xBF\xBDx\xEF\xBF\xBD"}}));
}

TEST(PropertiesTest, UnicodeEscapeIsNotASeparatorOrContinuation) {
  EXPECT_EQ(Parse("a\\u003db=c"), (Pairs{{"a=b", "c"}}));
  EXPECT_EQ(Parse("a\\u0020b c"), (Pairs{{"a b", "c"}}));
  EXPECT_EQ(Parse("a=x\\u005c\nb=y"), (Pairs{{"a", "x\\"}, {"b", "y"}}));
}

TEST(PropertiesTest, MalformedUnicodeEscapeIsAnErrorNamingTheLine) {
  StatusOr<std::vector<Property>> r = ParseProperties("a=1\n# c\nb=x\\u12g4y\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "malformed \\uXXXX escape \"\\u12g4\" on line 3");

  r = ParseProperties("a=\\u12");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "malformed \\uXXXX escape \"\\u12\" on line 1");

  r = ParseProperties("bad\\uZZZZkey=1");
  ASSERT_FALSE(r.ok());
}

TEST(PropertiesTest, EscapedBackslashBeforeUIsNotAUnicodeEscape) {
  EXPECT_EQ(Parse("a=\\\\u0041"), (Pairs{{"a", "\\u0041"}}));
}

TEST(PropertiesTest, CrLfAndCrLineEnds) {
  EXPECT_EQ(Parse("a=1\r\nb=2\r\n"), (Pairs{{"a", "1"}, {"b", "2"}}));
  EXPECT_EQ(Parse("a=1\rb=2\r"), (Pairs{{"a", "1"}, {"b", "2"}}));
  EXPECT_EQ(Parse("# c\r\n\r\na=1\r\n"), (Pairs{{"a", "1"}}));
}

TEST(PropertiesTest, VerticalTabIsNotABlank) { EXPECT_EQ(Parse("\va=b"), (Pairs{{"\va", "b"}})); }

TEST(PropertiesTest, DuplicatesAreKeptInOrder) {
  EXPECT_EQ(Parse("a=1\nb=2\na=3"), (Pairs{{"a", "1"}, {"b", "2"}, {"a", "3"}}));
}

TEST(PropertiesTest, Utf8BytesPassThroughAndBomIsSkipped) {
  EXPECT_EQ(Parse("\xEF\xBB\xBFname=caf\xC3\xA9"), (Pairs{{"name", "caf\xC3\xA9"}}));
}

TEST(PropertiesTest, LineNumbersAreWhereTheKeyStarts) {
  EXPECT_EQ(Lines("# c\n\na=1\r\nb=2\\\n  3\nc=4"), (std::vector<int>{3, 4, 6}));
  EXPECT_EQ(Lines("a=1\rb=2\r\rc=3"), (std::vector<int>{1, 2, 4}));
  EXPECT_EQ(Lines("\\\n\n  x=1"), (std::vector<int>{3}));
  EXPECT_EQ(Lines("   k = v"), (std::vector<int>{1}));
}

TEST(PropertiesTest, TypicalTorchServeFile) {
  const char* text =
      "# TorchServe config\n"
      "inference_address=http://0.0.0.0:8080\n"
      "management_address=http://0.0.0.0:8081\n"
      "number_of_netty_threads=32\n"
      "job_queue_size=1000\n"
      "model_store=/home/model-server/model-store\n"
      "vmargs=-XX:+UseContainerSupport -XX:MaxRAMPercentage=10.0\n"
      "allowed_urls=https://s3.amazonaws.com/.*,https://torchserve.pytorch.org/.*\n";
  Pairs p = Parse(text);
  ASSERT_EQ(p.size(), 7u);
  EXPECT_EQ(p[0],
            (std::pair<std::string, std::string>{"inference_address", "http://0.0.0.0:8080"}));
  EXPECT_EQ(p[5].second, "-XX:+UseContainerSupport -XX:MaxRAMPercentage=10.0");
  EXPECT_EQ(p[6].second, "https://s3.amazonaws.com/.*,https://torchserve.pytorch.org/.*");
}

// --- $$VAR$$ -----------------------------------------------------------------------------

const std::map<std::string, std::string> kEnv = {
    {"HOME", "/home/me"}, {"A", "x"}, {"PORT", "9000"}, {"EMPTY", ""}, {"DOLLARS", "$$A$$"}};

std::string Expand(std::string_view v) {
  StatusOr<std::string> r = ExpandEnvReferences(v, kEnv);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? *r : "<error>";
}

TEST(ExpandEnvReferencesTest, ReplacesEveryReference) {
  EXPECT_EQ(Expand("$$HOME$$/models"), "/home/me/models");
  EXPECT_EQ(Expand("http://127.0.0.1:$$PORT$$"), "http://127.0.0.1:9000");
  EXPECT_EQ(Expand("$$A$$-$$A$$-$$PORT$$"), "x-x-9000");
  EXPECT_EQ(Expand("[$$EMPTY$$]"), "[]");
}

TEST(ExpandEnvReferencesTest, TextWithoutReferencesIsUnchanged) {
  EXPECT_EQ(Expand(""), "");
  EXPECT_EQ(Expand("plain"), "plain");
  EXPECT_EQ(Expand("a$b"), "a$b");
  EXPECT_EQ(Expand("$$"), "$$");
  EXPECT_EQ(Expand("$$$$"), "$$$$");
  EXPECT_EQ(Expand("$$HOME"), "$$HOME");
  EXPECT_EQ(Expand("HOME$$"), "HOME$$");
}

TEST(ExpandEnvReferencesTest, LeftmostMatchWithNameWithoutDollar) {
  EXPECT_EQ(Expand("$$$A$$"), "$x");
  EXPECT_EQ(Expand("$$A$$$"), "x$");
}

TEST(ExpandEnvReferencesTest, SubstitutedTextIsNotExpandedAgain) {
  EXPECT_EQ(Expand("$$DOLLARS$$"), "$$A$$");
}

TEST(ExpandEnvReferencesTest, UnsetVariableIsAnErrorNamingIt) {
  StatusOr<std::string> r = ExpandEnvReferences("$$HOME$$/$$NOPE$$", kEnv);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "environment variable NOPE is not set");
}

}  // namespace
}  // namespace tserve
