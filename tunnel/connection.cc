#include "tunnel/connection.h"

#include <algorithm>
#include <cassert>
#include <utility>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>

#include "common/log.h"
#include "tunnel/ws_transport.h"

namespace outpost::tunnel {

namespace websocket = boost::beast::websocket;
using boost::system::error_code;

namespace {

int64_t elapsed_us(TimePoint from, TimePoint to) {
  return std::chrono::duration_cast<std::chrono::microseconds>(to - from).count();
}

websocket::close_code close_code_for(Errc code) {
  switch (code) {
    case Errc::kNoError:
      return websocket::close_code::normal;
    case Errc::kGoingAway:
    case Errc::kReplaced:
      return websocket::close_code::going_away;
    case Errc::kProtocolError:
    case Errc::kFlowControlError:
      return websocket::close_code::protocol_error;
    case Errc::kFrameTooLarge:
      return websocket::close_code::too_big;
    default:
      return websocket::close_code::internal_error;
  }
}

TimePoint now() { return std::chrono::steady_clock::now(); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Stream

Stream::Stream(std::shared_ptr<Connection> connection, uint32_t id, std::string metadata,
               bool locally_opened)
    : connection_(std::move(connection)),
      id_(id),
      metadata_(std::move(metadata)),
      locally_opened_(locally_opened),
      max_message_size_(connection_->options_.max_message_size),
      recv_window_size_(connection_->options_.initial_stream_window),
      recv_available_(connection_->options_.initial_stream_window) {}

void Stream::async_read(ReadHandler handler) {
  connection_->dispatch([self = shared_from_this(), handler = std::move(handler)]() mutable {
    self->do_read(std::move(handler));
  });
}

void Stream::async_write(std::string message, bool end_stream, WriteHandler handler) {
  connection_->dispatch([self = shared_from_this(), message = std::move(message), end_stream,
                         handler = std::move(handler)]() mutable {
    self->do_write(Outgoing{std::move(message), 0, end_stream, std::move(handler)});
  });
}

void Stream::close_write() {
  connection_->dispatch([self = shared_from_this()] { self->do_close_write(); });
}

void Stream::reset(Errc code, std::string reason) {
  connection_->dispatch([self = shared_from_this(), code, reason = std::move(reason)]() mutable {
    self->do_reset(code, std::move(reason));
  });
}

void Stream::set_max_message_size(size_t bytes) {
  connection_->dispatch([self = shared_from_this(), bytes] { self->max_message_size_ = bytes; });
}

std::string Stream::reset_reason() const {
  std::lock_guard<std::mutex> lock(reason_mutex_);
  return reason_;
}

void Stream::do_read(ReadHandler handler) {
  if (read_handler_) {
    handler(make_error_code(Errc::kInternalError), {});  // a second concurrent read: caller bug
    return;
  }
  read_handler_ = std::move(handler);
  deliver();
}

void Stream::do_write(Outgoing message) {
  if (terminated_ || fin_queued_) {
    const Errc code = terminated_ ? end_code_ : Errc::kStreamClosed;
    if (message.handler) message.handler(make_error_code(code));
    return;
  }
  if (message.end_stream) fin_queued_ = true;
  outgoing_.push_back(std::move(message));
  connection_->mark_ready(shared_from_this());
}

void Stream::do_close_write() {
  if (terminated_ || fin_queued_) return;
  fin_queued_ = true;
  connection_->mark_ready(shared_from_this());
}

void Stream::do_reset(Errc code, std::string reason) {
  if (terminated_ || finished()) return;
  // A stream the peer never heard of needs no RESET on the wire.
  if (!locally_opened_ || open_sent_) connection_->send_reset(id_, code, reason);
  terminate(code, std::move(reason));
  connection_->remove_stream(id_);
}

Stream::~Stream() {
  // Bytes the application never read still hold connection credit: give it back.
  const size_t unread = buffered_.load();
  if (unread > 0) {
    boost::asio::post(connection_->executor_, [connection = connection_, unread] {
      connection->refund_connection_credit(unread);
    });
  }
}

void Stream::on_data(std::string_view data, bool more) {
  chunks_.push_back(Chunk{std::string(data), more});
  buffered_.fetch_add(data.size());
}

void Stream::deliver() {
  if (!read_handler_) return;
  if (terminated_) {
    auto handler = std::move(read_handler_);
    read_handler_ = nullptr;
    handler(make_error_code(end_code_), {});
    return;
  }
  while (!chunks_.empty()) {
    Chunk& chunk = chunks_.front();
    const size_t size = chunk.data.size();
    if (assembly_.size() + size > max_message_size_) {
      // Resetting fails the pending read with kMessageTooLarge.
      do_reset(Errc::kMessageTooLarge, "message larger than the stream's limit of " +
                                           std::to_string(max_message_size_) + " bytes");
      return;
    }
    const bool complete = !chunk.more;
    std::string message;
    if (assembly_.empty() && complete) {
      message = std::move(chunk.data);
    } else {
      assembly_.append(chunk.data);
      if (complete) {
        message = std::move(assembly_);
        assembly_.clear();
      }
    }
    chunks_.pop_front();
    buffered_.fetch_sub(size);
    connection_->on_consumed(*this, size);
    if (complete) {
      auto handler = std::move(read_handler_);
      read_handler_ = nullptr;
      handler({}, std::move(message));
      return;
    }
  }
  if (peer_fin_) {
    auto handler = std::move(read_handler_);
    read_handler_ = nullptr;
    if (!assembly_.empty()) {
      handler(make_error_code(Errc::kProtocolError), {});
      return;
    }
    handler(make_error_code(Errc::kEndOfStream), {});
  }
}

void Stream::terminate(Errc code, std::string reason) {
  if (terminated_) return;
  terminated_ = true;
  end_code_ = code;
  {
    std::lock_guard<std::mutex> lock(reason_mutex_);
    reason_ = std::move(reason);
  }
  size_t unread = 0;
  for (const auto& chunk : chunks_) unread += chunk.data.size();
  chunks_.clear();
  buffered_.store(0);
  assembly_.clear();
  connection_->refund_connection_credit(unread);
  auto pending = std::move(outgoing_);
  outgoing_.clear();
  for (auto& message : pending) {
    if (message.handler) message.handler(make_error_code(code));
  }
  deliver();
}

bool Stream::wants_write() const {
  if (terminated_) return false;
  if (!outgoing_.empty()) return true;
  if (locally_opened_ && !open_sent_) return true;
  return fin_queued_ && !fin_sent_;
}

size_t Stream::produce_frame(std::string& out, int64_t connection_credit, uint32_t max_payload,
                             bool& produced) {
  produced = false;
  if (terminated_) return 0;
  const bool opening = locally_opened_ && !open_sent_;
  if (!outgoing_.empty()) {
    Outgoing& message = outgoing_.front();
    const size_t remaining = message.data.size() - message.offset;
    const size_t header_room = opening ? 4 + metadata_.size() : 0;
    const int64_t credit = std::max<int64_t>(0, std::min(send_window_, connection_credit));
    const size_t n = std::min(
        {remaining, static_cast<size_t>(max_payload) - header_room, static_cast<size_t>(credit)});
    if (n == 0 && remaining > 0) {
      if (!opening) return 0;  // blocked on credit
      encode_open(out, id_, 0, metadata_, {});
      open_sent_ = true;
      produced = true;
      return 0;
    }
    const bool done = n == remaining;
    uint16_t flags = done ? 0 : kFlagMore;
    if (done && message.end_stream) flags |= kFlagFin;
    const std::string_view slice(message.data.data() + message.offset, n);
    if (opening) {
      encode_open(out, id_, flags | kFlagMessage, metadata_, slice);
      open_sent_ = true;
    } else {
      encode_data(out, id_, flags, slice);
    }
    message.offset += n;
    send_window_ -= static_cast<int64_t>(n);
    produced = true;
    if (done) {
      if (message.end_stream) fin_sent_ = true;
      // Run by the connection once the frame's write has started.
      if (message.handler) connection_->completed_writes_.push_back(std::move(message.handler));
      outgoing_.pop_front();
    }
    return n;
  }
  if (fin_queued_ && !fin_sent_) {
    if (opening) {
      encode_open(out, id_, kFlagFin, metadata_, {});
      open_sent_ = true;
    } else {
      encode_half_close(out, id_);
    }
    fin_sent_ = true;
    produced = true;
    return 0;
  }
  if (opening) {
    encode_open(out, id_, 0, metadata_, {});
    open_sent_ = true;
    produced = true;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Connection

std::shared_ptr<Connection> Connection::create(std::unique_ptr<WsTransport> transport, Role role,
                                               ConnectionOptions options) {
  return std::shared_ptr<Connection>(
      new Connection(std::move(transport), role, std::move(options)));
}

Connection::Connection(std::unique_ptr<WsTransport> transport, Role role, ConnectionOptions options)
    : transport_(std::move(transport)),
      executor_(transport_->ws().get_executor()),
      role_(role),
      options_(std::move(options)),
      next_local_id_(role == Role::kClient ? 1 : 2),
      recv_available_(options_.connection_window),
      window_target_(options_.initial_stream_window),
      keepalive_timer_(executor_),
      drain_timer_(executor_),
      close_timer_(executor_) {}

Connection::~Connection() = default;

void Connection::post(std::function<void()> fn) { boost::asio::post(executor_, std::move(fn)); }

void Connection::dispatch(std::function<void()> fn) {
  boost::asio::dispatch(executor_, std::move(fn));
}

void Connection::start(Handlers handlers) {
  post([self = shared_from_this(), handlers = std::move(handlers)]() mutable {
    self->handlers_ = std::move(handlers);
    self->do_start();
  });
}

std::chrono::milliseconds Connection::silence() const {
  const int64_t last = last_received_ns_.load(std::memory_order_relaxed);
  if (last == 0) return std::chrono::milliseconds(0);  // not started: nothing to suspect yet
  return std::chrono::duration_cast<std::chrono::milliseconds>(
      now() - TimePoint(TimePoint::duration(last)));
}

std::string Connection::peer_id() const {
  std::lock_guard<std::mutex> lock(peer_id_mutex_);
  return peer_id_storage_;
}

void Connection::do_start() {
  auto& ws = transport_->ws();
  ws.binary(true);
  ws.auto_fragment(false);
  ws.read_message_max(kHeaderSize + kMaxFramePayload);
  websocket::stream_base::timeout timeouts{};
  timeouts.handshake_timeout = options_.close_timeout;
  timeouts.idle_timeout = websocket::stream_base::none();  // our own PING does liveness
  timeouts.keep_alive_pings = false;
  ws.set_option(timeouts);
  last_received_ = now();
  last_received_ns_.store(last_received_.time_since_epoch().count());
  last_ping_sent_ = last_received_;
  Hello hello;
  hello.features = kFeatureWindowAutoTune | (options_.application_features & kApplicationFeatures);
  hello.initial_window = options_.initial_stream_window;
  hello.connection_window = options_.connection_window;
  hello.max_frame_payload = kMaxFramePayload;
  hello.peer_id = std::string_view(options_.local_id).substr(0, kMaxPeerIdSize);
  std::string frame;
  encode_hello(frame, hello);
  queue_control(std::move(frame));
  read_next();
  arm_keepalive();
}

void Connection::read_next() {
  transport_->ws().async_read(
      transport_->read_buffer(),
      [self = shared_from_this()](error_code ec, size_t bytes) { self->on_read(ec, bytes); });
}

void Connection::on_read(error_code ec, size_t bytes) {
  (void)bytes;
  auto& buffer = transport_->read_buffer();
  if (ec) {
    if (closed_) return;
    if (ec == websocket::error::closed && goaway_received_) {
      // The peer said why before closing (replaced, going away...): that is the reason.
      fail(peer_goaway_code_, "peer went away: " + peer_goaway_reason_, CloseMode::kAbort);
    } else if (ec == websocket::error::closed) {
      const auto& reason = transport_->ws().reason();
      fail(Errc::kTunnelLost,
           "peer closed the connection (" + std::to_string(reason.code) + " " +
               std::string(reason.reason.data(), reason.reason.size()) + ")",
           CloseMode::kAbort);
    } else if (ec == websocket::error::message_too_big) {
      fail(Errc::kFrameTooLarge, "a message larger than one frame (65548 bytes) arrived",
           CloseMode::kAbort);
    } else {
      fail(Errc::kTunnelLost, "connection lost: " + ec.message(), CloseMode::kAbort);
    }
    return;
  }
  if (closed_) {
    // Keep reading (and discarding) so that the closing handshake can complete.
    buffer.consume(buffer.size());
    read_next();
    return;
  }
  last_received_ = now();
  last_received_ns_.store(last_received_.time_since_epoch().count(), std::memory_order_relaxed);
  if (!transport_->ws().got_binary()) {
    fail(Errc::kProtocolError, "text WebSocket message on a binary protocol", CloseMode::kGoaway);
    return;
  }
  const auto data = buffer.cdata();
  const std::string_view bytes_view(static_cast<const char*>(data.data()), data.size());
  auto decoded = decode_frame(bytes_view);
  if (auto* error = std::get_if<FrameError>(&decoded)) {
    fail(error->code, error->message, CloseMode::kGoaway);
    return;
  }
  handle_frame(std::get<Frame>(decoded));
  buffer.consume(buffer.size());
  if (!closed_) read_next();
}

void Connection::handle_frame(const Frame& frame) {
  if (!hello_received_ && frame.type != FrameType::kHello) {
    fail(Errc::kProtocolError,
         "expected HELLO as the first frame, got " + std::string(frame_type_name(frame.type)),
         CloseMode::kGoaway);
    return;
  }
  switch (frame.type) {
    case FrameType::kHello:
      handle_hello(frame);
      return;
    case FrameType::kOpen:
      handle_open(frame);
      return;
    case FrameType::kData:
    case FrameType::kHalfClose:
      handle_stream_data(frame);
      return;
    case FrameType::kReset:
      handle_reset(frame);
      return;
    case FrameType::kWindowUpdate:
      handle_window_update(frame);
      return;
    case FrameType::kPing: {
      std::string pong;
      encode_ping(pong, true, frame.flags, frame.opaque);
      control_.push_front(std::move(pong));  // answered ahead of anything queued
      schedule_write();
      return;
    }
    case FrameType::kPong:
      handle_pong(frame);
      return;
    case FrameType::kGoaway:
      handle_goaway(frame);
      return;
  }
}

void Connection::handle_hello(const Frame& frame) {
  if (hello_received_) {
    fail(Errc::kProtocolError, "a second HELLO", CloseMode::kGoaway);
    return;
  }
  hello_received_ = true;
  peer_hello_ = frame.hello;
  peer_features_.store(frame.hello.features);
  {
    std::lock_guard<std::mutex> lock(peer_id_mutex_);
    peer_id_storage_ = std::string(frame.hello.peer_id);
  }
  peer_hello_.peer_id = {};
  peer_max_payload_ = std::min(kMaxFramePayload, frame.hello.max_frame_payload);
  peer_initial_window_ = frame.hello.initial_window;
  send_window_ = frame.hello.connection_window;
  for (auto& [id, stream] : streams_) stream->send_window_ = peer_initial_window_;
  ready_ = true;
  if (handlers_.on_ready) {
    Hello peer = frame.hello;
    const std::string id = peer_id();
    peer.peer_id = id;
    handlers_.on_ready(peer);
  }
  schedule_write();
}

bool Connection::is_peer_stream_id(uint32_t id) const {
  const bool odd = (id % 2) == 1;
  return role_ == Role::kServer ? odd : !odd;
}

bool Connection::was_used(uint32_t id) const {
  return is_peer_stream_id(id) ? id <= last_peer_id_ : id < next_local_id_.load();
}

void Connection::handle_open(const Frame& frame) {
  const uint32_t id = frame.stream_id;
  if (!is_peer_stream_id(id)) {
    fail(Errc::kProtocolError,
         "OPEN for stream " + std::to_string(id) + ", an id of this end's parity (bad stream id)",
         CloseMode::kGoaway);
    return;
  }
  if (id <= last_peer_id_) {
    fail(Errc::kProtocolError,
         "OPEN for stream " + std::to_string(id) + " after stream " +
             std::to_string(last_peer_id_) + " (stream ids must increase)",
         CloseMode::kGoaway);
    return;
  }
  last_peer_id_ = id;
  const size_t size = frame.data.size();
  if (static_cast<int64_t>(size) > recv_available_ || size > options_.initial_stream_window) {
    fail(Errc::kFlowControlError, "OPEN carries more bytes than the window allows",
         CloseMode::kGoaway);
    return;
  }
  recv_available_ -= static_cast<int64_t>(size);
  if (draining_) {
    refund_connection_credit(size);
    send_reset(id, Errc::kRefusedStream, "connection is draining; open the stream elsewhere");
    return;
  }
  if (peer_streams_ >= options_.max_peer_streams) {
    refund_connection_credit(size);
    send_reset(id, Errc::kRefusedStream,
               "too many open streams (limit " + std::to_string(options_.max_peer_streams) + ")");
    return;
  }
  auto stream =
      std::make_shared<Stream>(shared_from_this(), id, std::string(frame.metadata), false);
  stream->send_window_ = peer_initial_window_;
  stream->recv_available_ -= static_cast<int64_t>(size);
  streams_.emplace(id, stream);
  ++peer_streams_;
  stream_count_.fetch_add(1);
  if (frame.carries_message()) stream->on_data(frame.data, frame.more());
  if (frame.fin()) stream->peer_fin_ = true;
  if (!handlers_.on_stream) {
    stream->do_reset(Errc::kRefusedStream, "this end accepts no streams");
    return;
  }
  handlers_.on_stream(stream);
}

void Connection::handle_stream_data(const Frame& frame) {
  const uint32_t id = frame.stream_id;
  const size_t size = frame.data.size();
  if (static_cast<int64_t>(size) > recv_available_) {
    fail(Errc::kFlowControlError,
         "peer sent " + std::to_string(size) + " bytes with " + std::to_string(recv_available_) +
             " of connection credit left",
         CloseMode::kGoaway);
    return;
  }
  recv_available_ -= static_cast<int64_t>(size);
  if (bdp_ping_outstanding_) bdp_bytes_ += size;
  const auto it = streams_.find(id);
  if (it == streams_.end()) {
    if (!was_used(id)) {
      fail(Errc::kProtocolError,
           std::string(frame_type_name(frame.type)) + " for stream " + std::to_string(id) +
               " that was never opened (bad stream id)",
           CloseMode::kGoaway);
      return;
    }
    // A stream that ended (or that we reset): its bytes are discarded and their credit returned.
    refund_connection_credit(size);
    return;
  }
  const std::shared_ptr<Stream> stream = it->second;
  if (stream->peer_fin_) {
    refund_connection_credit(size);
    send_reset(id, Errc::kStreamClosed, "frame after the peer's own half-close");
    stream->terminate(Errc::kStreamClosed, "peer sent data after half-closing the stream");
    remove_stream(id);
    return;
  }
  if (static_cast<int64_t>(size) > stream->recv_available_) {
    refund_connection_credit(size);
    send_reset(id, Errc::kFlowControlError, "DATA past the stream's window");
    stream->terminate(Errc::kFlowControlError, "peer sent past the stream's window");
    remove_stream(id);
    return;
  }
  stream->recv_available_ -= static_cast<int64_t>(size);
  if (frame.type == FrameType::kData) stream->on_data(frame.data, frame.more());
  if (frame.fin() || frame.type == FrameType::kHalfClose) stream->peer_fin_ = true;
  stream->deliver();
  if (stream->finished()) remove_stream(id);
}

void Connection::handle_reset(const Frame& frame) {
  const auto it = streams_.find(frame.stream_id);
  if (it == streams_.end()) {
    if (!was_used(frame.stream_id)) {
      fail(Errc::kProtocolError,
           "RESET for stream " + std::to_string(frame.stream_id) + " that was never opened",
           CloseMode::kGoaway);
    }
    return;  // crossed with our own end of the stream
  }
  const std::shared_ptr<Stream> stream = it->second;
  const Errc code = is_wire_code(frame.code) ? static_cast<Errc>(frame.code) : Errc::kInternalError;
  stream->terminate(code, std::string(frame.reason));
  remove_stream(frame.stream_id);
}

void Connection::handle_window_update(const Frame& frame) {
  if (frame.stream_id == 0) {
    send_window_ += frame.increment;
    if (send_window_ > kMaxWindow) {
      fail(Errc::kFlowControlError, "connection window above 2^31-1 (window overflow)",
           CloseMode::kGoaway);
      return;
    }
    schedule_write();
    return;
  }
  const auto it = streams_.find(frame.stream_id);
  if (it == streams_.end()) {
    if (!was_used(frame.stream_id)) {
      fail(Errc::kProtocolError,
           "WINDOW_UPDATE for stream " + std::to_string(frame.stream_id) +
               " that was never opened (bad stream id)",
           CloseMode::kGoaway);
    }
    return;
  }
  const std::shared_ptr<Stream> stream = it->second;
  stream->send_window_ += frame.increment;
  if (stream->send_window_ > kMaxWindow) {
    send_reset(frame.stream_id, Errc::kFlowControlError, "stream window above 2^31-1");
    stream->terminate(Errc::kFlowControlError, "peer overflowed the stream's window");
    remove_stream(frame.stream_id);
    return;
  }
  if (stream->wants_write()) mark_ready(stream);
}

void Connection::handle_pong(const Frame& frame) {
  const TimePoint t = now();
  if ((frame.flags & kFlagBdp) != 0) {
    if (!bdp_ping_outstanding_) return;
    bdp_ping_outstanding_ = false;
    const int64_t rtt = std::max<int64_t>(1, elapsed_us(bdp_ping_sent_, t));
    rtt_us_.store(rtt);
    // Bytes that arrived during one round trip: what the pipe holds. Grow the target while the
    // windows are what limits the transfer and the bandwidth still rises (gRPC's estimator).
    const double sample = static_cast<double>(bdp_bytes_);
    const double bandwidth = sample / static_cast<double>(rtt);
    const uint32_t target = window_target_.load();
    if (sample >= static_cast<double>(target) * 2.0 / 3.0 && bandwidth > bdp_max_bandwidth_) {
      bdp_max_bandwidth_ = bandwidth;
      const double grown = std::min<double>(options_.max_stream_window, 2.0 * sample);
      window_target_.store(std::max<uint32_t>(target, static_cast<uint32_t>(grown)));
    }
    return;
  }
  if (frame.opaque == next_ping_opaque_ - 1) {
    rtt_us_.store(std::max<int64_t>(1, elapsed_us(last_ping_sent_, t)));
  }
}

void Connection::handle_goaway(const Frame& frame) {
  goaway_received_ = true;
  peer_last_accepted_id_ = frame.last_stream_id;
  const Errc code = is_wire_code(frame.code) ? static_cast<Errc>(frame.code) : Errc::kInternalError;
  const std::string reason(frame.reason);
  peer_goaway_code_ = code;
  peer_goaway_reason_ = reason;
  LOG_INFO("tunnel.goaway_received",
           "peer " << peer_id() << " is going away (" << errc_name(code) << ": " << reason << ")");
  // Our streams above last_stream_id were never processed: refused, so safe to retry elsewhere.
  std::vector<uint32_t> refused;
  for (const auto& [id, stream] : streams_) {
    if (!is_peer_stream_id(id) && id > frame.last_stream_id) refused.push_back(id);
  }
  for (const uint32_t id : refused) {
    const auto it = streams_.find(id);  // a handler may have ended it meanwhile
    if (it == streams_.end()) continue;
    const std::shared_ptr<Stream> stream = it->second;
    stream->terminate(Errc::kRefusedStream, "peer went away before processing the stream");
    remove_stream(id);
  }
  if (handlers_.on_goaway) handlers_.on_goaway(code, reason);
  maybe_finish_drain();
}

std::shared_ptr<Stream> Connection::open_stream(std::string metadata, std::string first_message,
                                                bool send_first_message, bool end_stream) {
  const uint32_t id = next_local_id_.fetch_add(2);
  auto stream = std::make_shared<Stream>(shared_from_this(), id, std::move(metadata), true);
  stream_count_.fetch_add(1);  // now, so that callers balancing over connections see it
  dispatch([self = shared_from_this(), stream, first_message = std::move(first_message),
            send_first_message, end_stream]() mutable {
    self->do_open(stream, std::move(first_message), send_first_message, end_stream);
  });
  return stream;
}

void Connection::do_open(const std::shared_ptr<Stream>& stream, std::string first_message,
                         bool send_first_message, bool end_stream) {
  const auto refuse = [&](Errc code, std::string why) {
    if (!closed_) stream_count_.fetch_sub(1);
    stream->terminate(code, std::move(why));
  };
  if (closed_) return refuse(Errc::kNotConnected, "the connection is closed");
  if (draining_ || goaway_received_) {
    return refuse(Errc::kRefusedStream, "the connection is draining");
  }
  if (stream->id() > kMaxWindow) {
    return refuse(Errc::kRefusedStream, "stream ids exhausted on this connection");
  }
  if (stream->metadata().size() > kMaxMetadataSize) {
    return refuse(Errc::kMessageTooLarge, "stream metadata larger than 16 KiB");
  }
  stream->send_window_ = hello_received_ ? peer_initial_window_ : 0;
  streams_.emplace(stream->id(), stream);
  if (send_first_message) {
    stream->outgoing_.push_back(Stream::Outgoing{std::move(first_message), 0, end_stream, nullptr});
  }
  if (end_stream) stream->fin_queued_ = true;
  mark_ready(stream);
}

void Connection::queue_control(std::string frame) {
  control_.push_back(std::move(frame));
  schedule_write();
}

void Connection::send_reset(uint32_t stream_id, Errc code, std::string_view reason) {
  if (closed_) return;
  std::string frame;
  encode_reset(frame, stream_id, code, reason);
  queue_control(std::move(frame));
}

void Connection::mark_ready(const std::shared_ptr<Stream>& stream) {
  if (!stream->in_ready_list_) {
    stream->in_ready_list_ = true;
    ready_list_.push_back(stream);
  }
  schedule_write();
}

void Connection::schedule_write() {
  // Writes start at once when the socket is idle; what is queued meanwhile goes out, control
  // first, as each write completes. (open_stream() and async_write(..., end_stream) put a
  // message and its FIN in one frame.)
  if (!writing_) write_next();
}

void Connection::write_next() {
  if (writing_ || transport_shut_) return;
  write_buffer_.clear();
  if (!control_.empty()) {
    write_buffer_ = std::move(control_.front());
    control_.pop_front();
  } else if (closed_) {
    if (closing_handshake_) {
      closing_handshake_ = false;
      websocket::close_reason reason(close_code_for(static_cast<Errc>(close_code_.value())));
      // A WebSocket close reason holds at most 123 bytes.
      reason.reason = close_reason_.substr(0, 123);
      transport_->ws().async_close(
          reason, [self = shared_from_this()](error_code) { self->shutdown_transport(); });
    }
    return;
  } else if (hello_received_) {
    // Round-robin over the streams that have something to send. A stream blocked on its own
    // window leaves the list until a WINDOW_UPDATE brings it back.
    size_t visits = ready_list_.size();
    while (visits-- > 0 && write_buffer_.empty()) {
      std::shared_ptr<Stream> stream = std::move(ready_list_.front());
      ready_list_.pop_front();
      stream->in_ready_list_ = false;
      const uint32_t payload = std::min(options_.data_frame_size, peer_max_payload_);
      bool produced = false;
      const size_t used = stream->produce_frame(write_buffer_, send_window_, payload, produced);
      send_window_ -= static_cast<int64_t>(used);
      const bool blocked_on_connection = !produced && stream->send_window_ > 0;
      if (stream->wants_write() && (produced || blocked_on_connection)) {
        stream->in_ready_list_ = true;
        ready_list_.push_back(stream);
      }
      if (stream->finished()) remove_stream(stream->id());
    }
  }
  if (write_buffer_.empty()) return;
  writing_ = true;
  write_started_ = now();
  transport_->ws().async_write(
      boost::asio::buffer(write_buffer_),
      [self = shared_from_this()](error_code ec, size_t) { self->on_write(ec); });
  // Writers whose messages were fully framed learn it now; a new write they queue waits for
  // this one (writing_ is set), so this cannot recurse into the writer.
  if (!completed_writes_.empty()) {
    auto completed = std::move(completed_writes_);
    completed_writes_.clear();
    for (auto& handler : completed) handler({});
  }
}

void Connection::on_write(error_code ec) {
  writing_ = false;
  if (ec) {
    if (!closed_) {
      fail(Errc::kTunnelLost, "connection lost while writing: " + ec.message(), CloseMode::kAbort);
    }
    shutdown_transport();
    return;
  }
  write_next();
}

void Connection::on_consumed(Stream& stream, size_t bytes) {
  if (closed_) return;
  if (!stream.peer_fin_ && !stream.terminated_ && streams_.count(stream.id()) != 0) {
    stream.credit_owed_ += static_cast<uint32_t>(bytes);
    if (stream.credit_owed_ >= stream.recv_window_size_ / 2) {
      uint32_t increment = stream.credit_owed_;
      // A reader this quick may get a larger window, up to the bandwidth-delay estimate.
      const uint32_t target =
          std::clamp(window_target_.load(), options_.initial_stream_window,
                     std::max(options_.initial_stream_window, options_.max_stream_window));
      if (target > stream.recv_window_size_) {
        increment += target - stream.recv_window_size_;
        stream.recv_window_size_ = target;
      }
      stream.recv_available_ += increment;
      stream.credit_owed_ = 0;
      std::string frame;
      encode_window_update(frame, stream.id(), increment);
      queue_control(std::move(frame));
      if (!bdp_ping_outstanding_) {
        bdp_ping_outstanding_ = true;
        bdp_bytes_ = 0;
        bdp_ping_sent_ = now();
        std::string ping;
        encode_ping(ping, false, kFlagBdp, 0);
        queue_control(std::move(ping));
      }
    }
  }
  refund_connection_credit(bytes);
}

void Connection::refund_connection_credit(size_t bytes) {
  if (closed_ || bytes == 0) return;
  connection_credit_owed_ += static_cast<uint32_t>(bytes);
  if (connection_credit_owed_ >= options_.connection_window / 2) {
    recv_available_ += connection_credit_owed_;
    std::string frame;
    encode_window_update(frame, 0, connection_credit_owed_);
    connection_credit_owed_ = 0;
    queue_control(std::move(frame));
  }
}

void Connection::remove_stream(uint32_t id) {
  if (streams_.erase(id) == 0) return;
  stream_count_.fetch_sub(1);
  if (is_peer_stream_id(id)) --peer_streams_;
  maybe_finish_drain();
}

void Connection::drain(std::chrono::milliseconds grace, Errc code, std::string reason) {
  post([self = shared_from_this(), grace, code, reason = std::move(reason)] {
    if (self->closed_ || self->draining_) return;
    self->draining_ = true;
    LOG_INFO("tunnel.drain", "draining the connection to " << self->peer_id() << " ("
                                                           << self->streams_.size()
                                                           << " streams open)");
    std::string frame;
    encode_goaway(frame, self->last_peer_id_, code, reason);
    self->queue_control(std::move(frame));
    self->drain_timer_.expires_after(grace);
    self->drain_timer_.async_wait([self](error_code ec) {
      if (!ec) self->fail(Errc::kGoingAway, "drain grace period over", CloseMode::kGoaway);
    });
    self->maybe_finish_drain();
  });
}

void Connection::maybe_finish_drain() {
  if (closed_ || !streams_.empty() || !(draining_ || goaway_received_)) return;
  // Deferred: this may run inside write_next() while the last stream's final frame is being
  // produced; that frame must go out before the closing handshake.
  post([self = shared_from_this()] {
    if (self->closed_ || !self->streams_.empty()) return;
    if (self->draining_) {
      self->fail(Errc::kNoError, "drained", CloseMode::kClose);
    } else {  // the peer's GOAWAY ended it: keep the peer's reason
      self->fail(self->peer_goaway_code_, "peer went away: " + self->peer_goaway_reason_,
                 CloseMode::kClose);
    }
  });
}

void Connection::close(Errc code, std::string reason) {
  post([self = shared_from_this(), code, reason = std::move(reason)] {
    self->fail(code, reason, CloseMode::kGoaway);
  });
}

void Connection::fail(Errc code, const std::string& reason, CloseMode mode) {
  if (closed_) return;
  closed_ = true;
  ready_ = false;
  close_code_ = make_error_code(code);
  close_reason_ = reason;
  if (code == Errc::kNoError || code == Errc::kGoingAway) {
    LOG_INFO("tunnel.connection_closed", "connection to " << peer_id() << " closed: " << reason);
  } else {
    LOG_WARNING("tunnel.connection_closed",
                "connection to " << peer_id() << " closed (" << errc_name(code) << "): " << reason);
  }
  auto streams = std::move(streams_);
  streams_.clear();
  stream_count_.store(0);
  ready_list_.clear();
  for (auto& [id, stream] : streams) {
    stream->terminate(Errc::kTunnelLost, "tunnel connection closed: " + reason);
  }
  keepalive_timer_.cancel();
  drain_timer_.cancel();
  control_.clear();
  if (mode != CloseMode::kAbort && !transport_shut_) {
    if (mode == CloseMode::kGoaway) {
      std::string frame;
      encode_goaway(frame, last_peer_id_, code, reason);
      control_.push_back(std::move(frame));
    }
    closing_handshake_ = true;
    close_timer_.expires_after(options_.close_timeout);
    close_timer_.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec) self->shutdown_transport();
    });
    if (!writing_) write_next();
  } else {
    shutdown_transport();
  }
  finish_close();
}

void Connection::finish_close() {
  if (close_notified_) return;
  close_notified_ = true;
  auto on_closed = std::move(handlers_.on_closed);
  handlers_ = Handlers{};  // no callbacks after close; breaks reference cycles with owners
  if (on_closed) {
    post([on_closed = std::move(on_closed), code = close_code_, reason = close_reason_] {
      on_closed(code, reason);
    });
  }
}

void Connection::shutdown_transport() {
  if (transport_shut_) return;
  transport_shut_ = true;
  close_timer_.cancel();
  keepalive_timer_.cancel();
  error_code ignored;
  auto& socket = transport_->tcp().socket();
  socket.shutdown(boost::asio::ip::tcp::socket::shutdown_both, ignored);
  socket.close(ignored);
}

void Connection::arm_keepalive() {
  const auto tick = std::max(
      std::chrono::milliseconds(1),
      std::min({options_.ping_interval / 2, options_.dead_after / 4, options_.write_timeout / 2}));
  keepalive_timer_.expires_after(tick);
  keepalive_timer_.async_wait(
      [self = shared_from_this()](error_code ec) { self->on_keepalive(ec); });
}

void Connection::on_keepalive(error_code ec) {
  if (ec || closed_) return;
  const TimePoint t = now();
  if (t - last_received_ >= options_.dead_after) {
    fail(
        Errc::kTimeout,
        "no frame from the peer for " +
            std::to_string(
                std::chrono::duration_cast<std::chrono::milliseconds>(t - last_received_).count()) +
            " ms: connection presumed dead",
        CloseMode::kAbort);
    return;
  }
  if (writing_ && t - write_started_ >= options_.write_timeout) {
    fail(Errc::kTimeout, "a write stalled for longer than the write timeout", CloseMode::kAbort);
    return;
  }
  if (t - last_ping_sent_ >= options_.ping_interval) {
    last_ping_sent_ = t;
    std::string ping;
    encode_ping(ping, false, 0, next_ping_opaque_++);
    queue_control(std::move(ping));
  }
  arm_keepalive();
}

}  // namespace outpost::tunnel
