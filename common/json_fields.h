// Reading fields of JSON that came from another process without trusting its types:
// nlohmann::json's value() throws when a field holds another type, and an exception on an I/O
// thread would take the whole process down for one malformed message.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace outpost {

// `object[key]` when `object` is an object holding a string there; `fallback` otherwise.
inline std::string string_field_or(const nlohmann::json& object, std::string_view key,
                                   std::string fallback) {
  if (!object.is_object()) return fallback;
  const auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : fallback;
}

// `object[key]` when it holds a non-negative integer; `fallback` otherwise.
inline uint64_t uint_field_or(const nlohmann::json& object, std::string_view key,
                              uint64_t fallback) {
  if (!object.is_object()) return fallback;
  const auto it = object.find(key);
  return it != object.end() && it->is_number_unsigned() ? it->get<uint64_t>() : fallback;
}

}  // namespace outpost
