// A tunnel server and client on loopback, with real TLS (a CA made at test time), each on its
// own io_context thread, plus small helpers for waiting on asynchronous results. The waits have
// generous deadlines that only guard against hangs; no test asserts on how long anything took.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include "tests/support/test_pki.h"
#include "tunnel/calls.h"
#include "tunnel/client.h"
#include "tunnel/server.h"
#include "tunnel/tls.h"

namespace outpost::testing {

inline constexpr auto kHangGuard = std::chrono::seconds(30);

// Polls `condition` until it holds or the hang guard expires.
inline bool eventually(const std::function<bool()>& condition,
                       std::chrono::milliseconds limit = kHangGuard) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return condition();
}

template <class T>
T wait_for(std::future<T>& future, const char* what) {
  if (future.wait_for(kHangGuard) != std::future_status::ready) {
    ADD_FAILURE() << "timed out waiting for " << what;
    std::abort();  // the test would hang; fail loudly instead
  }
  return future.get();
}

// An io_context with a thread running it until destruction.
class IoThread {
 public:
  IoThread() : work_(boost::asio::make_work_guard(io_)), thread_([this] { io_.run(); }) {}
  ~IoThread() {
    work_.reset();
    io_.stop();
    thread_.join();
  }
  boost::asio::io_context& io() { return io_; }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::thread thread_;
};

// Echoes every message of a stream back, then half-closes when the peer does.
inline void echo(const std::shared_ptr<tunnel::Stream>& stream) {
  stream->async_read([stream](boost::system::error_code ec, std::string message) {
    if (ec == tunnel::Errc::kEndOfStream) {
      stream->close_write();
      return;
    }
    if (ec) return;
    stream->async_write(std::move(message), false, [stream](boost::system::error_code write_ec) {
      if (!write_ec) echo(stream);
    });
  });
}

struct ServerHarness {
  explicit ServerHarness(tunnel::ServerOptions options = {}) {
    auto tls = tunnel::make_server_tls_context(pki.cert_file(), pki.key_file());
    EXPECT_TRUE(tls.ok());
    tunnel::TunnelServer::Handlers handlers;
    handlers.authenticate = [this](const std::string& credential, const tunnel::PeerInfo&,
                                   const tunnel::TunnelServer::AuthDone& done) {
      ++auth_attempts;
      if (credential == "good-token") {
        done(std::string("node-1"));
      } else {
        done(Error(ErrorCode::kUnauthenticated, "unknown node credential"));
      }
    };
    handlers.on_connection = [this](std::shared_ptr<tunnel::Connection> connection,
                                    const tunnel::PeerInfo&) {
      std::lock_guard<std::mutex> lock(mutex);
      connections.push_back(std::move(connection));
    };
    handlers.on_stream = [this](std::shared_ptr<tunnel::Stream> stream, const tunnel::PeerInfo&) {
      std::function<void(std::shared_ptr<tunnel::Stream>)> handler;
      {
        std::lock_guard<std::mutex> lock(mutex);
        handler = on_stream;
      }
      if (handler) {
        handler(std::move(stream));
      } else {
        echo(stream);
      }
    };
    handlers.on_disconnect = [this](const tunnel::PeerInfo&, boost::system::error_code code,
                                    const std::string&) {
      std::function<void()> hook;
      {
        std::lock_guard<std::mutex> lock(mutex);
        disconnect_codes.push_back(code);
        hook = on_disconnect;
      }
      if (hook) hook();
    };
    server = tunnel::TunnelServer::create(io.io(), tls.value(), std::move(options), handlers);
    auto listened = server->listen("127.0.0.1", 0);
    EXPECT_TRUE(listened.ok());
    port = listened.value();
  }

  ~ServerHarness() {
    std::promise<void> stopped;
    server->shutdown(std::chrono::milliseconds(200), [&stopped] { stopped.set_value(); });
    auto future = stopped.get_future();
    // After `done` the server calls none of this harness's handlers; without it the members
    // they touch would be destroyed under them.
    if (future.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      ADD_FAILURE() << "the tunnel server did not finish shutting down";
      std::abort();
    }
  }

  void set_stream_handler(std::function<void(std::shared_ptr<tunnel::Stream>)> handler) {
    std::lock_guard<std::mutex> lock(mutex);
    on_stream = std::move(handler);
  }

  // Runs after each disconnect has been recorded.
  void set_disconnect_handler(std::function<void()> handler) {
    std::lock_guard<std::mutex> lock(mutex);
    on_disconnect = std::move(handler);
  }

  std::shared_ptr<tunnel::Connection> latest_connection() {
    std::lock_guard<std::mutex> lock(mutex);
    return connections.empty() ? nullptr : connections.back();
  }

  // How many connections the server has handed over so far (read under the lock: the server's
  // threads add to the list).
  size_t connections_seen() {
    std::lock_guard<std::mutex> lock(mutex);
    return connections.size();
  }

  TestPki pki;
  IoThread io;
  std::shared_ptr<tunnel::TunnelServer> server;
  uint16_t port = 0;
  std::atomic<int> auth_attempts{0};
  std::mutex mutex;
  std::vector<std::shared_ptr<tunnel::Connection>> connections;
  std::vector<boost::system::error_code> disconnect_codes;
  std::function<void(std::shared_ptr<tunnel::Stream>)> on_stream;
  std::function<void()> on_disconnect;
};

struct ClientHarness {
  ClientHarness(tunnel::ClientOptions options, tunnel::ClientSeams seams = {}) {
    tunnel::TunnelClient::Handlers handlers;
    handlers.on_stream = [this](const std::shared_ptr<tunnel::Stream>& stream, int) {
      ++streams_from_server;
      echo(stream);
    };
    handlers.on_status = [this](const tunnel::ClientStatus& status) {
      std::lock_guard<std::mutex> lock(mutex);
      history.push_back(status);
    };
    auto created = tunnel::TunnelClient::create(io.io(), std::move(options), handlers, seams);
    if (!created.ok()) {
      ADD_FAILURE() << created.error().message();
      std::abort();
    }
    client = created.value();
    client->start();
  }

  ~ClientHarness() {
    std::promise<void> stopped;
    client->shutdown(std::chrono::milliseconds(200), [&stopped] { stopped.set_value(); });
    auto future = stopped.get_future();
    future.wait_for(std::chrono::seconds(10));
  }

  bool wait_connected(int count) {
    return eventually([&] { return client->status().connected() >= count; });
  }

  // Opens a unary call and waits for its answer.
  std::pair<boost::system::error_code, std::string> unary(const std::string& request,
                                                          const std::string& metadata = "m") {
    auto opened = client->open_stream(metadata, request, true, true);
    if (!opened.ok())
      return {make_error_code(tunnel::Errc::kNotConnected), opened.error().message()};
    std::promise<std::pair<boost::system::error_code, std::string>> result;
    tunnel::async_read_unary_response(
        opened.value(), [&result](boost::system::error_code ec, std::string response) {
          result.set_value({ec, std::move(response)});
        });
    auto future = result.get_future();
    return wait_for(future, "a unary response");
  }

  IoThread io;
  std::shared_ptr<tunnel::TunnelClient> client;
  std::atomic<int> streams_from_server{0};
  std::mutex mutex;
  std::vector<tunnel::ClientStatus> history;
};

inline tunnel::ClientOptions client_options(const ServerHarness& server, uint16_t port = 0) {
  tunnel::ClientOptions options;
  options.url = "wss://localhost:" + std::to_string(port != 0 ? port : server.port) + "/v1/tunnel";
  options.credential = "good-token";
  options.tls.ca_file = server.pki.ca_file();
  options.use_environment_proxy = false;
  options.connections = 1;
  // Retry fast in tests that cut connections; refusal tests inject a scheduler instead.
  options.backoff.base = std::chrono::milliseconds(20);
  options.backoff.cap = std::chrono::milliseconds(100);
  return options;
}

}  // namespace outpost::testing
