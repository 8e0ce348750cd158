#include "protocol/zmq_channel.h"

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include <sys/eventfd.h>
#include <unistd.h>

namespace outpost::protocol {
namespace {

void set_common_options(zmq::socket_t& socket, const Limits& limits) {
  socket.set(zmq::sockopt::linger, 0);
  socket.set(zmq::sockopt::sndhwm, 0);
  socket.set(zmq::sockopt::rcvhwm, 0);
  socket.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(2 * limits.max_message_bytes));
}

Result<int> make_event_fd() {
  const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return internal_error(std::string("eventfd: ") + std::strerror(errno));
  return fd;
}

}  // namespace

ZmqChannel::ZmqChannel(zmq::socket_t socket, int event_fd)
    : socket_(std::move(socket)), event_fd_(event_fd) {
  zmq_fd_ = socket_.get(zmq::sockopt::fd);
}

ZmqChannel::~ZmqChannel() {
  socket_.close();
  if (event_fd_ >= 0) ::close(event_fd_);
}

Result<std::unique_ptr<ZmqChannel>> ZmqChannel::bind_router(zmq::context_t& context,
                                                            const std::string& endpoint,
                                                            const Limits& limits) {
  OUTPOST_ASSIGN_OR_RETURN(const int event_fd, make_event_fd());
  try {
    zmq::socket_t socket(context, zmq::socket_type::router);
    set_common_options(socket, limits);
    socket.set(zmq::sockopt::router_mandatory, 1);
    socket.bind(endpoint);
    return std::unique_ptr<ZmqChannel>(new ZmqChannel(std::move(socket), event_fd));
  } catch (const zmq::error_t& e) {
    ::close(event_fd);
    return unavailable("cannot bind " + endpoint + ": " + e.what());
  }
}

Result<std::unique_ptr<ZmqChannel>> ZmqChannel::connect_dealer(zmq::context_t& context,
                                                               const std::string& endpoint,
                                                               const Limits& limits) {
  OUTPOST_ASSIGN_OR_RETURN(const int event_fd, make_event_fd());
  try {
    zmq::socket_t socket(context, zmq::socket_type::dealer);
    set_common_options(socket, limits);
    // A starting worker binds after libtorch has loaded (about a second here): retry every
    // 10 ms without backing off, so that a cold start does not wait up to a backoff interval
    // more. A retry against a missing ipc socket is one failed connect(2).
    socket.set(zmq::sockopt::reconnect_ivl, 10);
    socket.set(zmq::sockopt::reconnect_ivl_max, 0);
    socket.connect(endpoint);
    return std::unique_ptr<ZmqChannel>(new ZmqChannel(std::move(socket), event_fd));
  } catch (const zmq::error_t& e) {
    ::close(event_fd);
    return unavailable("cannot connect to " + endpoint + ": " + e.what());
  }
}

Status ZmqChannel::send(std::span<const std::string_view> frames) {
  bool wake_reader = false;
  {
    std::lock_guard lock(mutex_);
    try {
      for (size_t i = 0; i < frames.size(); ++i) {
        const auto flags = i + 1 < frames.size()
                               ? zmq::send_flags::sndmore | zmq::send_flags::dontwait
                               : zmq::send_flags::dontwait;
        if (!socket_.send(zmq::const_buffer(frames[i].data(), frames[i].size()), flags)) {
          // Only possible on the first frame: with no high-water mark a started message
          // always completes.
          return Error(ErrorCode::kResourceExhausted, "the peer is not reading");
        }
      }
      // The send may have consumed the ZMQ_FD edge that input arrived on (see the header).
      if (reader_waiting_.load()) {
        wake_reader = (socket_.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0;
      }
    } catch (const zmq::error_t& e) {
      if (e.num() == EHOSTUNREACH) return unavailable("the peer is gone");
      return unavailable(std::string("send failed: ") + e.what());
    }
  }
  if (wake_reader) wake();
  return {};
}

void ZmqChannel::wake() {
  const uint64_t one = 1;
  // A full counter (never in practice) still leaves the fd readable, which is all we need.
  [[maybe_unused]] const auto written = ::write(event_fd_, &one, sizeof(one));
}

void ZmqChannel::set_linger(std::chrono::milliseconds linger) {
  std::lock_guard lock(mutex_);
  socket_.set(zmq::sockopt::linger, static_cast<int>(linger.count()));
}

void ZmqChannel::wait(std::chrono::milliseconds timeout, std::span<pollfd> extra) {
  reader_waiting_.store(true);
  bool ready = false;
  {
    std::lock_guard lock(mutex_);
    ready = (socket_.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0;
  }
  if (!ready) {
    std::vector<pollfd> fds;
    fds.reserve(2 + extra.size());
    fds.push_back({zmq_fd_, POLLIN, 0});
    fds.push_back({event_fd_, POLLIN, 0});
    fds.insert(fds.end(), extra.begin(), extra.end());
    ::poll(fds.data(), fds.size(), static_cast<int>(timeout.count()));
    if ((fds[1].revents & POLLIN) != 0) {
      uint64_t count = 0;
      [[maybe_unused]] const auto got = ::read(event_fd_, &count, sizeof(count));
    }
    for (size_t i = 0; i < extra.size(); ++i) extra[i].revents = fds[2 + i].revents;
  }
  reader_waiting_.store(false);
}

size_t ZmqChannel::receive(std::vector<std::vector<zmq::message_t>>& out, size_t max,
                           size_t max_frames) {
  std::lock_guard lock(mutex_);
  size_t received = 0;
  try {
    while (received < max) {
      std::vector<zmq::message_t> frames;
      zmq::message_t frame;
      if (!socket_.recv(frame, zmq::recv_flags::dontwait)) break;
      bool more = frame.more();
      frames.push_back(std::move(frame));
      while (more) {
        zmq::message_t next;
        // The rest of a started message is always there (ZeroMQ delivers messages whole).
        if (!socket_.recv(next, zmq::recv_flags::none)) break;
        more = next.more();
        if (frames.size() <= max_frames) frames.push_back(std::move(next));
      }
      out.push_back(std::move(frames));
      ++received;
    }
  } catch (const zmq::error_t&) {
    // ETERM while shutting down: nothing more to read.
  }
  return received;
}

Result<zmq::socket_t> ZmqChannel::monitor(zmq::context_t& context) {
  static std::atomic<uint64_t> next_monitor{0};
  const std::string address = "inproc://outpost-monitor-" + std::to_string(next_monitor++);
  std::lock_guard lock(mutex_);
  if (zmq_socket_monitor(socket_.handle(), address.c_str(),
                         ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) != 0) {
    return internal_error(std::string("zmq_socket_monitor: ") + zmq_strerror(zmq_errno()));
  }
  try {
    zmq::socket_t pair(context, zmq::socket_type::pair);
    pair.set(zmq::sockopt::linger, 0);
    pair.connect(address);
    return pair;
  } catch (const zmq::error_t& e) {
    return internal_error(std::string("monitor: ") + e.what());
  }
}

void ZmqChannel::stop_monitor() {
  std::lock_guard lock(mutex_);
  // A null endpoint stops the socket's monitor (zmq_socket_monitor(3) since 4.0).
  zmq_socket_monitor(socket_.handle(), nullptr, 0);
}

int read_monitor_event(zmq::socket_t& monitor) {
  try {
    zmq::message_t event;
    if (!monitor.recv(event, zmq::recv_flags::dontwait)) return 0;
    int id = 0;
    if (event.size() >= sizeof(uint16_t)) {
      uint16_t raw = 0;
      std::memcpy(&raw, event.data(), sizeof(raw));
      id = raw;
    }
    while (event.more()) {
      zmq::message_t rest;
      if (!monitor.recv(rest, zmq::recv_flags::none)) break;
      event = std::move(rest);
    }
    return id;
  } catch (const zmq::error_t&) {
    return 0;
  }
}

}  // namespace outpost::protocol
