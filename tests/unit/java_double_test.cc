#include "metrics/java_double.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace tserve::metrics {
namespace {

TEST(JavaDoubleTest, SpecialValues) {
  EXPECT_EQ(JavaDouble(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(JavaDouble(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(JavaDouble(std::nan("")), "NaN");
  EXPECT_EQ(JavaDouble(0.0), "0.0");
  EXPECT_EQ(JavaDouble(-0.0), "-0.0");
}

TEST(JavaDoubleTest, PlainDecimalRange) {
  // Values seen in TorchServe's own output (the seed document).
  EXPECT_EQ(JavaDouble(8.0), "8.0");
  EXPECT_EQ(JavaDouble(290371.129), "290371.129");
  EXPECT_EQ(JavaDouble(365.21), "365.21");
  EXPECT_EQ(JavaDouble(20.054508209228516), "20.054508209228516");
  EXPECT_EQ(JavaDouble(5829.7421875), "5829.7421875");
  EXPECT_EQ(JavaDouble(325.05113983154297), "325.05113983154297");
  EXPECT_EQ(JavaDouble(4593.0), "4593.0");
  EXPECT_EQ(JavaDouble(64.4), "64.4");
  EXPECT_EQ(JavaDouble(0.001), "0.001");
  EXPECT_EQ(JavaDouble(0.005), "0.005");
  EXPECT_EQ(JavaDouble(0.1), "0.1");
  EXPECT_EQ(JavaDouble(1.0), "1.0");
  EXPECT_EQ(JavaDouble(9999999.0), "9999999.0");
  EXPECT_EQ(JavaDouble(100.0), "100.0");
  EXPECT_EQ(JavaDouble(-2.5), "-2.5");
  EXPECT_EQ(JavaDouble(123456.0), "123456.0");
}

TEST(JavaDoubleTest, ScientificOutsideRange) {
  EXPECT_EQ(JavaDouble(1.2345678E7), "1.2345678E7");
  EXPECT_EQ(JavaDouble(1.0E7), "1.0E7");
  EXPECT_EQ(JavaDouble(1.0E-4), "1.0E-4");
  EXPECT_EQ(JavaDouble(9.99E-4), "9.99E-4");
  EXPECT_EQ(JavaDouble(1.79560717857E9), "1.79560717857E9");
  EXPECT_EQ(JavaDouble(-3.0E10), "-3.0E10");
  EXPECT_EQ(JavaDouble(1.7976931348623157E308), "1.7976931348623157E308");
  EXPECT_EQ(JavaDouble(2.2250738585072014E-308), "2.2250738585072014E-308");
  EXPECT_EQ(JavaDouble(123456789012.0), "1.23456789012E11");
}

TEST(JavaDoubleTest, ShortestRoundTrip) {
  for (double v : {0.1 + 0.2, 1.0 / 3.0, 2.0 / 3.0 * 1e9, 12345.6789, 3.14159e-7}) {
    std::string s = JavaDouble(v);
    // Java writes 'E'; strtod reads it.
    EXPECT_EQ(std::strtod(s.c_str(), nullptr), v) << s;
  }
  EXPECT_EQ(JavaDouble(0.1 + 0.2), "0.30000000000000004");
}

TEST(JavaDoubleTest, AppendsToExistingText) {
  std::string s = "x ";
  AppendJavaDouble(2.0, &s);
  EXPECT_EQ(s, "x 2.0");
}

}  // namespace
}  // namespace tserve::metrics
