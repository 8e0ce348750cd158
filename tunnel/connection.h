// One tunnel connection: a TLS WebSocket carrying many streams (docs/protocol.md).
//
// The connection owns the socket and does three things on its strand:
//  - a reader that decodes each frame and hands its bytes to the stream, never waiting on any
//    stream: a stream's unread bytes are bounded by the credit its reader granted;
//  - one writer that sends control frames (PONG, RESET, WINDOW_UPDATE, ...) before data and
//    takes data round-robin from the streams that have both bytes and credit, so a large or
//    stalled stream cannot delay the others;
//  - a keepalive that pings every ping_interval and declares the peer dead after dead_after of
//    silence, or when one write stalls for write_timeout.
//
// Streams are opened by either end (client ids odd, server ids even). Every public method is
// thread-safe; handlers run on the connection's strand and must not block. Called from a
// handler (on the strand), stream operations run at once, so a handler may find its next
// handler already called before it returns.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

#include "common/clock.h"
#include "tunnel/error.h"
#include "tunnel/frame_codec.h"

namespace outpost::tunnel {

class WsTransport;
class Connection;

struct ConnectionOptions {
  uint32_t initial_stream_window = 256 * 1024;    // credit granted to each new stream
  uint32_t max_stream_window = 8 * 1024 * 1024;   // how far a fast stream's window may grow
  uint32_t connection_window = 32 * 1024 * 1024;  // credit for all streams together
  size_t max_message_size = 64 * 1024 * 1024;     // default per-stream reassembly limit
  uint32_t max_peer_streams = 4096;               // concurrent streams the peer may open
  // The largest DATA payload this end sends (the protocol allows 64 KiB). One TLS record's
  // worth: a small reply waits behind at most this much of a bulk transfer, at each end, while
  // a bulk transfer keeps over 0.8x the throughput of 64 KiB frames (scripts/bench tunnel).
  uint32_t data_frame_size = 16 * 1024;
  // Keepalive. Any frame counts as life, so a busy connection needs no PING answered; an idle
  // one is declared dead after dead_after without a frame: four PINGs unanswered, so one lost
  // packet or a peer stalled for a second or two (a loaded host, a sanitizer build) is not a
  // death, while a silent partition is noticed within dead_after + ping_interval / 2
  // (docs/reliability.md, "Partitions").
  std::chrono::milliseconds ping_interval{2'000};
  std::chrono::milliseconds dead_after{8'000};      // silence after which the peer is dead
  std::chrono::milliseconds write_timeout{10'000};  // one write stalled this long: dead
  std::chrono::milliseconds close_timeout{5'000};   // the closing handshake may take this long
  std::string local_id;                             // announced in HELLO (<= 255 bytes)
  // The application's own feature bits (32..63; the tunnel's are below), announced in HELLO
  // beside the tunnel's, so that the two ends of a connection can agree on optional behaviour
  // without a version bump. The peer's are in Connection::peer_features().
  uint64_t application_features = 0;
};

// One bidirectional stream of messages. A message is any byte string (up to the stream's
// max_message_size); the tunnel splits it into frames and the peer gets it whole.
class Stream : public std::enable_shared_from_this<Stream> {
 public:
  using ReadHandler = std::function<void(boost::system::error_code, std::string message)>;
  using WriteHandler = std::function<void(boost::system::error_code)>;

  uint32_t id() const { return id_; }
  // What the opener put in OPEN: the call's routing header (method, deployment, ...).
  const std::string& metadata() const { return metadata_; }
  bool locally_opened() const { return locally_opened_; }

  // Reads the next whole message. The handler gets Errc::kEndOfStream once the peer has
  // half-closed and every message has been read; a reset stream reports the peer's code
  // (reset_reason() has its text) and a dead connection kTunnelLost. One read at a time.
  void async_read(ReadHandler handler);

  // Queues a message; end_stream half-closes after it. The handler runs once every byte of the
  // message had credit and was framed: a writer that waits for its handler before the next
  // write can never outrun its reader. Writes after a half-close or a reset fail.
  void async_write(std::string message, bool end_stream, WriteHandler handler);

  // Half-closes without a message: the peer's reads end with kEndOfStream.
  void close_write();

  // Ends the stream in both directions at once (cancellation, from either end). Pending reads
  // and writes fail with `code`; the peer's fail with the same code and reason.
  void reset(Errc code = Errc::kCancel, std::string reason = {});

  // Messages larger than this make the stream reset with kMessageTooLarge.
  void set_max_message_size(size_t bytes);

  // The reason text of the reset or connection loss that ended the stream ("" while open).
  std::string reset_reason() const;

  // For tests and metrics: bytes received but not yet read by the application.
  size_t buffered_bytes() const { return buffered_.load(); }

  Stream(std::shared_ptr<Connection> connection, uint32_t id, std::string metadata,
         bool locally_opened);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

 private:
  friend class Connection;

  struct Chunk {
    std::string data;
    bool more;  // the message continues in the next chunk
  };
  struct Outgoing {
    std::string data;
    size_t offset = 0;
    bool end_stream = false;
    WriteHandler handler;
  };

  // All below run on the connection's strand.
  void do_read(ReadHandler handler);
  void do_write(Outgoing message);
  void do_close_write();
  void do_reset(Errc code, std::string reason);
  void on_data(std::string_view data, bool more);
  void deliver();
  // Fails pending operations, drops queues, leaves the stream closed with `code`.
  void terminate(Errc code, std::string reason);
  bool wants_write() const;
  // Appends one frame to `out` if the stream can send something with `connection_credit`.
  // Returns the DATA bytes used (0 also for frames that need no credit); sets `produced`.
  size_t produce_frame(std::string& out, int64_t connection_credit, uint32_t max_payload,
                       bool& produced);
  bool finished() const { return (fin_sent_ && peer_fin_) || terminated_; }

  std::shared_ptr<Connection> connection_;
  const uint32_t id_;
  const std::string metadata_;
  const bool locally_opened_;

  // Receive side.
  std::deque<Chunk> chunks_;
  std::atomic<size_t> buffered_{0};
  std::string assembly_;
  ReadHandler read_handler_;
  bool peer_fin_ = false;
  size_t max_message_size_;
  uint32_t recv_window_size_;  // the window we currently grant
  int64_t recv_available_;     // bytes the peer may still send
  uint32_t credit_owed_ = 0;   // consumed bytes not yet returned

  // Send side.
  std::deque<Outgoing> outgoing_;
  int64_t send_window_ = 0;
  bool open_sent_ = false;
  bool fin_queued_ = false;
  bool fin_sent_ = false;
  bool in_ready_list_ = false;

  bool terminated_ = false;
  Errc end_code_ = Errc::kNoError;
  mutable std::mutex reason_mutex_;
  std::string reason_;
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  enum class Role { kClient, kServer };

  struct Handlers {
    // The peer's HELLO arrived: streams may be opened and their data flows.
    std::function<void(const Hello& peer)> on_ready;
    // The peer opened a stream. Keep it, read it, and end it (FIN both ways, or reset).
    std::function<void(std::shared_ptr<Stream>)> on_stream;
    // The peer is draining: it accepts no new streams; open ones continue.
    std::function<void(Errc code, const std::string& reason)> on_goaway;
    // The connection ended; every open stream failed with kTunnelLost. Called once.
    std::function<void(boost::system::error_code, const std::string& reason)> on_closed;
  };

  // `transport` is an upgraded WebSocket whose executor is a strand.
  static std::shared_ptr<Connection> create(std::unique_ptr<WsTransport> transport, Role role,
                                            ConnectionOptions options);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Sends HELLO and starts reading. Handlers must be set before.
  void start(Handlers handlers);

  // Opens a stream. Never fails synchronously: on a closed or draining connection the stream's
  // first read or write reports kNotConnected or kRefusedStream. `first_message` (optional) and
  // `end_stream` travel in the OPEN frame itself, so a unary call is one frame each way.
  std::shared_ptr<Stream> open_stream(std::string metadata, std::string first_message = {},
                                      bool send_first_message = false, bool end_stream = false);

  // Graceful drain: GOAWAY to the peer, no new streams either way, open streams continue; the
  // connection closes once they are done, or after `grace` with the rest reset.
  void drain(std::chrono::milliseconds grace, Errc code = Errc::kGoingAway,
             std::string reason = "draining");

  // Ends the connection now: GOAWAY with `code` and `reason`, WebSocket close, streams fail.
  void close(Errc code, std::string reason);

  // Snapshot values, safe from any thread.
  bool is_open() const { return !closed_.load(); }
  bool is_ready() const { return ready_.load(); }
  bool is_draining() const { return draining_.load(); }
  // Either end sent GOAWAY: the connection finishes its streams and takes no new ones.
  bool is_going_away() const { return draining_.load() || goaway_received_.load(); }
  size_t stream_count() const { return stream_count_.load(); }
  std::string peer_id() const;
  // The feature bits of the peer's HELLO (0 before it arrived).
  uint64_t peer_features() const { return peer_features_.load(); }
  // Time since the last frame from the peer. Each end PINGs every ping_interval, so a live peer
  // is never silent for much longer than that; one silent for two intervals is suspect (its
  // link may be gone) well before dead_after declares it dead.
  std::chrono::milliseconds silence() const;
  // Not suspect: where a new stream should go when there is a choice.
  bool is_responsive() const { return silence() <= 2 * options_.ping_interval; }
  // Round-trip time of the last PING, or zero before the first PONG.
  std::chrono::microseconds rtt() const { return std::chrono::microseconds(rtt_us_.load()); }
  // The largest window a fast stream may currently grow to (bandwidth-delay estimate).
  uint32_t stream_window_target() const { return window_target_.load(); }

 private:
  friend class Stream;
  Connection(std::unique_ptr<WsTransport> transport, Role role, ConnectionOptions options);

  // Strand-only.
  void do_start();
  void read_next();
  void on_read(boost::system::error_code ec, size_t bytes);
  void handle_frame(const Frame& frame);
  void handle_hello(const Frame& frame);
  void handle_open(const Frame& frame);
  void handle_stream_data(const Frame& frame);
  void handle_reset(const Frame& frame);
  void handle_window_update(const Frame& frame);
  void handle_pong(const Frame& frame);
  void handle_goaway(const Frame& frame);
  void do_open(const std::shared_ptr<Stream>& stream, std::string first_message,
               bool send_first_message, bool end_stream);
  bool is_peer_stream_id(uint32_t id) const;
  bool was_used(uint32_t id) const;
  void queue_control(std::string frame);
  void send_reset(uint32_t stream_id, Errc code, std::string_view reason);
  void mark_ready(const std::shared_ptr<Stream>& stream);
  void schedule_write();
  void write_next();
  void on_write(boost::system::error_code ec);
  // A stream's reader consumed bytes: return credit to the peer when worth a frame.
  void on_consumed(Stream& stream, size_t bytes);
  void refund_connection_credit(size_t bytes);
  void remove_stream(uint32_t id);
  void maybe_finish_drain();
  void arm_keepalive();
  void on_keepalive(boost::system::error_code ec);
  enum class CloseMode {
    kAbort,   // the socket is gone or the peer is dead: just close it
    kClose,   // WebSocket closing handshake
    kGoaway,  // GOAWAY saying why, then the closing handshake
  };
  // Ends the connection with `code`: every stream fails with kTunnelLost, on_closed runs.
  void fail(Errc code, const std::string& reason, CloseMode mode);
  void shutdown_transport();
  void finish_close();
  void post(std::function<void()> fn);
  // Runs `fn` now when called on the connection's strand, else posts it there.
  void dispatch(std::function<void()> fn);

  std::unique_ptr<WsTransport> transport_;
  boost::asio::any_io_executor executor_;
  const Role role_;
  const ConnectionOptions options_;
  Handlers handlers_;

  std::unordered_map<uint32_t, std::shared_ptr<Stream>> streams_;
  std::atomic<uint32_t> next_local_id_;
  uint32_t last_peer_id_ = 0;
  uint32_t peer_streams_ = 0;
  Hello peer_hello_;
  std::string peer_id_storage_;
  mutable std::mutex peer_id_mutex_;
  bool hello_received_ = false;
  std::atomic<uint64_t> peer_features_{0};
  uint32_t peer_max_payload_ = kMaxFramePayload;
  uint32_t peer_initial_window_ = 0;

  // Flow control, connection level.
  int64_t send_window_ = 0;  // credit the peer granted us
  int64_t recv_available_;   // bytes the peer may still send
  uint32_t connection_credit_owed_ = 0;

  // Window auto-tuning (bandwidth-delay product probe, as gRPC does).
  bool bdp_ping_outstanding_ = false;
  uint64_t bdp_bytes_ = 0;
  TimePoint bdp_ping_sent_;
  double bdp_max_bandwidth_ = 0;
  std::atomic<uint32_t> window_target_;
  std::atomic<int64_t> rtt_us_{0};
  uint64_t next_ping_opaque_ = 1;

  // Writer.
  std::deque<std::string> control_;
  std::deque<std::shared_ptr<Stream>> ready_list_;
  std::string write_buffer_;
  bool writing_ = false;
  std::vector<Stream::WriteHandler> completed_writes_;
  TimePoint write_started_;

  // Keepalive.
  boost::asio::steady_timer keepalive_timer_;
  TimePoint last_received_;
  std::atomic<int64_t> last_received_ns_{0};  // last_received_, for silence() from any thread
  TimePoint last_ping_sent_;

  // Life cycle.
  std::atomic<bool> ready_{false};
  std::atomic<bool> closed_{false};
  std::atomic<bool> draining_{false};
  std::atomic<size_t> stream_count_{0};
  std::atomic<bool> goaway_received_{false};
  uint32_t peer_last_accepted_id_ = kMaxWindow;
  // The peer's GOAWAY, once received: why the connection ends when the peer then closes it.
  Errc peer_goaway_code_ = Errc::kNoError;
  std::string peer_goaway_reason_;
  bool closing_handshake_ = false;  // a WebSocket close is queued or in flight
  bool transport_shut_ = false;
  bool close_notified_ = false;
  boost::system::error_code close_code_;
  std::string close_reason_;
  boost::asio::steady_timer drain_timer_;
  boost::asio::steady_timer close_timer_;
};

}  // namespace outpost::tunnel
