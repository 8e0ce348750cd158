// Fuzzes the worker protocol's envelope (protocol/worker_protocol.h): arbitrary bytes split into
// frames at each "\n--\n", decoded as one message, then the header's Values moved between the
// control protocol's base64 form and binary parts. Properties: a decoded message has a type and
// an id; bytes moved into parts come back unchanged through base64.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/worker_protocol.h"

using namespace outpost::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> frames;
  size_t start = 0;
  while (true) {
    const size_t end = input.find("\n--\n", start);
    if (end == std::string_view::npos) {
      frames.push_back(input.substr(start));
      break;
    }
    frames.push_back(input.substr(start, end - start));
    start = end + 4;
  }
  Limits limits;
  limits.max_message_bytes = 1 << 16;
  limits.max_parts = 8;
  std::string id;
  auto message = decode_message(frames, limits, &id);
  if (!message.ok()) {
    if (message.error().message().empty()) std::abort();
    return 0;
  }
  if (!message->header.at("type").is_string()) {
    std::abort();
  }
  if (message->id() != id) std::abort();
  (void)encode_header(message->header);
  auto as_base64 = parts_to_base64(message->header, message->parts);
  if (!as_base64.ok()) return 0;
  // Base64 that was already in the header is not checked by parts_to_base64; when it is valid,
  // its bytes survive a trip through parts and back.
  nlohmann::json moved = *as_base64;
  std::vector<std::string> parts;
  if (!move_bytes_to_parts(moved, parts).ok()) return 0;
  auto back = parts_to_base64(moved, parts);
  if (!back.ok()) std::abort();
  nlohmann::json moved_again = *back;
  std::vector<std::string> parts_again;
  if (!move_bytes_to_parts(moved_again, parts_again).ok()) std::abort();
  if (moved_again != moved || parts_again != parts) std::abort();
  return 0;
}
