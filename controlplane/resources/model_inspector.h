// Reads a model package's API by running `outpost-worker inspect PACKAGE_DIR`: the control plane
// cannot link libtorch, the worker can. The worker prints one JSON object
//   {"model_id", "file", "file_sha256", "file_size", "config",
//    "methods": [{"name", "kind": "unary|generate|stream", "inputs": [...], "returns"}]}
// or exits non-zero with the reason on stderr, which becomes the upload's error message. The
// subprocess runs under a timeout and its output is bounded.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace outpost::control {

struct InspectResult {
  std::string model_id;
  std::string file;
  std::string file_sha256;
  uint64_t file_size = 0;
  nlohmann::json config;
  nlohmann::json methods;             // verbatim: stored as the version's method signatures
  std::vector<std::string> warnings;  // what the worker kept but did not use (unknown keys)
};

// Checks the worker's JSON; invalid_argument naming what is wrong.
Result<InspectResult> parse_inspect_output(std::string_view text);

class ModelInspector {
 public:
  ModelInspector(std::string worker_path, std::chrono::milliseconds timeout)
      : worker_path_(std::move(worker_path)), timeout_(timeout) {}

  // Blocking: call it off the event loop.
  Result<InspectResult> inspect(const std::string& package_dir) const;

  const std::string& worker_path() const { return worker_path_; }

 private:
  std::string worker_path_;
  std::chrono::milliseconds timeout_;
};

}  // namespace outpost::control
