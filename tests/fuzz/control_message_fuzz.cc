// Fuzzes what an agent sends the control plane (docs/control-protocol.md): stream metadata,
// node.enroll requests and node.report documents. Every one is untrusted input.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "controlplane/fleet/control_messages.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  (void)outpost::control::parse_call_metadata(input).ok();
  if (auto enroll = outpost::control::parse_enroll_request(input); enroll.ok()) {
    if (!enroll->inventory.is_object() || enroll->name.empty()) std::abort();
  }
  if (auto report = outpost::control::parse_node_report(input); report.ok()) {
    // Every accepted replica is also in the document kept for the API.
    if (report->replicas.size() != report->replicas_doc.size()) std::abort();
  }
  return 0;
}
