// A hand-driven peer sends malformed and out-of-order frames to a real TunnelServer over TLS.
// Each violation gets the right answer (the stream reset, or the connection closed with a
// GOAWAY naming the error), and the server keeps serving well-behaved clients.
#include <optional>

#include <boost/asio/connect.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <gtest/gtest.h>

#include "tests/tunnel/tunnel_harness.h"
#include "tunnel/ws_transport.h"
#include <sys/socket.h>

namespace outpost::tunnel {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using outpost::testing::ServerHarness;

struct OwnedFrame {
  FrameType type;
  uint16_t flags;
  uint32_t stream_id;
  uint32_t code;
  uint32_t increment;
  std::string data;
  std::string reason;
};

// A synchronous WebSocket client that speaks frames by hand.
class RawPeer {
 public:
  RawPeer(const ServerHarness& server)
      : context_(asio::ssl::context::tls_client), ws_(io_, context_) {
    context_.load_verify_file(server.pki.ca_file());
    context_.set_verify_mode(asio::ssl::verify_peer);
    auto& socket = beast::get_lowest_layer(ws_);
    asio::ip::tcp::resolver resolver(io_);
    asio::connect(socket, resolver.resolve("127.0.0.1", std::to_string(server.port)));
    // Reads fail after 10 s instead of hanging the test.
    timeval timeout{10, 0};
    ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    SSL_set_tlsext_host_name(ws_.next_layer().native_handle(), "localhost");
    ws_.next_layer().set_verify_callback(asio::ssl::host_name_verification("localhost"));
    ws_.next_layer().handshake(asio::ssl::stream_base::client);
    ws_.set_option(websocket::stream_base::decorator([](websocket::request_type& request) {
      request.set(beast::http::field::authorization, "Bearer good-token");
      request.set(beast::http::field::sec_websocket_protocol, kSubprotocol);
    }));
    ws_.handshake("localhost", "/v1/tunnel");
    ws_.binary(true);
  }

  void send(const std::string& bytes) { ws_.write(asio::buffer(bytes)); }

  void send_text(const std::string& text) {
    ws_.text(true);
    ws_.write(asio::buffer(text));
    ws_.binary(true);
  }

  void hello() {
    std::string frame;
    encode_hello(frame, Hello{0, 256 * 1024, 32 * 1024 * 1024, kMaxFramePayload, "raw"});
    send(frame);
    auto first = read();
    ASSERT_TRUE(first.has_value());
    ASSERT_EQ(first->type, FrameType::kHello);
  }

  // The next frame, skipping WINDOW_UPDATE and PING noise unless asked for; nullopt once the
  // connection has closed.
  std::optional<OwnedFrame> read(bool skip_noise = true) {
    for (;;) {
      beast::flat_buffer buffer;
      boost::system::error_code ec;
      ws_.read(buffer, ec);
      if (ec) {
        close_reason_ = std::string(ws_.reason().reason.data(), ws_.reason().reason.size());
        close_code_ = ws_.reason().code;
        return std::nullopt;
      }
      const std::string bytes = beast::buffers_to_string(buffer.data());
      auto decoded = decode_frame(bytes);
      if (!std::holds_alternative<Frame>(decoded)) {
        ADD_FAILURE() << "the server sent a malformed frame";
        return std::nullopt;
      }
      const Frame& f = std::get<Frame>(decoded);
      if (skip_noise && (f.type == FrameType::kWindowUpdate || f.type == FrameType::kPing)) {
        continue;
      }
      return OwnedFrame{f.type,
                        f.flags,
                        f.stream_id,
                        f.code,
                        f.increment,
                        std::string(f.data),
                        std::string(f.reason)};
    }
  }

  // Reads until the server closes, returning the GOAWAY it sent first (if any).
  std::optional<OwnedFrame> goaway_then_close() {
    std::optional<OwnedFrame> goaway;
    while (auto frame = read()) {
      if (frame->type == FrameType::kGoaway) goaway = frame;
    }
    return goaway;
  }

  const std::string& close_reason() const { return close_reason_; }
  int close_code() const { return close_code_; }

 private:
  asio::io_context io_;
  asio::ssl::context context_;
  websocket::stream<asio::ssl::stream<asio::ip::tcp::socket>> ws_;
  std::string close_reason_;
  int close_code_ = 0;
};

std::string frame_bytes(uint8_t type, uint16_t flags, uint32_t stream, const std::string& payload) {
  std::string out;
  out += static_cast<char>(kProtocolVersion);
  out += static_cast<char>(type);
  out += static_cast<char>(flags >> 8);
  out += static_cast<char>(flags & 0xff);
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((stream >> shift) & 0xff);
  const auto size = static_cast<uint32_t>(payload.size());
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((size >> shift) & 0xff);
  return out + payload;
}

std::string open_frame(uint32_t stream, uint16_t flags = 0) {
  std::string out;
  encode_open(out, stream, flags, "raw", {});
  return out;
}

// A well-behaved call after the violation: the server is still serving.
void expect_server_still_serves(const ServerHarness& server) {
  RawPeer peer(server);
  peer.hello();
  std::string open;
  encode_open(open, 1, kFlagMessage | kFlagFin, "echo", "still alive");
  peer.send(open);
  auto reply = peer.read();
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->type, FrameType::kData);
  EXPECT_EQ(reply->data, "still alive");
}

void expect_goaway(RawPeer& peer, Errc code, const std::string& reason_part) {
  auto goaway = peer.goaway_then_close();
  ASSERT_TRUE(goaway.has_value()) << "no GOAWAY before the close";
  EXPECT_EQ(goaway->code, static_cast<uint32_t>(code)) << goaway->reason;
  EXPECT_NE(goaway->reason.find(reason_part), std::string::npos) << goaway->reason;
}

TEST(ProtocolViolationTest, FramesBeforeHelloCloseTheConnection) {
  ServerHarness server;
  RawPeer peer(server);
  peer.send(open_frame(1));
  auto hello = peer.read();  // the server's own HELLO comes first
  ASSERT_TRUE(hello.has_value());
  EXPECT_EQ(hello->type, FrameType::kHello);
  expect_goaway(peer, Errc::kProtocolError, "expected HELLO");
  expect_server_still_serves(server);
}

TEST(ProtocolViolationTest, TruncatedFrameClosesWithAReason) {
  ServerHarness server;
  RawPeer peer(server);
  peer.hello();
  peer.send(frame_bytes(3, 0, 1, "abcdef").substr(0, 14));
  expect_goaway(peer, Errc::kProtocolError, "truncated");
  expect_server_still_serves(server);
}

TEST(ProtocolViolationTest, UnknownFrameTypeClosesTheConnection) {
  ServerHarness server;
  RawPeer peer(server);
  peer.hello();
  peer.send(frame_bytes(77, 0, 1, ""));
  expect_goaway(peer, Errc::kProtocolError, "unknown frame type 77");
  expect_server_still_serves(server);
}

TEST(ProtocolViolationTest, OversizedMessageClosesTheConnection) {
  ServerHarness server;
  RawPeer peer(server);
  peer.hello();
  peer.send(frame_bytes(3, 0, 1, std::string(kMaxFramePayload + 100, 'x')));
  peer.goaway_then_close();
  EXPECT_EQ(peer.close_code(), static_cast<int>(websocket::close_code::too_big));
  expect_server_still_serves(server);
}

TEST(ProtocolViolationTest, TextMessageClosesTheConnection) {
  ServerHarness server;
  RawPeer peer(server);
  peer.hello();
  peer.send_text("{\"not\": \"a frame\"}");
  expect_goaway(peer, Errc::kProtocolError, "text");
  expect_server_still_serves(server);
}

TEST(ProtocolViolationTest, StreamIdOfTheWrongParityIsRefused) {
  ServerHarness server;
  RawPeer peer(server);
  peer.hello();
  peer.send(open_frame(2));  // clients open odd ids
  expect_goaway(peer, Errc::kProtocolError, "bad stream id");
  expect_server_still_serves(server);
}

TEST(ProtocolViolationTest, StreamIdsMustIncrease) {
  ServerHarness server;
  RawPeer peer(server);
  peer.hello();
  peer.send(open_frame(5));
  peer.send(open_frame(3));
  expect_goaway(peer, Errc::kProtocolError, "must increase");
  expect_server_still_serves(server);
}

TEST(ProtocolViolationTest, DataForAStreamNeverOpenedIsRefused) {
  ServerHarness server;
  RawPeer peer(server);
  peer.hello();
  peer.send(frame_bytes(3, 0, 99, "orphan"));
  expect_goaway(peer, Errc::kProtocolError, "never opened");
  expect_server_still_serves(server);
}

TEST(ProtocolViolationTest, ConnectionWindowOverflowClosesWithFlowControlError) {
  ServerHarness server;
  RawPeer peer(server);
  peer.hello();
  std::string update;
  encode_window_update(update, 0, kMaxWindow);
  peer.send(update);
  expect_goaway(peer, Errc::kFlowControlError, "window overflow");
  expect_server_still_serves(server);
}

TEST(ProtocolViolationTest, DataAfterHalfCloseResetsOnlyThatStream) {
  ServerHarness server;
  std::vector<std::shared_ptr<Stream>> held;
  std::mutex held_mutex;
  server.set_stream_handler([&](std::shared_ptr<Stream> stream) {
    std::lock_guard<std::mutex> lock(held_mutex);
    held.push_back(std::move(stream));  // keep it open, answer nothing
  });
  RawPeer peer(server);
  peer.hello();
  peer.send(open_frame(1, kFlagFin));  // opened and half-closed at once
  peer.send(frame_bytes(3, 0, 1, "too late"));
  auto reset = peer.read();
  ASSERT_TRUE(reset.has_value());
  EXPECT_EQ(reset->type, FrameType::kReset);
  EXPECT_EQ(reset->stream_id, 1u);
  EXPECT_EQ(reset->code, static_cast<uint32_t>(Errc::kStreamClosed));
  // The connection itself is fine: a PING is answered.
  std::string ping;
  encode_ping(ping, false, 0, 77);
  peer.send(ping);
  auto pong = peer.read();
  ASSERT_TRUE(pong.has_value());
  EXPECT_EQ(pong->type, FrameType::kPong);
}

TEST(ProtocolViolationTest, DataPastTheStreamWindowResetsOnlyThatStream) {
  ServerHarness server;
  std::vector<std::shared_ptr<Stream>> held;
  std::mutex held_mutex;
  server.set_stream_handler([&](std::shared_ptr<Stream> stream) {
    std::lock_guard<std::mutex> lock(held_mutex);
    held.push_back(std::move(stream));  // accepted, never read: its window only shrinks
  });
  RawPeer peer(server);
  peer.hello();
  peer.send(open_frame(1));
  for (int i = 0; i < 5; ++i) peer.send(frame_bytes(3, kFlagMore, 1, std::string(64 * 1024, 'x')));
  auto reset = peer.read();
  ASSERT_TRUE(reset.has_value());
  EXPECT_EQ(reset->type, FrameType::kReset);
  EXPECT_EQ(reset->code, static_cast<uint32_t>(Errc::kFlowControlError));
  std::string ping;
  encode_ping(ping, false, 0, 78);
  peer.send(ping);
  auto pong = peer.read();
  ASSERT_TRUE(pong.has_value());
  EXPECT_EQ(pong->type, FrameType::kPong);
}

}  // namespace
}  // namespace outpost::tunnel
