// The replicas the control plane wants on this node (docs/control-protocol.md, DesiredState),
// parsed strictly from untrusted JSON: a malformed document is refused whole, with a message
// naming the field, and never half-applied.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace outpost::agent {

struct ArtifactRef {
  std::string name;  // "model.pt", "config.yaml"
  std::string sha256;
  uint64_t size = 0;
};

struct DesiredReplica {
  std::string replica_id;
  std::string deployment_id;
  std::string user_id;
  std::string model_id;
  std::string model_version_id;
  std::vector<ArtifactRef> artifacts;
  uint64_t cpu_millicores = 0;            // inference_compute_info.cpu_limit
  uint64_t memory_bytes = 0;              // inference_compute_info.cpu_memory
  int num_accelerators = 0;               // inference_compute_info.num_accelerators
  uint64_t accelerator_memory_bytes = 0;  // per accelerator
  bool disable_packing = false;

  bool operator==(const DesiredReplica& other) const;
};

struct DesiredState {
  uint64_t version = 0;
  std::vector<DesiredReplica> replicas;

  static Result<DesiredState> from_json(const nlohmann::json& json);
};

}  // namespace outpost::agent
