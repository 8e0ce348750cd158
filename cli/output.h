// What the CLI prints: aligned tables for people (the default), the API's JSON for scripts
// (`-o json`), and key: value listings for single resources.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace outpost::cli {

enum class OutputFormat { kTable, kJson };

void print_table(std::ostream& out, const std::vector<std::string>& headers,
                 const std::vector<std::vector<std::string>>& rows);

// Top-level fields one per line; nested values as compact JSON.
void print_fields(std::ostream& out, const nlohmann::json& object);

// A JSON value as a table cell: strings bare, null as "-", the rest compact JSON.
std::string cell(const nlohmann::json& value);

}  // namespace outpost::cli
