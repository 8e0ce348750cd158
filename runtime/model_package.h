// Opening a model package (docs/models.md, "Package"): a folder with config.yaml and the model
// file it names. The file's size and sha256 are always measured, and checked against every
// expectation given: config.yaml's checkpoints.sha256/size and the caller's (the agent passes
// the artifact hashes the control plane assigned). A mismatch is data_loss with both values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/result.h"
#include "runtime/model.h"

namespace outpost::runtime {

struct PackageExpectations {
  std::optional<std::string> sha256;
  std::optional<uint64_t> size;
};

inline constexpr size_t kMaxConfigBytes = size_t{1} << 20;

Result<ModelPackage> open_model_package(const std::string& dir,
                                        const PackageExpectations& expect = {});

}  // namespace outpost::runtime
