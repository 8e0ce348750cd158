// A TCP relay for fault injection: it listens on 127.0.0.1 and forwards each connection to a
// target port. cut() closes every relayed connection at once (a link that died); freeze() stops
// forwarding on the connections relayed so far, in both directions, while keeping their sockets
// open (a silent drop, the failure a ping without a deadline never notices); new connections
// are relayed normally. partition() is freeze() for new connections too: they are accepted (a
// SYN answered by a middlebox, say) but nothing is forwarded, and nothing is connected upstream,
// until thaw(). thaw() resumes the frozen ones and connects the held ones upstream, forwarding
// what they sent meanwhile: a dial that was waiting then completes, as after a real heal.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

namespace outpost::testing {

class TcpRelay {
 public:
  explicit TcpRelay(uint16_t target_port);
  ~TcpRelay();
  TcpRelay(const TcpRelay&) = delete;
  TcpRelay& operator=(const TcpRelay&) = delete;

  uint16_t port() const { return port_; }
  void cut();
  void freeze();
  // Freezes only the index-th connection accepted since the last cut() (0-based), as when one
  // path of several dies.
  void freeze_one(size_t index);
  // freeze(), and new connections are held silently until thaw().
  void partition();
  void thaw();
  // Stops accepting new connections too (the far side is unreachable) until reopen().
  void refuse_new(bool refuse);
  int accepted() const { return accepted_.load(); }

  struct Link;

 private:
  void accept();

  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  uint16_t target_port_;
  uint16_t port_ = 0;
  std::atomic<int> accepted_{0};
  std::atomic<bool> refuse_{false};
  bool black_hole_ = false;  // io_ thread only
  std::shared_ptr<struct RelayState> state_;
  std::thread thread_;
};

}  // namespace outpost::testing
