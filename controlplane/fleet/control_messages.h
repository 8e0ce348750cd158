// The agent's side of docs/control-protocol.md as the control plane reads it: every message an
// agent sends is untrusted input, parsed here strictly enough that the rest of the control plane
// can rely on its shape, and loosely enough that an agent may add fields (unknown fields are
// ignored, so the protocol can grow without a version bump).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "controlplane/fleet/fleet.h"

namespace outpost::control {

inline constexpr size_t kMaxControlMessage = 1024 * 1024;

// A stream's OPEN metadata: {"method": "...", ...}.
struct CallMetadata {
  std::string method;
  std::string sha256;  // artifact.fetch
};
Result<CallMetadata> parse_call_metadata(std::string_view text);

struct EnrollRequest {
  std::string name;
  nlohmann::json inventory;
};
Result<EnrollRequest> parse_enroll_request(std::string_view text);

struct NodeReport {
  int64_t applied_version = 0;
  std::optional<nlohmann::json> inventory;
  std::vector<ReplicaState> replicas;
  nlohmann::json replicas_doc;  // the replicas as reported, for the node's API view
};
Result<NodeReport> parse_node_report(std::string_view text);

// Checks an Inventory document: an object with optional cpu_cores, memory_bytes, gpus[].
Status check_inventory(const nlohmann::json& inventory);

// {"error": {"code": "<name>", "message": "..."}}
std::string error_message(const Error& error);
// The Error in an agent's {"error": {...}} answer, if it is one.
std::optional<Error> agent_error(const nlohmann::json& message);

}  // namespace outpost::control
