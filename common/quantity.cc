#include "common/quantity.h"

#include <cmath>
#include <string>

namespace outpost {
namespace {

// Splits "12.5Gi" into 12.5 and "Gi"; refuses anything else.
Result<std::pair<double, std::string_view>> split(std::string_view text, std::string_view field) {
  const auto bad = [&] {
    return invalid_argument(std::string(field) + ": '" + std::string(text) +
                            "' is not a quantity (examples: 16Gi, 512Mi, 8, 500m)");
  };
  size_t i = 0;
  bool digits = false;
  bool dot = false;
  while (i < text.size() && ((text[i] >= '0' && text[i] <= '9') || (text[i] == '.' && !dot))) {
    if (text[i] == '.') {
      dot = true;
    } else {
      digits = true;
    }
    ++i;
  }
  if (!digits || i > 24) return bad();
  const double value = std::stod(std::string(text.substr(0, i)));
  if (!std::isfinite(value) || value < 0) return bad();
  return std::make_pair(value, text.substr(i));
}

}  // namespace

Result<uint64_t> parse_memory_quantity(std::string_view text, std::string_view field) {
  OUTPOST_ASSIGN_OR_RETURN(auto parts, split(text, field));
  const auto [value, suffix] = parts;
  double scale = 0;
  if (suffix.empty()) {
    scale = 1;
  } else if (suffix == "Ki") {
    scale = 1024.0;
  } else if (suffix == "Mi") {
    scale = 1024.0 * 1024;
  } else if (suffix == "Gi") {
    scale = 1024.0 * 1024 * 1024;
  } else if (suffix == "Ti") {
    scale = 1024.0 * 1024 * 1024 * 1024;
  } else if (suffix == "Pi") {
    scale = 1024.0 * 1024 * 1024 * 1024 * 1024;
  } else if (suffix == "k" || suffix == "K") {
    scale = 1e3;
  } else if (suffix == "M") {
    scale = 1e6;
  } else if (suffix == "G") {
    scale = 1e9;
  } else if (suffix == "T") {
    scale = 1e12;
  } else if (suffix == "P") {
    scale = 1e15;
  } else {
    return invalid_argument(std::string(field) + ": unknown unit '" + std::string(suffix) +
                            "' in '" + std::string(text) + "' (use Ki, Mi, Gi, Ti or k, M, G, T)");
  }
  const double bytes = value * scale;
  if (bytes > 1.8e19)
    return invalid_argument(std::string(field) + ": '" + std::string(text) + "' is too large");
  return static_cast<uint64_t>(std::llround(bytes));
}

Result<uint64_t> parse_cpu_quantity(std::string_view text, std::string_view field) {
  OUTPOST_ASSIGN_OR_RETURN(auto parts, split(text, field));
  const auto [value, suffix] = parts;
  if (suffix.empty()) return static_cast<uint64_t>(std::llround(value * 1000));
  if (suffix == "m") return static_cast<uint64_t>(std::llround(value));
  return invalid_argument(std::string(field) + ": unknown CPU unit '" + std::string(suffix) +
                          "' in '" + std::string(text) + "' (use cores like 8 or 0.5, or 500m)");
}

}  // namespace outpost
