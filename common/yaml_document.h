// Strict YAML reading, once for every part: yaml-cpp's parse of one document turned into a JSON
// value (nlohmann/json), typed by the YAML 1.2 core schema, with yaml-cpp's exceptions turned
// into errors that give the line and column. Parts then read the JSON with their own checks;
// unknown_key_hint() is what they say about a key they do not know.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace outpost {

inline constexpr int kMaxYamlDepth = 64;
inline constexpr size_t kMaxYamlNodes = 100'000;

enum class YamlScalars {
  kCoreSchema,  // typed as below
  kStrings,     // every scalar a string as written (files whose values are all text)
};

// One YAML document as JSON. Under kCoreSchema, plain scalars that read as null, booleans, integers
// or finite floats become those; quoted (or !!str) scalars stay strings ("8" stays a string); an
// empty document is null. invalid_argument for: text that is not UTF-8, a syntax error ("malformed
// YAML at line L, column C: ..."), several documents, nesting deeper than kMaxYamlDepth, more
// than kMaxYamlNodes nodes (aliases are expanded), keys that are not scalars, repeated keys.
Result<nlohmann::json> parse_yaml(std::string_view text,
                                  YamlScalars scalars = YamlScalars::kCoreSchema);

// The file's text through parse_yaml; invalid_argument "cannot read PATH: why" when it cannot
// be read.
Result<nlohmann::json> load_yaml_file(const std::string& path,
                                      YamlScalars scalars = YamlScalars::kCoreSchema);

// The key of `known` nearest to `key` (counting characters inserted, deleted or replaced) when
// it is at most 2 edits away and fewer edits than its own length; the first of equals wins.
std::optional<std::string> closest_key(std::string_view key,
                                       const std::vector<std::string_view>& known);

// What to say about an unknown key: "did you mean batching?" when closest_key finds one, else
// "known here: a, b, c" (`known` in its order).
std::string unknown_key_hint(std::string_view key, const std::vector<std::string_view>& known);

}  // namespace outpost
