#include "metrics/java_double.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <string_view>

namespace tserve::metrics {

void AppendJavaDouble(double v, std::string* out) {
  if (std::isnan(v)) {
    out->append("NaN");
    return;
  }
  if (std::isinf(v)) {
    out->append(v > 0 ? "+Inf" : "-Inf");
    return;
  }
  if (v == 0.0) {
    out->append(std::signbit(v) ? "-0.0" : "0.0");
    return;
  }
  // Whole numbers below 1e7 (counts, most gauges): "<integer>.0" without the general path.
  if (v > -1e7 && v < 1e7 && v == static_cast<double>(static_cast<int32_t>(v))) {
    char ibuf[16];
    auto r = std::to_chars(ibuf, ibuf + sizeof(ibuf), static_cast<int32_t>(v));
    out->append(ibuf, static_cast<size_t>(r.ptr - ibuf));
    out->append(".0");
    return;
  }
  // Shortest round-trip digits in scientific form, e.g. "2.90371129e+05".
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  std::string_view sci(buf, static_cast<size_t>(res.ptr - buf));
  bool negative = false;
  if (sci.front() == '-') {
    negative = true;
    sci.remove_prefix(1);
  }
  size_t e_pos = sci.find('e');
  std::string_view mantissa = sci.substr(0, e_pos);
  std::string_view exp_text = sci.substr(e_pos + 1);
  if (!exp_text.empty() && exp_text.front() == '+') exp_text.remove_prefix(1);
  int exponent = 0;
  std::from_chars(exp_text.data(), exp_text.data() + exp_text.size(), exponent);
  // Digits without the decimal point.
  char digits[32];
  size_t nd = 0;
  for (char c : mantissa) {
    if (c != '.') digits[nd++] = c;
  }
  if (negative) out->push_back('-');
  const double a = std::fabs(v);
  if (a >= 1e-3 && a < 1e7) {
    if (exponent >= 0) {
      // Integer part: first exponent+1 digits (padded with zeros), then the fraction.
      size_t int_len = static_cast<size_t>(exponent) + 1;
      for (size_t i = 0; i < int_len; ++i) out->push_back(i < nd ? digits[i] : '0');
      out->push_back('.');
      if (nd > int_len) {
        out->append(digits + int_len, nd - int_len);
      } else {
        out->push_back('0');
      }
    } else {
      out->append("0.");
      for (int i = 0; i < -exponent - 1; ++i) out->push_back('0');
      out->append(digits, nd);
    }
    return;
  }
  out->push_back(digits[0]);
  out->push_back('.');
  if (nd > 1) {
    out->append(digits + 1, nd - 1);
  } else {
    out->push_back('0');
  }
  out->push_back('E');
  char exp_buf[8];
  auto er = std::to_chars(exp_buf, exp_buf + sizeof(exp_buf), exponent);
  out->append(exp_buf, static_cast<size_t>(er.ptr - exp_buf));
}

std::string JavaDouble(double v) {
  std::string s;
  AppendJavaDouble(v, &s);
  return s;
}

}  // namespace tserve::metrics
