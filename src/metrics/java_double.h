#pragma once

#include <string>

namespace tserve::metrics {

// Appends v as TorchServe's Java Prometheus client writes it: "+Inf", "-Inf", "NaN", else
// Java's Double.toString — the shortest digits that read back to the same double, as a
// plain decimal with at least one fractional digit when 1e-3 <= |v| < 1e7 ("8.0",
// "290371.129", "0.001"), otherwise "d.dddE<n>" ("1.2345678E7", "1.0E-4"). Zero is "0.0"
// or "-0.0". Pure and allocation-free beyond the append.
void AppendJavaDouble(double v, std::string* out);
std::string JavaDouble(double v);

}  // namespace tserve::metrics
