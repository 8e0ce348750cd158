// The message protocol between the agent and outpost-worker (docs/worker-protocol.md). Every
// message is one ZeroMQ multipart message: a JSON header frame (an object with "type" and
// "id"), then zero or more binary parts that the header's Values refer to as {"part": index}.
// This file holds the envelope, its limits, error mapping and the Value helpers; it includes
// neither torch nor ZeroMQ, so that the agent links it and the fuzzers drive it.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace outpost::protocol {

inline constexpr int kProtocolVersion = 1;

// Message types (the header's "type").
namespace msg {
// agent -> worker
inline constexpr std::string_view kHello = "hello";
inline constexpr std::string_view kLoad = "load";
inline constexpr std::string_view kUnload = "unload";
inline constexpr std::string_view kReload = "reload";
inline constexpr std::string_view kPredict = "predict";
inline constexpr std::string_view kItem = "item";
inline constexpr std::string_view kClose = "close";
inline constexpr std::string_view kCancel = "cancel";
inline constexpr std::string_view kHealth = "health";
inline constexpr std::string_view kDrain = "drain";
// worker -> agent (besides replies named like their request: hello, health)
inline constexpr std::string_view kLoaded = "loaded";
inline constexpr std::string_view kUnloaded = "unloaded";
inline constexpr std::string_view kReloaded = "reloaded";
inline constexpr std::string_view kDrained = "drained";
inline constexpr std::string_view kResult = "result";
inline constexpr std::string_view kChunk = "chunk";
inline constexpr std::string_view kOutput = "output";
inline constexpr std::string_view kEnd = "end";
inline constexpr std::string_view kError = "error";
}  // namespace msg

// The three predict shapes (docs/control-protocol.md).
enum class CallShape { kUnary, kGenerate, kStream };
std::string_view call_shape_name(CallShape shape);
std::optional<CallShape> call_shape_from_name(std::string_view name);

struct Limits {
  // The sum of a message's frames. Larger messages are refused with resource_exhausted; the
  // socket's ZMQ_MAXMSGSIZE is set to twice this, above which ZeroMQ drops the connection.
  size_t max_message_bytes = size_t{256} << 20;
  size_t max_header_bytes = size_t{16} << 20;
  size_t max_parts = 4096;
  size_t max_id_bytes = 256;
  // Nesting depth of a Value (lists in dicts in lists ...).
  size_t max_value_depth = 64;
};

// A Value (docs/control-protocol.md) with its bytes out of line: tensors and byte strings refer
// to `parts` as {"part": index}. Request inputs, and the "outputs" or "chunk" of a response.
struct WireValue {
  nlohmann::json value;
  std::vector<std::string> parts;
};

// One message, without ZeroMQ's routing frame.
struct Message {
  nlohmann::json header = nlohmann::json::object();
  std::vector<std::string> parts;

  // The header's "type" and "id"; empty when absent (decode_message guarantees both exist).
  std::string_view type() const;
  std::string_view id() const;
};

// Parses the frames of one message (header first). Refuses, naming the problem: no frames, a
// header that is not a JSON object, a missing or non-string "type"/"id", too many parts, or
// more bytes than the limits allow (resource_exhausted). When the header parsed far enough to
// carry an id, `id_out` receives it, so that the refusal can be addressed to the request.
Result<Message> decode_message(std::span<const std::string_view> frames, const Limits& limits,
                               std::string* id_out = nullptr);

// The header frame's bytes. Strings that are not valid UTF-8 are replaced, never thrown on.
std::string encode_header(const nlohmann::json& header);

// resource_exhausted when a message of the encoded `header` and `parts` is over
// limits.max_message_bytes: what a sender checks before it sends (the peer would refuse it).
Status check_message_size(std::string_view header, const std::vector<std::string>& parts,
                          const Limits& limits);
// One message (a header and its binary parts) as a single byte string, for a transport that
// carries whole messages rather than ZeroMQ's frames: the tunnel's predict bodies
// (docs/control-protocol.md, "Predict bodies"). Big-endian: u32 header length, the header, u32
// part count, then each part as u64 length and bytes. The views point into the decoded bytes.
struct EnvelopeView {
  std::string_view header;
  std::vector<std::string_view> parts;
};
std::string encode_envelope(std::string_view header, std::span<const std::string> parts);
// Refuses, naming the problem: truncated or trailing bytes, a header over max_header_bytes
// (resource_exhausted), more than max_parts parts (resource_exhausted).
Result<EnvelopeView> decode_envelope(std::string_view bytes, const Limits& limits);

// Any JSON as text for messages and logs, with the same replacement (json::dump throws on
// strings that are not UTF-8, and such strings come from untrusted input).
std::string json_text(const nlohmann::json& value);

// {"type": "error", "id": id, "code": "invalid_argument", "message": "..."}
nlohmann::json error_header(std::string_view id, const Error& error);
// The Error an "error" header carries (unknown codes read as internal).
Error error_from_header(const nlohmann::json& header);

// Walks a Value (lists and objects, up to `max_depth` deep) and rebuilds it; each object is first
// offered to `rewrite`, which returns its replacement (or an error), or nothing to walk into it.
// The one walk under parts_to_base64 and tensors_to_values.
using ValueRewrite =
    std::function<std::optional<Result<nlohmann::json>>(const nlohmann::json& object)>;
Result<nlohmann::json> rewrite_values(const nlohmann::json& value, size_t max_depth,
                                      const ValueRewrite& rewrite);

// Values (docs/control-protocol.md, "Value") move between two encodings: the control
// protocol's, where tensor bytes are base64 text ("data_b64", "bytes_b64"), and the worker
// protocol's, where they are binary parts ({"part": index}).
//
// Moves every base64 payload in `value` into `parts`, in place. Refuses invalid base64.
Status move_bytes_to_parts(nlohmann::json& value, std::vector<std::string>& parts,
                           size_t max_depth = 64);
// The control-protocol form of `value`: every {"part": i} becomes "data_b64" (tensors) or
// "bytes_b64" (byte strings). Refuses references to parts that do not exist.
Result<nlohmann::json> parts_to_base64(const nlohmann::json& value,
                                       std::span<const std::string> parts, size_t max_depth = 64);

}  // namespace outpost::protocol
