// Fuzzes what an agent sends the control plane (docs/control-protocol.md): stream metadata,
// node.enroll requests and node.report documents. Every one is untrusted input. What is accepted
// must survive being written again (protocol::to_json) and read back unchanged.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "protocol/control_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace protocol = outpost::protocol;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (auto metadata = protocol::parse_call_metadata(input); metadata.ok()) {
    auto again = protocol::parse_call_metadata(protocol::to_json(*metadata).dump());
    if (!again.ok() || again->method != metadata->method || again->sha256 != metadata->sha256) {
      std::abort();
    }
  }
  if (auto enroll = protocol::parse_enroll_request(input); enroll.ok()) {
    if (!enroll->inventory.is_object() || enroll->name.empty()) std::abort();
    auto again = protocol::parse_enroll_request(protocol::to_json(*enroll).dump());
    if (!again.ok() || again->name != enroll->name || again->inventory != enroll->inventory) {
      std::abort();
    }
  }
  if (auto report = protocol::parse_node_report(input); report.ok()) {
    auto again = protocol::parse_node_report(protocol::to_json(*report).dump());
    if (!again.ok() || again->replicas != report->replicas ||
        again->applied_version != report->applied_version) {
      std::abort();
    }
  }
  return 0;
}
