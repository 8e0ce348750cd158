// Strict reading of untrusted JSON: a depth-limited parse, and ObjectReader, which reads one
// object so that every key must be known, every value must have the expected type, and each
// error names the full path of the field at fault ("deployment.autoscale_config.max_replicas:
// must be an integer"). Used for resource configs, request bodies and the control protocol's
// messages.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace outpost {

// Nesting deeper than this is refused (a recursive destructor or printer could run out of stack).
inline constexpr int kMaxJsonDepth = 64;

// An invalid_argument error whose message starts with the field path, "deployment.id: ...",
// so that every validation error tells the user which field to change.
Error field_error(std::string_view field, std::string_view message);

// A JSON document (any value at the root). invalid_argument with the parser's position on error.
Result<nlohmann::json> parse_json(std::string_view text);

class ObjectReader {
 public:
  // invalid_argument unless `value` is an object. `path` names it in errors ("deployment").
  static Result<ObjectReader> create(const nlohmann::json& value, std::string path);

  // Refuses any key not in `known`, naming it and the nearest known key or, if none is near,
  // listing them (common/yaml_document's unknown_key_hint).
  Status only(std::initializer_list<std::string_view> known) const;

  bool has(std::string_view key) const;
  // The raw value, or nullptr when absent or null.
  const nlohmann::json* get(std::string_view key) const;
  std::string path_of(std::string_view key) const;

  Result<std::optional<std::string>> optional_string(std::string_view key) const;
  Result<std::string> required_string(std::string_view key) const;
  // Integers in [min, max]; a float with no fraction counts as an integer.
  Result<std::optional<int64_t>> optional_int(std::string_view key, int64_t min, int64_t max) const;
  Result<std::optional<bool>> optional_bool(std::string_view key) const;
  // A nested object; absent gives an empty object.
  Result<ObjectReader> object(std::string_view key) const;
  Result<ObjectReader> required_object(std::string_view key) const;

  const nlohmann::json& value() const { return *value_; }
  const std::string& path() const { return path_; }

 private:
  ObjectReader(const nlohmann::json* value, std::string path)
      : value_(value), path_(std::move(path)) {}
  const nlohmann::json* value_;
  std::string path_;
};

// The JSON type of a value in words, for errors ("a string", "an array").
std::string json_type_name(const nlohmann::json& value);

}  // namespace outpost
