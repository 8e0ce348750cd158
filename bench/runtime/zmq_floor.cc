#include "bench/runtime/zmq_floor.h"

#include <chrono>
#include <csignal>
#include <string_view>
#include <utility>

#include <zmq.hpp>

#include <sys/wait.h>
#include <unistd.h>

namespace outpost::bench {

namespace {

constexpr std::string_view kQuit = "quit";

[[noreturn]] void echo(const std::string& endpoint) {
  {
    zmq::context_t context(1);
    zmq::socket_t router(context, zmq::socket_type::router);
    router.bind(endpoint);
    while (true) {
      zmq::message_t id;
      zmq::message_t body;
      if (!router.recv(id) || !router.recv(body)) break;
      if (body.to_string_view() == kQuit) break;
      router.send(id, zmq::send_flags::sndmore);
      router.send(body, zmq::send_flags::none);
    }
  }
  _exit(0);
}

}  // namespace

struct ZmqEcho::Client {
  zmq::context_t context{1};
  zmq::socket_t dealer{context, zmq::socket_type::dealer};
};

std::unique_ptr<ZmqEcho> ZmqEcho::start(const std::string& endpoint) {
  const pid_t child = fork();
  if (child < 0) return nullptr;
  if (child == 0) echo(endpoint);
  return std::unique_ptr<ZmqEcho>(new ZmqEcho(endpoint, child));
}

ZmqEcho::ZmqEcho(std::string endpoint, pid_t child)
    : endpoint_(std::move(endpoint)), child_(child) {}

ZmqEcho::~ZmqEcho() {
  if (client_) {
    client_->dealer.send(zmq::buffer(kQuit), zmq::send_flags::dontwait);
    client_->dealer.set(zmq::sockopt::linger, 1000);
  } else {
    ::kill(child_, SIGTERM);
  }
  client_.reset();
  ::waitpid(child_, nullptr, 0);
}

double ZmqEcho::round_trips_per_second(size_t payload_bytes, double seconds) {
  if (!client_) {
    client_ = std::make_unique<Client>();
    client_->dealer.connect(endpoint_);
  }
  const std::string payload(payload_bytes, 'x');
  const auto round_trip = [&] {
    client_->dealer.send(zmq::buffer(payload), zmq::send_flags::none);
    zmq::message_t reply;
    return client_->dealer.recv(reply).has_value();
  };
  for (int i = 0; i < 200; ++i) round_trip();  // connected and warm
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const auto until = start + std::chrono::duration<double>(seconds);
  int64_t done = 0;
  while (Clock::now() < until) {
    if (!round_trip()) break;
    ++done;
  }
  return static_cast<double>(done) / std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace outpost::bench
