#include "tunnel/frame_codec.h"

#include <cassert>

namespace outpost::tunnel {
namespace {

uint16_t read_u16(std::string_view b, size_t at) {
  return static_cast<uint16_t>((static_cast<uint8_t>(b[at]) << 8) |
                               static_cast<uint8_t>(b[at + 1]));
}

uint32_t read_u32(std::string_view b, size_t at) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(b[at])) << 24) |
         (static_cast<uint32_t>(static_cast<uint8_t>(b[at + 1])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(b[at + 2])) << 8) |
         static_cast<uint32_t>(static_cast<uint8_t>(b[at + 3]));
}

uint64_t read_u64(std::string_view b, size_t at) {
  return (static_cast<uint64_t>(read_u32(b, at)) << 32) | read_u32(b, at + 4);
}

void put_u8(std::string& out, uint8_t v) { out.push_back(static_cast<char>(v)); }

void put_u16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xff));
}

void put_u32(std::string& out, uint32_t v) {
  out.push_back(static_cast<char>(v >> 24));
  out.push_back(static_cast<char>((v >> 16) & 0xff));
  out.push_back(static_cast<char>((v >> 8) & 0xff));
  out.push_back(static_cast<char>(v & 0xff));
}

void put_u64(std::string& out, uint64_t v) {
  put_u32(out, static_cast<uint32_t>(v >> 32));
  put_u32(out, static_cast<uint32_t>(v & 0xffffffffu));
}

void put_header(std::string& out, FrameType type, uint16_t flags, uint32_t stream_id,
                size_t payload_size) {
  assert(payload_size <= kMaxFramePayload);
  put_u8(out, kProtocolVersion);
  put_u8(out, static_cast<uint8_t>(type));
  put_u16(out, flags);
  put_u32(out, stream_id);
  put_u32(out, static_cast<uint32_t>(payload_size));
}

FrameError protocol_error(std::string message) {
  return FrameError{Errc::kProtocolError, std::move(message)};
}

bool is_known_type(uint8_t type) {
  return type >= static_cast<uint8_t>(FrameType::kHello) &&
         type <= static_cast<uint8_t>(FrameType::kGoaway);
}

uint16_t allowed_flags(FrameType type) {
  switch (type) {
    case FrameType::kOpen:
      return kFlagFin | kFlagMore | kFlagMessage;
    case FrameType::kData:
      return kFlagFin | kFlagMore;
    case FrameType::kPing:
    case FrameType::kPong:
      return kFlagBdp;
    default:
      return 0;
  }
}

bool is_connection_frame(FrameType type) {
  return type == FrameType::kHello || type == FrameType::kPing || type == FrameType::kPong ||
         type == FrameType::kGoaway;
}

}  // namespace

std::string_view frame_type_name(FrameType type) {
  switch (type) {
    case FrameType::kHello:
      return "HELLO";
    case FrameType::kOpen:
      return "OPEN";
    case FrameType::kData:
      return "DATA";
    case FrameType::kHalfClose:
      return "HALF_CLOSE";
    case FrameType::kReset:
      return "RESET";
    case FrameType::kWindowUpdate:
      return "WINDOW_UPDATE";
    case FrameType::kPing:
      return "PING";
    case FrameType::kPong:
      return "PONG";
    case FrameType::kGoaway:
      return "GOAWAY";
  }
  return "UNKNOWN";
}

std::variant<Frame, FrameError> decode_frame(std::string_view bytes) {
  if (bytes.size() < kHeaderSize) {
    return protocol_error("truncated frame: " + std::to_string(bytes.size()) +
                          " bytes, the header alone is 12");
  }
  const uint8_t version = static_cast<uint8_t>(bytes[0]);
  if (version != kProtocolVersion) {
    return protocol_error("unsupported frame version " + std::to_string(version));
  }
  const uint8_t raw_type = static_cast<uint8_t>(bytes[1]);
  if (!is_known_type(raw_type)) {
    return protocol_error("unknown frame type " + std::to_string(raw_type));
  }
  Frame f;
  f.type = static_cast<FrameType>(raw_type);
  f.flags = read_u16(bytes, 2);
  f.stream_id = read_u32(bytes, 4);
  const uint32_t length = read_u32(bytes, 8);
  const std::string name(frame_type_name(f.type));
  if (length > kMaxFramePayload) {
    return FrameError{Errc::kFrameTooLarge, name + " payload of " + std::to_string(length) +
                                                " bytes exceeds the limit of 65536"};
  }
  if (length != bytes.size() - kHeaderSize) {
    return protocol_error(name + " length field says " + std::to_string(length) +
                          " bytes but the message holds " +
                          std::to_string(bytes.size() - kHeaderSize) + " (truncated frame)");
  }
  if ((f.flags & ~allowed_flags(f.type)) != 0) {
    return protocol_error(name + " carries unknown flags 0x" + std::to_string(f.flags));
  }
  if ((f.flags & kFlagFin) != 0 && (f.flags & kFlagMore) != 0) {
    return protocol_error(name + " sets both FIN and MORE: a stream cannot end inside a message");
  }
  if (f.type == FrameType::kOpen && (f.flags & kFlagMore) != 0 && (f.flags & kFlagMessage) == 0) {
    return protocol_error("OPEN sets MORE without MESSAGE");
  }
  if (f.stream_id > kMaxWindow) {
    return protocol_error(name + " has stream id " + std::to_string(f.stream_id) +
                          " above 2^31-1 (bad stream id)");
  }
  if (is_connection_frame(f.type) && f.stream_id != 0) {
    return protocol_error(name + " must use stream 0, got " + std::to_string(f.stream_id) +
                          " (bad stream id)");
  }
  if (!is_connection_frame(f.type) && f.type != FrameType::kWindowUpdate && f.stream_id == 0) {
    return protocol_error(name + " needs a stream id, got 0 (bad stream id)");
  }
  const std::string_view p = bytes.substr(kHeaderSize);
  switch (f.type) {
    case FrameType::kHello: {
      if (p.size() < 22) return protocol_error("HELLO payload too short");
      f.hello.features = read_u64(p, 0);
      f.hello.initial_window = read_u32(p, 8);
      f.hello.connection_window = read_u32(p, 12);
      f.hello.max_frame_payload = read_u32(p, 16);
      const uint16_t id_size = read_u16(p, 20);
      if (id_size > kMaxPeerIdSize || p.size() != 22u + id_size) {
        return protocol_error("HELLO peer id length does not match its payload");
      }
      if (f.hello.initial_window == 0 || f.hello.initial_window > kMaxWindow ||
          f.hello.connection_window == 0 || f.hello.connection_window > kMaxWindow) {
        return protocol_error("HELLO windows must be in [1, 2^31-1]");
      }
      if (f.hello.max_frame_payload < 16 * 1024) {
        return protocol_error("HELLO max frame payload below 16384");
      }
      f.hello.peer_id = p.substr(22, id_size);
      break;
    }
    case FrameType::kOpen: {
      if (p.size() < 4) return protocol_error("OPEN payload too short for its metadata length");
      const uint32_t meta_size = read_u32(p, 0);
      if (meta_size > kMaxMetadataSize) {
        return protocol_error("OPEN metadata of " + std::to_string(meta_size) +
                              " bytes exceeds 16384");
      }
      if (meta_size > p.size() - 4) return protocol_error("OPEN metadata runs past the frame");
      f.metadata = p.substr(4, meta_size);
      f.data = p.substr(4 + meta_size);
      if ((f.flags & kFlagMessage) == 0 && !f.data.empty()) {
        return protocol_error("OPEN carries bytes after its metadata without the MESSAGE flag");
      }
      break;
    }
    case FrameType::kData:
      f.data = p;
      break;
    case FrameType::kHalfClose:
      if (!p.empty()) return protocol_error("HALF_CLOSE must have an empty payload");
      break;
    case FrameType::kReset:
      if (p.size() < 4) return protocol_error("RESET payload too short for its code");
      if (p.size() - 4 > kMaxReasonSize) return protocol_error("RESET reason longer than 1024");
      f.code = read_u32(p, 0);
      f.reason = p.substr(4);
      break;
    case FrameType::kWindowUpdate:
      if (p.size() != 4) return protocol_error("WINDOW_UPDATE payload must be 4 bytes");
      f.increment = read_u32(p, 0);
      if (f.increment == 0 || f.increment > kMaxWindow) {
        return FrameError{
            Errc::kFlowControlError,
            "WINDOW_UPDATE increment " + std::to_string(f.increment) + " outside [1, 2^31-1]"};
      }
      break;
    case FrameType::kPing:
    case FrameType::kPong:
      if (p.size() != 8) return protocol_error(name + " payload must be 8 bytes");
      f.opaque = read_u64(p, 0);
      break;
    case FrameType::kGoaway:
      if (p.size() < 8) return protocol_error("GOAWAY payload too short");
      if (p.size() - 8 > kMaxReasonSize) return protocol_error("GOAWAY reason longer than 1024");
      f.last_stream_id = read_u32(p, 0);
      f.code = read_u32(p, 4);
      f.reason = p.substr(8);
      break;
  }
  return f;
}

std::string_view clamp_reason(std::string_view reason) { return reason.substr(0, kMaxReasonSize); }

void encode_hello(std::string& out, const Hello& hello) {
  assert(hello.peer_id.size() <= kMaxPeerIdSize);
  put_header(out, FrameType::kHello, 0, 0, 22 + hello.peer_id.size());
  put_u64(out, hello.features);
  put_u32(out, hello.initial_window);
  put_u32(out, hello.connection_window);
  put_u32(out, hello.max_frame_payload);
  put_u16(out, static_cast<uint16_t>(hello.peer_id.size()));
  out.append(hello.peer_id);
}

void encode_open(std::string& out, uint32_t stream_id, uint16_t flags, std::string_view metadata,
                 std::string_view data) {
  assert(stream_id != 0 && metadata.size() <= kMaxMetadataSize);
  put_header(out, FrameType::kOpen, flags, stream_id, 4 + metadata.size() + data.size());
  put_u32(out, static_cast<uint32_t>(metadata.size()));
  out.append(metadata);
  out.append(data);
}

void encode_data(std::string& out, uint32_t stream_id, uint16_t flags, std::string_view data) {
  assert(stream_id != 0);
  put_header(out, FrameType::kData, flags, stream_id, data.size());
  out.append(data);
}

void encode_half_close(std::string& out, uint32_t stream_id) {
  put_header(out, FrameType::kHalfClose, 0, stream_id, 0);
}

void encode_reset(std::string& out, uint32_t stream_id, Errc code, std::string_view reason) {
  reason = clamp_reason(reason);
  put_header(out, FrameType::kReset, 0, stream_id, 4 + reason.size());
  put_u32(out, static_cast<uint32_t>(code));
  out.append(reason);
}

void encode_window_update(std::string& out, uint32_t stream_id, uint32_t increment) {
  assert(increment != 0 && increment <= kMaxWindow);
  put_header(out, FrameType::kWindowUpdate, 0, stream_id, 4);
  put_u32(out, increment);
}

void encode_ping(std::string& out, bool pong, uint16_t flags, uint64_t opaque) {
  put_header(out, pong ? FrameType::kPong : FrameType::kPing, flags, 0, 8);
  put_u64(out, opaque);
}

void encode_goaway(std::string& out, uint32_t last_stream_id, Errc code, std::string_view reason) {
  reason = clamp_reason(reason);
  put_header(out, FrameType::kGoaway, 0, 0, 8 + reason.size());
  put_u32(out, last_stream_id);
  put_u32(out, static_cast<uint32_t>(code));
  out.append(reason);
}

}  // namespace outpost::tunnel
