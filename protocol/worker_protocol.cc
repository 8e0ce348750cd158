#include "protocol/worker_protocol.h"

#include <utility>

#include "common/base64.h"
#include "protocol/tensor_wire.h"

namespace outpost::protocol {
namespace {

using nlohmann::json;

Error too_deep(size_t max_depth) {
  return invalid_argument("a Value is nested more than " + std::to_string(max_depth) +
                          " levels deep");
}

Status move_bytes(json& value, std::vector<std::string>& parts, size_t depth, size_t max_depth) {
  if (depth > max_depth) return too_deep(max_depth);
  if (value.is_array()) {
    for (auto& item : value) OUTPOST_RETURN_IF_ERROR(move_bytes(item, parts, depth + 1, max_depth));
    return {};
  }
  if (!value.is_object()) return {};
  if (looks_like_tensor(value)) {
    const auto it = value.find("data_b64");
    if (it == value.end() || !it->is_string()) return {};
    auto bytes = base64_decode(it->get_ref<const std::string&>());
    if (!bytes) {
      return invalid_argument("a tensor's \"data_b64\" is not valid base64: " +
                              bytes.error().message());
    }
    value.erase(it);
    value["part"] = parts.size();
    parts.push_back(std::move(bytes).value());
    return {};
  }
  if (value.size() == 1) {
    const auto it = value.find("bytes_b64");
    if (it != value.end() && it->is_string()) {
      auto bytes = base64_decode(it->get_ref<const std::string&>());
      if (!bytes) {
        return invalid_argument("\"bytes_b64\" is not valid base64: " + bytes.error().message());
      }
      value = json{{"part", parts.size()}};
      parts.push_back(std::move(bytes).value());
      return {};
    }
  }
  for (auto& [key, item] : value.items()) {
    OUTPOST_RETURN_IF_ERROR(move_bytes(item, parts, depth + 1, max_depth));
  }
  return {};
}

Result<json> rewrite_at(const json& value, size_t depth, size_t max_depth,
                        const ValueRewrite& rewrite) {
  if (depth > max_depth) return too_deep(max_depth);
  if (value.is_array()) {
    json out = json::array();
    for (const auto& item : value) {
      OUTPOST_ASSIGN_OR_RETURN(auto converted, rewrite_at(item, depth + 1, max_depth, rewrite));
      out.push_back(std::move(converted));
    }
    return out;
  }
  if (!value.is_object()) return value;
  if (auto replaced = rewrite(value)) return std::move(*replaced);
  json out = json::object();
  for (const auto& [key, item] : value.items()) {
    OUTPOST_ASSIGN_OR_RETURN(auto converted, rewrite_at(item, depth + 1, max_depth, rewrite));
    out[key] = std::move(converted);
  }
  return out;
}

}  // namespace

std::string_view call_shape_name(CallShape shape) {
  switch (shape) {
    case CallShape::kUnary:
      return "unary";
    case CallShape::kGenerate:
      return "generate";
    case CallShape::kStream:
      return "stream";
  }
  return "unknown";
}

std::optional<CallShape> call_shape_from_name(std::string_view name) {
  if (name == "unary") return CallShape::kUnary;
  if (name == "generate") return CallShape::kGenerate;
  if (name == "stream") return CallShape::kStream;
  return std::nullopt;
}

std::string_view Message::type() const {
  const auto it = header.find("type");
  if (it == header.end() || !it->is_string()) return {};
  return it->get_ref<const std::string&>();
}

std::string_view Message::id() const {
  const auto it = header.find("id");
  if (it == header.end() || !it->is_string()) return {};
  return it->get_ref<const std::string&>();
}

Result<Message> decode_message(std::span<const std::string_view> frames, const Limits& limits,
                               std::string* id_out) {
  if (frames.empty()) return invalid_argument("an empty message (no header frame)");
  size_t total = 0;
  for (const auto& frame : frames) total += frame.size();
  const std::string_view header_bytes = frames[0];
  if (header_bytes.size() > limits.max_header_bytes) {
    return Error(ErrorCode::kResourceExhausted,
                 "a message header of " + std::to_string(header_bytes.size()) +
                     " bytes is over the limit of " + std::to_string(limits.max_header_bytes));
  }
  Message message;
  message.header = json::parse(header_bytes, nullptr, false);
  if (message.header.is_discarded() || !message.header.is_object()) {
    return invalid_argument("a message header must be a JSON object");
  }
  const auto id = message.header.find("id");
  if (id == message.header.end() || !id->is_string()) {
    return invalid_argument("a message header needs an \"id\" string");
  }
  if (id->get_ref<const std::string&>().size() > limits.max_id_bytes) {
    return invalid_argument("a message id is longer than " + std::to_string(limits.max_id_bytes) +
                            " bytes");
  }
  if (id_out != nullptr) *id_out = id->get<std::string>();
  const auto type = message.header.find("type");
  if (type == message.header.end() || !type->is_string()) {
    return invalid_argument("a message header needs a \"type\" string");
  }
  if (total > limits.max_message_bytes) {
    return Error(ErrorCode::kResourceExhausted,
                 "a message of " + std::to_string(total) + " bytes is over the worker's limit of " +
                     std::to_string(limits.max_message_bytes) + " bytes");
  }
  if (frames.size() - 1 > limits.max_parts) {
    return Error(ErrorCode::kResourceExhausted,
                 "a message with " + std::to_string(frames.size() - 1) +
                     " binary parts is over the limit of " + std::to_string(limits.max_parts));
  }
  message.parts.reserve(frames.size() - 1);
  for (size_t i = 1; i < frames.size(); ++i) message.parts.emplace_back(frames[i]);
  return message;
}

Status check_message_size(std::string_view header, const std::vector<std::string>& parts,
                          const Limits& limits) {
  size_t total = header.size();
  for (const auto& part : parts) total += part.size();
  if (total <= limits.max_message_bytes) return {};
  return Error(ErrorCode::kResourceExhausted,
               "a message of " + std::to_string(total) + " bytes is over the limit of " +
                   std::to_string(limits.max_message_bytes) + " bytes");
}

namespace {

void put_be(std::string& out, uint64_t value, int bytes) {
  for (int shift = 8 * (bytes - 1); shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>((value >> shift) & 0xff));
  }
}

// Reads a big-endian integer of `bytes` bytes from the front of `in`, or nothing when short.
std::optional<uint64_t> take_be(std::string_view& in, int bytes) {
  if (in.size() < static_cast<size_t>(bytes)) return std::nullopt;
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value = (value << 8) | static_cast<unsigned char>(in[i]);
  in.remove_prefix(static_cast<size_t>(bytes));
  return value;
}

Error truncated_envelope(std::string_view what) {
  return invalid_argument("a predict envelope ends inside its " + std::string(what));
}

}  // namespace

std::string encode_envelope(std::string_view header, std::span<const std::string> parts) {
  size_t total = 8 + header.size();
  for (const auto& part : parts) total += 8 + part.size();
  std::string out;
  out.reserve(total);
  put_be(out, header.size(), 4);
  out.append(header);
  put_be(out, parts.size(), 4);
  for (const auto& part : parts) {
    put_be(out, part.size(), 8);
    out.append(part);
  }
  return out;
}

Result<EnvelopeView> decode_envelope(std::string_view bytes, const Limits& limits) {
  EnvelopeView out;
  const auto header_size = take_be(bytes, 4);
  if (!header_size) return truncated_envelope("header length");
  if (*header_size > limits.max_header_bytes) {
    return Error(ErrorCode::kResourceExhausted,
                 "a message header of " + std::to_string(*header_size) +
                     " bytes is over the limit of " + std::to_string(limits.max_header_bytes));
  }
  if (bytes.size() < *header_size) return truncated_envelope("header");
  out.header = bytes.substr(0, *header_size);
  bytes.remove_prefix(*header_size);
  const auto count = take_be(bytes, 4);
  if (!count) return truncated_envelope("part count");
  if (*count > limits.max_parts) {
    return Error(ErrorCode::kResourceExhausted, "a message with " + std::to_string(*count) +
                                                    " binary parts is over the limit of " +
                                                    std::to_string(limits.max_parts));
  }
  // Every part needs at least its length, so a count the bytes cannot hold is refused before
  // anything is reserved for it.
  if (*count > bytes.size() / 8) return truncated_envelope("part lengths");
  out.parts.reserve(*count);
  for (uint64_t i = 0; i < *count; ++i) {
    const auto size = take_be(bytes, 8);
    if (!size) return truncated_envelope("part lengths");
    if (bytes.size() < *size) return truncated_envelope("part " + std::to_string(i));
    out.parts.push_back(bytes.substr(0, *size));
    bytes.remove_prefix(*size);
  }
  if (!bytes.empty()) {
    return invalid_argument("a predict envelope has " + std::to_string(bytes.size()) +
                            " bytes after its last part");
  }
  return out;
}

std::string encode_header(const json& header) {
  return header.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string json_text(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

json error_header(std::string_view id, const Error& error) {
  return json{{"type", msg::kError},
              {"id", id},
              {"code", error_code_name(error.code())},
              {"message", error.message()}};
}

Error error_from_header(const json& header) {
  ErrorCode code = ErrorCode::kInternal;
  std::string message = "the worker sent an error without a message";
  if (const auto it = header.find("code"); it != header.end() && it->is_string()) {
    code = error_code_from_name(it->get_ref<const std::string&>()).value_or(ErrorCode::kInternal);
  }
  if (const auto it = header.find("message"); it != header.end() && it->is_string()) {
    message = it->get<std::string>();
  }
  return {code, std::move(message)};
}

Status move_bytes_to_parts(json& value, std::vector<std::string>& parts, size_t max_depth) {
  return move_bytes(value, parts, 0, max_depth);
}

Result<json> rewrite_values(const json& value, size_t max_depth, const ValueRewrite& rewrite) {
  return rewrite_at(value, 0, max_depth, rewrite);
}

Result<json> parts_to_base64(const json& value, std::span<const std::string> parts,
                             size_t max_depth) {
  return rewrite_values(value, max_depth, [&](const json& object) -> std::optional<Result<json>> {
    const auto part = object.find("part");
    const bool tensor = looks_like_tensor(object);
    if (part == object.end() || !(tensor || object.size() == 1)) return std::nullopt;
    if (!part->is_number_integer() || part->get<int64_t>() < 0 ||
        part->get<uint64_t>() >= parts.size()) {
      return Result<json>(invalid_argument("a Value refers to binary part " + json_text(*part) +
                                           ", which the message does not have"));
    }
    const std::string encoded = base64_encode(parts[part->get<size_t>()]);
    if (!tensor) return Result<json>(json{{"bytes_b64", encoded}});
    json out = object;
    out.erase("part");
    out["data_b64"] = encoded;
    return Result<json>(std::move(out));
  });
}

}  // namespace outpost::protocol
