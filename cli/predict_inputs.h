// The inputs of a predict from the command line, in the `Value` encoding of
// docs/control-protocol.md: `--text`, `--file` and `--url` give the method's first input (as
// Clarifai's CLI does), `-i NAME=VALUE` any input (VALUE read as JSON when it parses, else as a
// string), `--inputs JSON` all of them at once.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace outpost::cli {

struct InputFlags {
  std::vector<std::string> text;  // stream: one item each
  std::string file;
  std::string url;
  std::string inputs_json;
  std::vector<std::string> named;  // NAME=VALUE
};

// The method to call: `requested`, else the one named like the shape, else the only method of
// that kind. `kind` is unary, generate or stream.
Result<nlohmann::json> pick_method(const nlohmann::json& methods, const std::string& requested,
                                   const std::string& kind);

// One call's inputs (unary, generate).
Result<nlohmann::json> build_inputs(const InputFlags& flags, const nlohmann::json& method);

// A stream's items: --inputs as a JSON array of input objects, or one item per --text.
// Empty when neither is given (the CLI then reads items from stdin, one per line).
Result<std::vector<nlohmann::json>> build_stream_items(const InputFlags& flags,
                                                       const nlohmann::json& method);

// The name of the method's first input.
Result<std::string> first_input(const nlohmann::json& method);

}  // namespace outpost::cli
