// Fuzzes what an agent sends the control plane (docs/control-protocol.md): stream metadata,
// node.enroll requests, node.report documents and predict bodies in both encodings. Every one is
// untrusted input. What is accepted must survive being written again and read back unchanged.
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
  // A predict request, as the agent reads it from the control plane (and an answer the other
  // way): what reads must encode again and read back the same.
  for (const auto encoding : {protocol::BodyEncoding::kJson, protocol::BodyEncoding::kEnvelope}) {
    if (auto inputs = protocol::decode_predict_request(input, encoding); inputs.ok()) {
      auto answer = protocol::encode_predict_answer("outputs", *inputs, encoding);
      if (answer.ok()) {
        auto read = protocol::decode_predict_answer(*answer, encoding);
        // A reference to a part the request lacks is the worker's to refuse; any other failure
        // to read back is a bug.
        const bool refs_ok = protocol::parts_to_base64(inputs->value, inputs->parts).ok();
        if (refs_ok && (!read.ok() || !read->contains("outputs"))) std::abort();
      }
    }
    (void)protocol::decode_predict_answer(input, encoding);
  }
  return 0;
}
