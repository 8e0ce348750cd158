// Fuzzes the agent's parser of desired states pushed by the control plane: arbitrary bytes as
// JSON, then protocol::parse_desired_state. A document is either refused with an error or yields
// replicas that satisfy the parser's promises (unique ids, plain artifact names).
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>

#include "protocol/control_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto json = nlohmann::json::parse(text, nullptr, false);
  if (json.is_discarded()) return 0;
  const auto state = outpost::protocol::parse_desired_state(json);
  if (!state.ok()) {
    if (state.error().message().empty()) std::abort();
    return 0;
  }
  std::set<std::string> ids;
  for (const auto& replica : state->replicas) {
    if (replica.replica_id.empty() || !ids.insert(replica.replica_id).second) std::abort();
    for (const auto& artifact : replica.artifacts) {
      if (artifact.name.empty() || artifact.name.find('/') != std::string::npos ||
          artifact.name[0] == '.') {
        std::abort();
      }
    }
  }
  return 0;
}
