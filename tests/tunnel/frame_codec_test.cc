#include "tunnel/frame_codec.h"

#include <gtest/gtest.h>

namespace outpost::tunnel {
namespace {

Frame decode_ok(const std::string& bytes) {
  auto decoded = decode_frame(bytes);
  if (auto* error = std::get_if<FrameError>(&decoded)) {
    ADD_FAILURE() << "refused: " << error->message;
    return {};
  }
  return std::get<Frame>(decoded);
}

FrameError decode_error(const std::string& bytes) {
  auto decoded = decode_frame(bytes);
  if (std::holds_alternative<Frame>(decoded)) {
    ADD_FAILURE() << "accepted a frame that should be refused";
    return {Errc::kNoError, ""};
  }
  return std::get<FrameError>(decoded);
}

// A raw header, for building malformed frames byte by byte.
std::string header(uint8_t version, uint8_t type, uint16_t flags, uint32_t stream,
                   uint32_t length) {
  std::string out;
  out += static_cast<char>(version);
  out += static_cast<char>(type);
  out += static_cast<char>(flags >> 8);
  out += static_cast<char>(flags & 0xff);
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((stream >> shift) & 0xff);
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((length >> shift) & 0xff);
  return out;
}

TEST(FrameCodecTest, EveryFrameTypeRoundTrips) {
  std::string bytes;
  Hello hello{kFeatureWindowAutoTune, 262144, 1 << 25, 65536, "server-a"};
  encode_hello(bytes, hello);
  Frame f = decode_ok(bytes);
  EXPECT_EQ(f.type, FrameType::kHello);
  EXPECT_EQ(f.hello.initial_window, 262144u);
  EXPECT_EQ(f.hello.connection_window, 1u << 25);
  EXPECT_EQ(f.hello.max_frame_payload, 65536u);
  EXPECT_EQ(f.hello.peer_id, "server-a");

  bytes.clear();
  encode_open(bytes, 7, kFlagMessage | kFlagFin, R"({"method":"predict"})", "request body");
  f = decode_ok(bytes);
  EXPECT_EQ(f.type, FrameType::kOpen);
  EXPECT_EQ(f.stream_id, 7u);
  EXPECT_EQ(f.metadata, R"({"method":"predict"})");
  EXPECT_EQ(f.data, "request body");
  EXPECT_TRUE(f.fin());
  EXPECT_TRUE(f.carries_message());

  bytes.clear();
  const std::string big(kMaxFramePayload, 'x');
  encode_data(bytes, 9, kFlagMore, big);
  f = decode_ok(bytes);
  EXPECT_EQ(f.data.size(), kMaxFramePayload);
  EXPECT_TRUE(f.more());

  bytes.clear();
  encode_reset(bytes, 9, Errc::kCancel, "client went away");
  f = decode_ok(bytes);
  EXPECT_EQ(f.code, static_cast<uint32_t>(Errc::kCancel));
  EXPECT_EQ(f.reason, "client went away");

  bytes.clear();
  encode_window_update(bytes, 0, 12345);
  f = decode_ok(bytes);
  EXPECT_EQ(f.stream_id, 0u);
  EXPECT_EQ(f.increment, 12345u);

  bytes.clear();
  encode_ping(bytes, true, kFlagBdp, 0xdeadbeefcafef00dULL);
  f = decode_ok(bytes);
  EXPECT_EQ(f.type, FrameType::kPong);
  EXPECT_EQ(f.opaque, 0xdeadbeefcafef00dULL);

  bytes.clear();
  encode_goaway(bytes, 41, Errc::kGoingAway, "upgrade");
  f = decode_ok(bytes);
  EXPECT_EQ(f.last_stream_id, 41u);
  EXPECT_EQ(f.code, static_cast<uint32_t>(Errc::kGoingAway));

  bytes.clear();
  encode_half_close(bytes, 3);
  EXPECT_EQ(decode_ok(bytes).type, FrameType::kHalfClose);
}

TEST(FrameCodecTest, RefusesTruncatedFrames) {
  EXPECT_EQ(decode_error("").code, Errc::kProtocolError);
  EXPECT_EQ(decode_error(header(1, 3, 0, 1, 0).substr(0, 11)).code, Errc::kProtocolError);
  // The length field promises 10 bytes, the message holds 4.
  const FrameError error = decode_error(header(1, 3, 0, 1, 10) + "abcd");
  EXPECT_EQ(error.code, Errc::kProtocolError);
  EXPECT_NE(error.message.find("truncated"), std::string::npos) << error.message;
}

TEST(FrameCodecTest, RefusesOversizedFrames) {
  const FrameError error = decode_error(header(1, 3, 0, 1, kMaxFramePayload + 1) +
                                        std::string(kMaxFramePayload + 1, 'x'));
  EXPECT_EQ(error.code, Errc::kFrameTooLarge);
  std::string open;
  encode_open(open, 1, 0, std::string(kMaxMetadataSize, 'm'), {});
  EXPECT_EQ(decode_ok(open).metadata.size(), kMaxMetadataSize);
  EXPECT_EQ(decode_error(header(1, 2, 0, 1, 4) + std::string("\0\0\x40\x01", 4)).code,
            Errc::kProtocolError);  // metadata length above 16 KiB
}

TEST(FrameCodecTest, RefusesUnknownTypesVersionsAndFlags) {
  EXPECT_NE(decode_error(header(1, 0, 0, 1, 0)).message.find("unknown frame type"),
            std::string::npos);
  EXPECT_NE(decode_error(header(1, 42, 0, 1, 0)).message.find("unknown frame type 42"),
            std::string::npos);
  EXPECT_NE(decode_error(header(2, 3, 0, 1, 0)).message.find("version"), std::string::npos);
  EXPECT_NE(decode_error(header(1, 4, kFlagFin, 1, 0)).message.find("flags"), std::string::npos);
  EXPECT_NE(decode_error(header(1, 3, kFlagFin | kFlagMore, 1, 0)).message.find("FIN and MORE"),
            std::string::npos);
}

TEST(FrameCodecTest, RefusesBadStreamIds) {
  // Stream frames need a stream; connection frames must use stream 0.
  EXPECT_NE(decode_error(header(1, 3, 0, 0, 0)).message.find("bad stream id"), std::string::npos);
  EXPECT_NE(
      decode_error(header(1, 7, 0, 5, 8) + std::string(8, '\0')).message.find("bad stream id"),
      std::string::npos);
  EXPECT_NE(decode_error(header(1, 3, 0, 0x80000000u, 0)).message.find("bad stream id"),
            std::string::npos);
}

TEST(FrameCodecTest, RefusesWindowUpdatesThatWouldOverflow) {
  EXPECT_EQ(decode_error(header(1, 6, 0, 1, 4) + std::string("\0\0\0\0", 4)).code,
            Errc::kFlowControlError);
  EXPECT_EQ(decode_error(header(1, 6, 0, 1, 4) + std::string("\x80\0\0\0", 4)).code,
            Errc::kFlowControlError);
}

TEST(FrameCodecTest, RefusesMalformedPayloads) {
  EXPECT_EQ(decode_error(header(1, 4, 0, 1, 1) + "x").code, Errc::kProtocolError);     // HALF_CLOSE
  EXPECT_EQ(decode_error(header(1, 5, 0, 1, 2) + "xx").code, Errc::kProtocolError);    // RESET
  EXPECT_EQ(decode_error(header(1, 7, 0, 0, 4) + "xxxx").code, Errc::kProtocolError);  // PING
  EXPECT_EQ(decode_error(header(1, 1, 0, 0, 3) + "xxx").code, Errc::kProtocolError);   // HELLO
  // OPEN bytes after the metadata need the MESSAGE flag.
  EXPECT_EQ(decode_error(header(1, 2, 0, 1, 5) + std::string("\0\0\0\0x", 5)).code,
            Errc::kProtocolError);
}

}  // namespace
}  // namespace outpost::tunnel
