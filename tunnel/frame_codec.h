// The tunnel's frames (docs/protocol.md) and their codec. One WebSocket binary message carries
// exactly one frame: a 12-byte big-endian header (version, type, flags, stream id, payload
// length) and the payload. decode_frame() is strict: every field is checked, and a frame it
// returns is well-formed; what it refuses comes back as a FrameError naming the wire code to
// answer with. It never allocates and never reads past the input. Encoders append to a string.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "tunnel/error.h"

namespace outpost::tunnel {

inline constexpr uint8_t kProtocolVersion = 1;
// The WebSocket subprotocol that names the protocol version in the upgrade.
inline constexpr std::string_view kSubprotocol = "outpost-tunnel.v1";
inline constexpr size_t kHeaderSize = 12;
// The largest payload either side sends or accepts in v1.
inline constexpr uint32_t kMaxFramePayload = 64 * 1024;
inline constexpr uint32_t kMaxMetadataSize = 16 * 1024;
inline constexpr uint32_t kMaxReasonSize = 1024;
inline constexpr uint32_t kMaxPeerIdSize = 255;
inline constexpr uint32_t kMaxWindow = 0x7fffffff;

enum class FrameType : uint8_t {
  kHello = 1,
  kOpen = 2,
  kData = 3,
  kHalfClose = 4,
  kReset = 5,
  kWindowUpdate = 6,
  kPing = 7,
  kPong = 8,
  kGoaway = 9,
};

std::string_view frame_type_name(FrameType type);

// Flags. Each frame type accepts only the flags listed in docs/protocol.md.
inline constexpr uint16_t kFlagFin = 0x1;   // OPEN, DATA: the sender half-closes after this frame
inline constexpr uint16_t kFlagMore = 0x2;  // OPEN, DATA: the message continues in the next DATA
inline constexpr uint16_t kFlagBdp = 0x4;   // PING, PONG: a bandwidth-delay-product probe
inline constexpr uint16_t kFlagMessage = 0x8;  // OPEN: the bytes after the metadata start a message

// Feature bits announced in HELLO; unknown bits are ignored by the receiver.
inline constexpr uint64_t kFeatureWindowAutoTune = 1u << 0;
// Bits 32..63 belong to the application (ConnectionOptions::application_features).
inline constexpr uint64_t kApplicationFeatures = ~uint64_t{0} << 32;

struct Hello {
  uint64_t features = 0;
  uint32_t initial_window = 0;     // the sender's initial receive window per stream
  uint32_t connection_window = 0;  // the sender's receive window for the whole connection
  uint32_t max_frame_payload = 0;  // the largest payload the sender accepts (>= 16 KiB)
  std::string_view peer_id;        // who the sender is (server id, node name); may be empty
};

// A decoded frame. Views point into the buffer given to decode_frame().
struct Frame {
  FrameType type = FrameType::kData;
  uint16_t flags = 0;
  uint32_t stream_id = 0;
  std::string_view metadata;    // OPEN
  std::string_view data;        // OPEN (first fragment of the first message), DATA
  uint32_t code = 0;            // RESET, GOAWAY
  std::string_view reason;      // RESET, GOAWAY
  uint32_t increment = 0;       // WINDOW_UPDATE
  uint32_t last_stream_id = 0;  // GOAWAY
  uint64_t opaque = 0;          // PING, PONG
  Hello hello;                  // HELLO

  bool fin() const { return (flags & kFlagFin) != 0; }
  bool more() const { return (flags & kFlagMore) != 0; }
  // True for DATA, and for an OPEN that carries the start of a message.
  bool carries_message() const {
    return type == FrameType::kData || (type == FrameType::kOpen && (flags & kFlagMessage) != 0);
  }
};

struct FrameError {
  Errc code;            // kProtocolError or kFrameTooLarge
  std::string message;  // what was wrong, for the close reason and the log
};

// Decodes one whole frame (one WebSocket message).
std::variant<Frame, FrameError> decode_frame(std::string_view bytes);

// Encoders. Preconditions (checked by assert; the connection never violates them): sizes within
// the limits above, stream_id != 0 for stream frames, increment in [1, kMaxWindow].
void encode_hello(std::string& out, const Hello& hello);
void encode_open(std::string& out, uint32_t stream_id, uint16_t flags, std::string_view metadata,
                 std::string_view data);
void encode_data(std::string& out, uint32_t stream_id, uint16_t flags, std::string_view data);
void encode_half_close(std::string& out, uint32_t stream_id);
void encode_reset(std::string& out, uint32_t stream_id, Errc code, std::string_view reason);
void encode_window_update(std::string& out, uint32_t stream_id, uint32_t increment);
void encode_ping(std::string& out, bool pong, uint16_t flags, uint64_t opaque);
void encode_goaway(std::string& out, uint32_t last_stream_id, Errc code, std::string_view reason);

// Truncates a reason to kMaxReasonSize so that it can always be encoded.
std::string_view clamp_reason(std::string_view reason);

}  // namespace outpost::tunnel
