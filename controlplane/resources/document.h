// Parsing untrusted request bodies and config files into one JSON tree. Resource configs come in
// Clarifai's YAML shapes (from `outpost cc create --config F`) or as JSON (from curl), and both
// land in the same nlohmann::json so that one validator serves them (YAML through
// common/yaml_document's parse_yaml). Both parsers refuse input
// that would cost the process more than the request is worth: deep nesting (a recursive
// destructor or printer could run out of stack) and YAML aliases that expand exponentially.
#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

#include "common/json_reader.h"  // parse_json
#include "common/result.h"
#include "common/yaml_document.h"  // parse_yaml: YAML bodies and files, for every part

namespace outpost::control {

static_assert(kMaxJsonDepth == kMaxYamlDepth, "JSON and YAML bodies nest equally deep");

// A body whose Content-Type names YAML (application/yaml, application/x-yaml, text/yaml) is read
// as YAML, anything else as JSON. The root must be an object.
Result<nlohmann::json> parse_body_object(std::string_view body, std::string_view content_type);

}  // namespace outpost::control
