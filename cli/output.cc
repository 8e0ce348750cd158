#include "cli/output.h"

#include <algorithm>

namespace outpost::cli {

std::string cell(const nlohmann::json& value) {
  if (value.is_null()) return "-";
  if (value.is_string()) {
    const std::string text = value.get<std::string>();
    return text.empty() ? "-" : text;
  }
  return value.dump();
}

void print_table(std::ostream& out, const std::vector<std::string>& headers,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths(headers.size());
  for (size_t i = 0; i < headers.size(); ++i) widths[i] = headers[i].size();
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  const auto line = [&](const std::vector<std::string>& values) {
    std::string text;
    for (size_t i = 0; i < widths.size(); ++i) {
      const std::string value = i < values.size() ? values[i] : "";
      text += value;
      if (i + 1 < widths.size()) text += std::string(widths[i] - value.size() + 2, ' ');
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out << text << "\n";
  };
  line(headers);
  for (const auto& row : rows) line(row);
  if (rows.empty()) out << "(none)\n";
}

void print_fields(std::ostream& out, const nlohmann::json& object) {
  size_t width = 0;
  for (const auto& item : object.items()) width = std::max(width, item.key().size());
  for (const auto& item : object.items()) {
    out << item.key() << ":" << std::string(width - item.key().size() + 1, ' ')
        << cell(item.value()) << "\n";
  }
}

}  // namespace outpost::cli
