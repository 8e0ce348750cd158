#include "controlplane/quantity.h"

#include <cmath>
#include <cstdlib>
#include <string>
#include <utility>

#include "controlplane/ids.h"

namespace outpost::control {

Result<double> parse_quantity(const nlohmann::json& value, std::string_view field) {
  if (value.is_number()) {
    const double number = value.get<double>();
    if (!std::isfinite(number) || number < 0) return field_error(field, "must be 0 or more");
    return number;
  }
  if (!value.is_string()) {
    return field_error(field, "must be a quantity such as \"8\", \"500m\" or \"16Gi\"");
  }
  const std::string text = value.get<std::string>();
  static const std::pair<std::string_view, double> suffixes[] = {
      {"Ki", 1024.0},
      {"Mi", 1024.0 * 1024},
      {"Gi", 1024.0 * 1024 * 1024},
      {"Ti", 1024.0 * 1024 * 1024 * 1024},
      {"Pi", 1024.0 * 1024 * 1024 * 1024 * 1024},
      {"k", 1e3},
      {"K", 1e3},
      {"M", 1e6},
      {"G", 1e9},
      {"T", 1e12},
      {"P", 1e15},
      {"m", 1e-3},
  };
  std::string_view number_part = text;
  double multiplier = 1;
  for (const auto& [suffix, factor] : suffixes) {
    if (number_part.size() > suffix.size() &&
        number_part.substr(number_part.size() - suffix.size()) == suffix) {
      number_part.remove_suffix(suffix.size());
      multiplier = factor;
      break;
    }
  }
  const std::string digits(number_part);
  if (digits.empty() || digits.find_first_not_of("0123456789.") != std::string::npos) {
    return field_error(field,
                       "'" + text + "' is not a quantity (examples: \"8\", \"500m\", \"16Gi\")");
  }
  char* end = nullptr;
  const double number = std::strtod(digits.c_str(), &end);
  if (end != digits.c_str() + digits.size() || !std::isfinite(number)) {
    return field_error(field,
                       "'" + text + "' is not a quantity (examples: \"8\", \"500m\", \"16Gi\")");
  }
  return number * multiplier;
}

}  // namespace outpost::control
