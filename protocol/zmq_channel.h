// One ZeroMQ socket that several threads send on and one thread reads from, used by both ends of
// the worker protocol. ZeroMQ sockets are not thread-safe, but a socket may pass between threads
// behind a full memory barrier, which the channel's mutex gives: any thread sends a whole
// message under the mutex, so an execution thread answers without handing its result to another
// thread first. The reader waits in poll(2) on the socket's ZMQ_FD and an eventfd. ZMQ_FD
// signals edges, and a send may consume one, so a sender that finds input pending after its
// send wakes the reader.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "common/result.h"
#include "protocol/worker_protocol.h"
#include <poll.h>

namespace outpost::protocol {

class ZmqChannel {
 public:
  // A ROUTER bound to `endpoint` (the worker) or a DEALER connected to it (the agent). Both
  // refuse inbound frames over twice limits.max_message_bytes (ZMQ_MAXMSGSIZE).
  static Result<std::unique_ptr<ZmqChannel>> bind_router(zmq::context_t& context,
                                                         const std::string& endpoint,
                                                         const Limits& limits);
  static Result<std::unique_ptr<ZmqChannel>> connect_dealer(zmq::context_t& context,
                                                            const std::string& endpoint,
                                                            const Limits& limits);
  ~ZmqChannel();
  ZmqChannel(const ZmqChannel&) = delete;
  ZmqChannel& operator=(const ZmqChannel&) = delete;

  // Sends `frames` as one message (for a ROUTER, frames[0] is the peer's routing id). Never
  // blocks. Fails with unavailable when a ROUTER's peer is gone.
  Status send(std::span<const std::string_view> frames);

  // Reader thread only. Returns when input may be ready, wake() was called, one of `extra`
  // became ready, or `timeout` passed.
  void wait(std::chrono::milliseconds timeout, std::span<pollfd> extra = {});
  // Reader thread only. Appends up to `max` complete messages that are ready, without waiting.
  // A message with more than max_frames frames is received whole but kept only up to
  // max_frames + 1 frames, so that decode_message refuses it.
  size_t receive(std::vector<std::vector<zmq::message_t>>& out, size_t max, size_t max_frames);
  void wake();
  // How long closing waits for unsent messages (0 at first).
  void set_linger(std::chrono::milliseconds linger);

  // Starts a monitor for connect and disconnect events, readable on the returned PAIR socket
  // (reader thread only). Call before the reader starts.
  Result<zmq::socket_t> monitor(zmq::context_t& context);
  // Stops the monitor started by monitor(). Call it before closing the PAIR socket: libzmq's
  // socket keeps sending events into the monitor's pipe until told to stop, and an event sent
  // after the PAIR closed is never freed (LeakSanitizer saw one) or blocks libzmq's I/O thread.
  void stop_monitor();

 private:
  ZmqChannel(zmq::socket_t socket, int event_fd);

  std::mutex mutex_;
  zmq::socket_t socket_;
  int zmq_fd_ = -1;
  int event_fd_ = -1;
  std::atomic<bool> reader_waiting_{false};
};

// Reads one monitor event (ZMQ_EVENT_CONNECTED, ...) without waiting; 0 when none is pending.
int read_monitor_event(zmq::socket_t& monitor);

}  // namespace outpost::protocol
