// The transport floor under every call through a worker: ZeroMQ round trips between this
// process (a DEALER) and an echoing child process (a ROUTER) over ipc://, with the same sockets
// and the same payload size as a call, but no worker behind them. scripts/bench runtime reports
// the worker's calls per second at concurrency 1 against it, so that what the worker itself adds
// is told apart from what the process boundary costs.
#pragma once

#include <memory>
#include <string>

#include <sys/types.h>

namespace outpost::bench {

class ZmqEcho {
 public:
  // Forks the echoing child. Call it before this process starts any thread (fork copies one).
  static std::unique_ptr<ZmqEcho> start(const std::string& endpoint);
  ~ZmqEcho();
  ZmqEcho(const ZmqEcho&) = delete;
  ZmqEcho& operator=(const ZmqEcho&) = delete;

  // Round trips of `payload_bytes` one at a time for `seconds`; per second.
  double round_trips_per_second(size_t payload_bytes, double seconds);

 private:
  struct Client;
  ZmqEcho(std::string endpoint, pid_t child);

  std::string endpoint_;
  pid_t child_;
  std::unique_ptr<Client> client_;  // connected at the first measurement
};

}  // namespace outpost::bench
