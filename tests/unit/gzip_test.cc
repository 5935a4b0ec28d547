#include "api/gzip.h"

#include <gtest/gtest.h>

#include <string>

namespace tserve::api {
namespace {

// About 1 MB of metrics-like text.
std::string MegabyteOfText() {
  std::string text;
  for (int i = 0; text.size() < (1u << 20); ++i) {
    text += "ts_inference_requests_total{model_name=\"m" + std::to_string(i % 97) +
            "\",model_version=\"default\",hostname=\"host1\",} " + std::to_string(i) + ".0\n";
  }
  return text;
}

std::string RoundTrip(const std::string& in, int level = 1) {
  auto zipped = Gzip(in, level);
  EXPECT_TRUE(zipped.ok()) << zipped.status().message();
  if (!zipped.ok()) return "<gzip failed>";
  auto plain = Gunzip(*zipped);
  EXPECT_TRUE(plain.ok()) << plain.status().message();
  if (!plain.ok()) return "<gunzip failed>";
  return *plain;
}

TEST(GzipTest, RoundTripEmpty) {
  auto zipped = Gzip("");
  ASSERT_TRUE(zipped.ok());
  EXPECT_FALSE(zipped->empty());  // header and trailer even for no data
  auto plain = Gunzip(*zipped);
  ASSERT_TRUE(plain.ok()) << plain.status().message();
  EXPECT_EQ(*plain, "");
}

TEST(GzipTest, RoundTripSmall) {
  EXPECT_EQ(RoundTrip("a"), "a");
  EXPECT_EQ(RoundTrip("hello, world\n"), "hello, world\n");
  std::string binary("\0\x01\xff\x80 bytes\0", 10);
  EXPECT_EQ(RoundTrip(binary), binary);
}

TEST(GzipTest, RoundTripMegabyte) {
  const std::string text = MegabyteOfText();
  ASSERT_GE(text.size(), 1u << 20);
  auto zipped = Gzip(text);
  ASSERT_TRUE(zipped.ok());
  EXPECT_LT(zipped->size(), text.size() / 4);  // repetitive text compresses well
  auto plain = Gunzip(*zipped);
  ASSERT_TRUE(plain.ok()) << plain.status().message();
  EXPECT_EQ(*plain, text);
}

TEST(GzipTest, RoundTripEveryLevel) {
  const std::string text = MegabyteOfText().substr(0, 100000);
  for (int level = 0; level <= 9; ++level) {
    EXPECT_EQ(RoundTrip(text, level), text) << "level " << level;
  }
}

TEST(GzipTest, IncompressibleInputRoundTrips) {
  // Pseudo-random bytes: the output is larger than the input, within deflateBound.
  std::string noise;
  uint32_t x = 12345;
  for (int i = 0; i < 200000; ++i) {
    x = x * 1103515245u + 12345u;
    noise.push_back(static_cast<char>(x >> 24));
  }
  EXPECT_EQ(RoundTrip(noise), noise);
}

TEST(GzipTest, WritesGzipFormat) {
  auto zipped = Gzip("payload");
  ASSERT_TRUE(zipped.ok());
  ASSERT_GE(zipped->size(), 18u);  // 10-byte header, 8-byte trailer
  EXPECT_EQ(static_cast<unsigned char>((*zipped)[0]), 0x1f);
  EXPECT_EQ(static_cast<unsigned char>((*zipped)[1]), 0x8b);
  EXPECT_EQ(static_cast<unsigned char>((*zipped)[2]), 8);  // deflate
  // The trailer ends with the input size, little-endian.
  EXPECT_EQ(static_cast<unsigned char>((*zipped)[zipped->size() - 4]), 7);
}

TEST(GzipTest, GunzipOfEmptyInputIsAnError) { EXPECT_FALSE(Gunzip("").ok()); }

TEST(GzipTest, GunzipOfGarbageIsAnError) {
  EXPECT_FALSE(Gunzip("this is not gzip at all").ok());
  EXPECT_FALSE(Gunzip(std::string(64, '\0')).ok());
  EXPECT_FALSE(Gunzip("\x1f\x8b").ok());
  // A gzip header followed by garbage.
  EXPECT_FALSE(Gunzip(std::string("\x1f\x8b\x08\0\0\0\0\0\0\x03garbagegarbage", 24)).ok());
}

TEST(GzipTest, GunzipOfTruncatedStreamIsAnError) {
  const std::string text = MegabyteOfText();
  auto zipped = Gzip(text);
  ASSERT_TRUE(zipped.ok());
  for (size_t keep :
       {size_t{1}, size_t{10}, zipped->size() / 2, zipped->size() - 8, zipped->size() - 1}) {
    auto plain = Gunzip(std::string_view(*zipped).substr(0, keep));
    EXPECT_FALSE(plain.ok()) << "kept " << keep << " of " << zipped->size();
  }
  auto small = Gzip("small");
  ASSERT_TRUE(small.ok());
  EXPECT_FALSE(Gunzip(std::string_view(*small).substr(0, small->size() - 1)).ok());
}

TEST(GzipTest, GunzipDetectsCorruptChecksum) {
  auto zipped = Gzip("checksummed payload");
  ASSERT_TRUE(zipped.ok());
  std::string bad = *zipped;
  bad[bad.size() - 6] ^= 0x01;  // inside the CRC-32 of the trailer
  EXPECT_FALSE(Gunzip(bad).ok());
}

}  // namespace
}  // namespace tserve::api
