// Fuzzes outpostd's config file (agent/config.h, /etc/outpost/agent.yaml): YAML written by an
// operator, where a bad file must give an error listing what to change, never a crash. Beyond that:
// an accepted file has a control plane URL, a node name of at most 63 characters, worker sockets
// that fit a Unix socket path, and values within the documented ranges.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "agent/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  auto config = outpost::agent::parse_agent_config(input, "agent.yaml");
  if (!config.ok()) {
    if (config.error().message().empty()) std::abort();  // every refusal says what to change
    return 0;
  }
  const auto& c = config.value();
  if (c.control_plane_url.empty() || c.node_name.empty() || c.node_name.size() > 63) std::abort();
  if (c.worker_file(std::string(16, '0'), ".sock").size() > 107) std::abort();
  if (c.connections < 1 || c.connections > 16 || c.max_workers < 1 || c.max_streams < 1) {
    std::abort();
  }
  for (const auto& pin : c.pins) {
    if (pin.size() != 51) std::abort();
  }
  for (const auto& [index, mode] : c.slicing_per_gpu) {
    if (index < 0 || index > 63) std::abort();
    (void)mode;
  }
  return 0;
}
