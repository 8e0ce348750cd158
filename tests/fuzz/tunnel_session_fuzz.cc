// Fuzzes a real tunnel Connection (tunnel/connection.cc) in the server role: its stream state
// machine (OPEN, DATA, HALF_CLOSE, RESET, WINDOW_UPDATE, PING, GOAWAY), message reassembly,
// stream ids and both levels of flow-control windows, as an agent that breaks every rule would
// drive them. Set up once: two TunnelServers on loopback with real TLS (default options, and
// tiny windows and limits so that small inputs reach the edges), whose stream handler does what
// the stream's metadata asks (echo, hold without reading, reset, open a stream back, drain,
// half-close, close the connection). Each input opens a fresh WebSocket connection and sends the
// frames the input describes, then waits (bounded) until the server has processed them.
//
// Input: byte 0 holds options (bit 0: send a valid HELLO first; bit 1: the tight server; bit 2:
// end with a WebSocket close instead of cutting the socket; bit 3: skip the final sync). Then one
// operation per tag byte, tag % 16: 0 HELLO, 1 OPEN, 2 DATA, 3 HALF_CLOSE, 4 RESET,
// 5 WINDOW_UPDATE, 6 PING, 7 PONG, 8 GOAWAY, 9 raw binary message, 10 raw text message,
// 11 sync (PING, wait for its PONG), 12 a large DATA, 13 a frame with any header fields,
// 14 DATA and 15 OPEN on a 32-bit stream id. Their fields come from the bytes that follow.
//
// Properties beyond "no crash, no sanitizer finding": every frame the server sends decodes; the
// server answers a PING within a bound while the connection is open; once the peer goes, the
// server's Connection ends (on_closed) within a bound and leaves its registry; and after a
// connection the server closed (a protocol violation), a new well-behaved connection still gets
// its call answered.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include "common/log.h"
#include "tests/support/test_pki.h"
#include "tunnel/frame_codec.h"
#include "tunnel/server.h"
#include "tunnel/tls.h"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using boost::system::error_code;
using outpost::tunnel::Connection;
using outpost::tunnel::Errc;
using outpost::tunnel::FrameType;
using outpost::tunnel::Stream;
using std::chrono::milliseconds;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "tunnel_session: %s\n", what);
  std::abort();
}

// ----- The server side: set up once ---------------------------------------------------------

void echo(const std::shared_ptr<Stream>& stream) {
  stream->async_read([stream](error_code ec, std::string message) {
    if (ec == Errc::kEndOfStream) return stream->close_write();
    if (ec) return;
    stream->async_write(std::move(message), false, [stream](error_code write_ec) {
      if (!write_ec) echo(stream);
    });
  });
}

struct Harness {
  Harness() : work(asio::make_work_guard(io)) {
    // Each input ends a connection, which the server logs: quiet unless asked for.
    if (std::getenv("OUTPOST_LOG_LEVEL") == nullptr) {
      outpost::log::set_min_severity(outpost::log::Severity::kError);
    }
    auto tls = outpost::tunnel::make_server_tls_context(pki.cert_file(), pki.key_file());
    if (!tls.ok()) fail("no server TLS context");
    outpost::tunnel::ServerOptions normal;
    normal.connection.close_timeout = milliseconds(500);
    outpost::tunnel::ServerOptions tight = normal;
    tight.connection.initial_stream_window = 512;
    tight.connection.max_stream_window = 2048;
    tight.connection.connection_window = 4096;
    tight.connection.max_message_size = 1024;
    tight.connection.max_peer_streams = 4;
    tight.connection.data_frame_size = 128;
    for (auto* options : {&normal, &tight}) {
      auto server = outpost::tunnel::TunnelServer::create(io, tls.value(), *options, handlers());
      auto port = server->listen("127.0.0.1", 0);
      if (!port.ok()) fail("cannot listen");
      servers.push_back(server);
      ports.push_back(port.value());
    }
    thread = std::thread([this] { io.run(); });
  }

  outpost::tunnel::TunnelServer::Handlers handlers() {
    outpost::tunnel::TunnelServer::Handlers h;
    h.authenticate = [](const std::string& credential, const outpost::tunnel::PeerInfo&,
                        const outpost::tunnel::TunnelServer::AuthDone& done) {
      if (credential == "fuzz-token") return done(std::string("node-1"));
      done(outpost::Error(outpost::ErrorCode::kUnauthenticated, "unknown credential"));
    };
    h.on_connection = [this](std::shared_ptr<Connection> connection,
                             const outpost::tunnel::PeerInfo&) {
      std::lock_guard<std::mutex> lock(mutex);
      latest = connection;
    };
    h.on_stream = [this](std::shared_ptr<Stream> stream, const outpost::tunnel::PeerInfo&) {
      on_stream(std::move(stream));
    };
    h.on_disconnect = [this](const outpost::tunnel::PeerInfo&, error_code, const std::string&) {
      std::lock_guard<std::mutex> lock(mutex);
      ++disconnects;
      changed.notify_all();
    };
    return h;
  }

  // What the application does with a stream the peer opened, by its metadata.
  void on_stream(std::shared_ptr<Stream> stream) {
    const std::string& what = stream->metadata();
    std::shared_ptr<Connection> connection;
    {
      std::lock_guard<std::mutex> lock(mutex);
      connection = latest.lock();
      if (what == "hold") return held.push_back(std::move(stream));
    }
    if (what == "reset") {
      stream->reset(Errc::kApplicationError, "the handler refuses");
    } else if (what == "open" && connection) {
      auto back = connection->open_stream("from-server", "first", true, false);
      echo(back);
      echo(stream);
      std::lock_guard<std::mutex> lock(mutex);
      held.push_back(back);
    } else if (what == "drain" && connection) {
      connection->drain(milliseconds(200));
      echo(stream);
    } else if (what == "fin") {
      stream->close_write();
      echo(stream);
    } else if (what == "small") {
      stream->set_max_message_size(16);
      echo(stream);
    } else if (what == "close" && connection) {
      connection->close(Errc::kInternalError, "the handler closes the connection");
    } else {
      echo(stream);
    }
  }

  // Waits until `count` connections have ended on the server, and releases held streams.
  void await_disconnects(size_t count) {
    std::unique_lock<std::mutex> lock(mutex);
    if (!changed.wait_for(lock, std::chrono::seconds(5), [&] { return disconnects >= count; })) {
      fail("the server kept a connection open after its peer went away");
    }
    held.clear();
    latest.reset();
    lock.unlock();
    for (const auto& server : servers) {
      if (server->connection_count() != 0) fail("a closed connection stayed in the registry");
    }
  }

  outpost::testing::TestPki pki{"fuzz"};
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::vector<std::shared_ptr<outpost::tunnel::TunnelServer>> servers;
  std::vector<uint16_t> ports;
  std::thread thread;

  std::mutex mutex;
  std::condition_variable changed;
  size_t disconnects = 0;
  std::weak_ptr<Connection> latest;
  std::vector<std::shared_ptr<Stream>> held;
};

// ----- The peer: one raw WebSocket connection per input, driven synchronously ---------------

using WebSocket = websocket::stream<beast::ssl_stream<beast::tcp_stream>>;

std::string frame(uint8_t type, uint16_t flags, uint32_t stream_id, std::string_view payload) {
  std::string out;
  out += static_cast<char>(outpost::tunnel::kProtocolVersion);
  out += static_cast<char>(type);
  out += static_cast<char>(flags >> 8);
  out += static_cast<char>(flags & 0xff);
  for (int shift = 24; shift >= 0; shift -= 8)
    out += static_cast<char>((stream_id >> shift) & 0xff);
  const auto size = static_cast<uint32_t>(payload.size());
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((size >> shift) & 0xff);
  out.append(payload);
  return out;
}

void put_u32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((v >> shift) & 0xff);
}

std::string hello_frame(uint32_t initial_window, uint32_t connection_window) {
  std::string payload(8, '\0');
  put_u32(payload, initial_window);
  put_u32(payload, connection_window);
  put_u32(payload, outpost::tunnel::kMaxFramePayload);
  payload += std::string(2, '\0');  // no peer id
  return frame(static_cast<uint8_t>(FrameType::kHello), 0, 0, payload);
}

class Peer {
 public:
  Peer(asio::io_context& io, asio::ssl::context& tls, uint16_t port) : io_(io), ws_(io, tls) {
    const asio::ip::tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), port);
    if (await([&](auto handler) { beast::get_lowest_layer(ws_).async_connect(endpoint, handler); },
              milliseconds(5000))) {
      fail("cannot connect to the server");
    }
    // Small frames go out at once, as the tunnel's own ends send them.
    beast::get_lowest_layer(ws_).socket().set_option(asio::ip::tcp::no_delay(true));
    if (await(
            [&](auto handler) {
              ws_.next_layer().async_handshake(asio::ssl::stream_base::client, handler);
            },
            milliseconds(5000))) {
      fail("TLS handshake with the server failed");
    }
    ws_.set_option(websocket::stream_base::decorator([](websocket::request_type& request) {
      request.set(beast::http::field::authorization, "Bearer fuzz-token");
      request.set(beast::http::field::sec_websocket_protocol, outpost::tunnel::kSubprotocol);
    }));
    if (await([&](auto handler) { ws_.async_handshake("localhost", "/v1/tunnel", handler); },
              milliseconds(5000))) {
      fail("the server refused a well-formed WebSocket upgrade");
    }
  }

  ~Peer() { cut(); }

  // False once the connection is gone.
  bool send(const std::string& bytes, bool text = false) {
    if (closed_) return false;
    ws_.text(text);
    if (await([&](auto handler) { ws_.async_write(asio::buffer(bytes), handler); },
              milliseconds(5000))) {
      closed_ = true;
    }
    return !closed_;
  }

  // Sends a PING and reads until its PONG: every frame sent before it has been processed.
  // False when the connection ended instead.
  bool sync() {
    const uint64_t opaque = 0x73796e6300000000ULL + ++pings_;
    std::string payload;
    put_u32(payload, static_cast<uint32_t>(opaque >> 32));
    put_u32(payload, static_cast<uint32_t>(opaque));
    if (!send(frame(static_cast<uint8_t>(FrameType::kPing), 0, 0, payload))) return false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!closed_) {
      const auto left =
          std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) fail("the server did not answer a PING on an open connection");
      auto received = read(left);
      if (!received) break;
      if (received->type == FrameType::kPong && received->opaque == opaque) return true;
    }
    return false;
  }

  struct Received {
    FrameType type;
    uint32_t stream_id;
    uint64_t opaque;
    std::string data;
  };

  // The next frame from the server; nullopt once the connection ended.
  std::optional<Received> read(milliseconds limit) {
    if (closed_) return std::nullopt;
    beast::flat_buffer buffer;
    if (await([&](auto handler) { ws_.async_read(buffer, handler); }, limit)) {
      closed_ = true;
      return std::nullopt;
    }
    const std::string bytes = beast::buffers_to_string(buffer.data());
    auto decoded = outpost::tunnel::decode_frame(bytes);
    if (!std::holds_alternative<outpost::tunnel::Frame>(decoded)) {
      fail("the server sent a frame that does not decode");
    }
    const auto& f = std::get<outpost::tunnel::Frame>(decoded);
    if (f.type == FrameType::kGoaway) saw_goaway_ = true;
    return Received{f.type, f.stream_id, f.opaque, std::string(f.data)};
  }

  void close_handshake() {
    if (closed_) return;
    (void)await([&](auto handler) { ws_.async_close(websocket::close_code::normal, handler); },
                milliseconds(2000));
    closed_ = true;
  }

  void cut() {
    error_code ignored;
    beast::get_lowest_layer(ws_).socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(ws_).close();
    closed_ = true;
  }

  bool closed() const { return closed_; }
  // The server ended the connection on its own (a GOAWAY, or a close before ours).
  bool server_ended() const { return saw_goaway_ || closed_; }

 private:
  // Runs one asynchronous operation to completion, or cuts the socket after `limit`. Returns
  // its error.
  template <class Start>
  error_code await(Start&& start, milliseconds limit) {
    std::optional<error_code> result;
    start([&result](error_code ec, auto&&...) { result = ec; });
    io_.restart();
    io_.run_for(limit);
    if (!result) {
      beast::get_lowest_layer(ws_).close();
      io_.restart();
      io_.run();
      return asio::error::timed_out;
    }
    return *result;
  }

  asio::io_context& io_;
  WebSocket ws_;
  bool closed_ = false;
  bool saw_goaway_ = false;
  uint64_t pings_ = 0;
};

// ----- Input decoding ---------------------------------------------------------------------------

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return at_ >= size_; }
  uint8_t byte() { return at_ < size_ ? data_[at_++] : 0; }
  uint32_t u32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | byte();
    return v;
  }
  std::string bytes(size_t n) {
    n = std::min(n, size_ - std::min(at_, size_));
    std::string out(reinterpret_cast<const char*>(data_ + at_), n);
    at_ += n;
    return out;
  }
  // A length byte, then that many bytes.
  std::string counted() { return bytes(byte()); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
};

// Small ids (both parities, and 0) collide often; the top values reach the edges of the space.
uint32_t stream_id(uint8_t b) {
  switch (b) {
    case 0xfa:
      return 0x7ffffffe;
    case 0xfb:
      return 0x7fffffff;
    case 0xfc:
      return 0x80000000;
    case 0xfd:
      return 0xfffffffe;
    case 0xfe:
      return 0xffffffff;
    default:
      return b;
  }
}

std::string metadata(uint8_t b, Reader& in) {
  static const char* const kBehaviours[] = {"echo",  "hold", "reset", "open",
                                            "drain", "fin",  "small", "close"};
  if (b < 8) return kBehaviours[b];
  if (b == 8) return in.counted();
  return "echo";
}

uint8_t type_of(FrameType type) { return static_cast<uint8_t>(type); }

// Sends the input's operations; false once the connection is gone.
bool run_operations(Peer& peer, Reader& in) {
  while (!in.done()) {
    const uint8_t tag = in.byte();
    bool sent = true;
    switch (tag % 16) {
      case 0: {  // HELLO with windows from the input
        const uint32_t initial = 1 + ((static_cast<uint32_t>(in.byte()) << 8) | in.byte()) * 8;
        const uint32_t connection = 1 + ((static_cast<uint32_t>(in.byte()) << 8) | in.byte()) * 64;
        sent = peer.send(hello_frame(initial, connection));
        break;
      }
      case 1: {  // OPEN: stream, flags, metadata, first bytes
        const uint32_t id = stream_id(in.byte());
        const uint16_t flags = in.byte() & 0x0f;
        const std::string meta = metadata(in.byte(), in);
        std::string payload;
        put_u32(payload, static_cast<uint32_t>(meta.size()));
        payload += meta + in.counted();
        sent = peer.send(frame(type_of(FrameType::kOpen), flags, id, payload));
        break;
      }
      case 2: {  // DATA: stream, flags, bytes
        const uint32_t id = stream_id(in.byte());
        const uint16_t flags = in.byte() & 0x07;
        sent = peer.send(frame(type_of(FrameType::kData), flags, id, in.counted()));
        break;
      }
      case 3:
        sent = peer.send(frame(type_of(FrameType::kHalfClose), 0, stream_id(in.byte()), {}));
        break;
      case 4:
      case 8: {  // RESET / GOAWAY: stream or last stream, code, reason
        const bool goaway = tag % 16 == 8;
        const uint32_t id = stream_id(in.byte());
        std::string payload;
        if (goaway) put_u32(payload, id);
        put_u32(payload, in.byte());
        payload += in.counted();
        sent = peer.send(frame(type_of(goaway ? FrameType::kGoaway : FrameType::kReset), 0,
                               goaway ? 0 : id, payload));
        break;
      }
      case 5: {  // WINDOW_UPDATE: stream, increment (any u32, zero and overflow included)
        const uint32_t id = stream_id(in.byte());
        std::string payload;
        put_u32(payload, (tag & 0x10) != 0 ? in.u32() : in.byte() * 256u);
        sent = peer.send(frame(type_of(FrameType::kWindowUpdate), 0, id, payload));
        break;
      }
      case 6:
      case 7: {  // PING / PONG: flags, opaque
        const uint16_t flags = in.byte() & 0x05;
        std::string payload;
        put_u32(payload, 0);
        put_u32(payload, in.byte());
        sent = peer.send(
            frame(type_of(tag % 16 == 6 ? FrameType::kPing : FrameType::kPong), flags, 0, payload));
        break;
      }
      case 9:
        sent = peer.send(in.counted());
        break;
      case 10:
        sent = peer.send(in.counted(), true);
        break;
      case 11:
        sent = peer.sync();
        break;
      case 12: {  // a large DATA: up to 255 * 512 bytes, past one frame's limit
        const uint32_t id = stream_id(in.byte());
        const uint16_t flags = in.byte() & 0x07;
        sent = peer.send(
            frame(type_of(FrameType::kData), flags, id, std::string(in.byte() * 512u, 'x')));
        break;
      }
      case 13: {  // any header fields
        const uint8_t type = in.byte();
        const auto flags = static_cast<uint16_t>((in.byte() << 8) | in.byte());
        const uint32_t id = in.u32();
        sent = peer.send(frame(type, flags, id, in.counted()));
        break;
      }
      case 14:
        sent =
            peer.send(frame(type_of(FrameType::kData), in.byte() & 0x03, in.u32(), in.counted()));
        break;
      default: {  // 15: OPEN on a 32-bit id
        const uint32_t id = in.u32();
        std::string payload;
        put_u32(payload, 4);
        payload += "echo";
        sent = peer.send(frame(type_of(FrameType::kOpen), 0, id, payload));
        break;
      }
    }
    if (!sent) return false;
  }
  return true;
}

// A well-behaved call on a new connection: the server still serves after what came before.
void expect_still_serving(Harness& harness, asio::io_context& io, asio::ssl::context& tls,
                          uint16_t port, size_t& connections) {
  Peer peer(io, tls, port);
  ++connections;
  if (!peer.send(hello_frame(256 * 1024, 1024 * 1024))) fail("a new connection was cut");
  std::string payload;
  put_u32(payload, 4);
  payload += "echo";
  payload += "still alive";
  peer.send(frame(type_of(FrameType::kOpen),
                  outpost::tunnel::kFlagMessage | outpost::tunnel::kFlagFin, 1, payload));
  for (;;) {
    auto received = peer.read(milliseconds(5000));
    if (!received) fail("a well-behaved call after a protocol violation got no answer");
    if (received->type == FrameType::kData && received->stream_id == 1) {
      if (received->data != "still alive") fail("a well-behaved call got a wrong answer");
      break;
    }
  }
  peer.cut();
  harness.await_disconnects(connections);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness* const harness = new Harness();  // never destroyed: outlives every input
  static asio::io_context io;
  static asio::ssl::context tls(asio::ssl::context::tls_client);
  static size_t connections = 0;  // upgrades so far: each ends in one on_disconnect

  Reader in(data, size);
  const uint8_t options = in.byte();
  const uint16_t port = harness->ports[(options & 0x02) != 0 ? 1 : 0];
  bool server_ended = false;
  {
    Peer peer(io, tls, port);
    ++connections;
    bool open = true;
    if ((options & 0x01) != 0) open = peer.send(hello_frame(256 * 1024, 1024 * 1024));
    if (open) open = run_operations(peer, in);
    if (open && (options & 0x08) == 0) peer.sync();
    server_ended = peer.server_ended();
    if ((options & 0x04) != 0) {
      peer.close_handshake();
    } else {
      peer.cut();
    }
  }
  harness->await_disconnects(connections);
  if (server_ended) expect_still_serving(*harness, io, tls, port, connections);
  return 0;
}
