// scripts/bench tunnel: the tunnel measured side by side with its baseline, a raw Boost.Beast
// WebSocket echo over TLS on loopback, in one run on the same machine. Prints one JSON object
// as its last line. Each side gets one thread for its server and one for its client.
//
//  unary      closed-loop echo calls of 64 bytes at concurrency 1 and 64 over ONE connection
//             (tunnel: one stream per call; baseline: messages pipelined on one WebSocket)
//  bulk       100 MiB one way (tunnel: one stream of 1 MiB messages; baseline: 64 KiB messages)
//  hol        p99 of concurrency-1 unary calls while a 100 MiB transfer runs on another stream
//             of the same connection, against the same p99 with no transfer (idle)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/strand.hpp>
#include <nlohmann/json.hpp>

#include "common/log.h"
#include "tests/support/test_pki.h"
#include "tunnel/calls.h"
#include "tunnel/client.h"
#include "tunnel/server.h"
#include "tunnel/tls.h"
#include "tunnel/ws_transport.h"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using namespace outpost;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

constexpr size_t kSmall = 64;
constexpr size_t kBulkBytes = 100u * 1024 * 1024;

class IoThread {
 public:
  IoThread() : work_(asio::make_work_guard(io_)), thread_([this] { io_.run(); }) {}
  ~IoThread() {
    work_.reset();
    io_.stop();
    thread_.join();
  }
  asio::io_context& io() { return io_; }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;
};

struct Latencies {
  std::vector<double> micros;
  double seconds = 0;

  double rps() const { return static_cast<double>(micros.size()) / seconds; }
  double percentile(double p) {
    if (micros.empty()) return 0;
    std::sort(micros.begin(), micros.end());
    const auto index = static_cast<size_t>(p * static_cast<double>(micros.size() - 1));
    return micros[index];
  }
};

double micros_since(Clock::time_point start) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

// ------------------------------------------------------------------------------------------
// The tunnel side.

struct TunnelRig {
  testing::TestPki pki{"bench"};
  IoThread server_io;
  IoThread client_io;
  std::shared_ptr<tunnel::TunnelServer> server;
  std::shared_ptr<tunnel::TunnelClient> client;
  std::atomic<size_t> bulk_received{0};

  TunnelRig() {
    tunnel::TunnelServer::Handlers handlers;
    handlers.authenticate = [](const std::string&, const tunnel::PeerInfo&,
                               const tunnel::TunnelServer::AuthDone& done) {
      done(std::string("bench"));
    };
    handlers.on_stream = [this](const std::shared_ptr<tunnel::Stream>& stream,
                                const tunnel::PeerInfo&) {
      if (stream->metadata() == "bulk") return sink(stream);
      // Unary echo: one frame in (OPEN with message and FIN), one frame out (DATA with FIN).
      stream->async_read([stream](error_code ec, std::string request) {
        if (!ec) stream->async_write(std::move(request), true, [](error_code) {});
      });
    };
    server = tunnel::TunnelServer::create(
        server_io.io(), tunnel::make_server_tls_context(pki.cert_file(), pki.key_file()).value(),
        {}, handlers);
    const uint16_t port = server->listen("127.0.0.1", 0).value();
    tunnel::ClientOptions options;
    options.url = "wss://localhost:" + std::to_string(port);
    options.credential = "bench";
    options.tls.ca_file = pki.ca_file();
    options.connections = 1;
    options.use_environment_proxy = false;
    client = tunnel::TunnelClient::create(client_io.io(), options, {}).value();
    client->start();
    while (client->status().connected() < 1)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }

  ~TunnelRig() {
    std::promise<void> a;
    std::promise<void> b;
    client->shutdown(std::chrono::seconds(1), [&a] { a.set_value(); });
    a.get_future().wait_for(std::chrono::seconds(5));
    server->shutdown(std::chrono::seconds(1), [&b] { b.set_value(); });
    b.get_future().wait_for(std::chrono::seconds(5));
  }

  void sink(const std::shared_ptr<tunnel::Stream>& stream) {
    stream->async_read([this, stream](error_code ec, const std::string& message) {
      if (ec == tunnel::Errc::kEndOfStream) {
        stream->async_write("done", true, [](error_code) {});
        return;
      }
      if (ec) return;
      bulk_received += message.size();
      sink(stream);
    });
  }

  // `concurrency` closed loops of unary calls until `total` calls are done.
  Latencies unary(int concurrency, int total) {
    struct State {
      std::atomic<int> started{0};
      std::atomic<int> finished{0};
      std::mutex mutex;
      std::vector<double> micros;
      std::promise<void> done;
    };
    auto state = std::make_shared<State>();
    state->micros.reserve(static_cast<size_t>(total));
    const std::string payload(kSmall, 'u');
    std::function<void()> issue = [&, state]() {
      if (state->started.fetch_add(1) >= total) return;
      const auto start = Clock::now();
      auto stream = client->open_stream("unary", payload, true, true).value();
      tunnel::async_read_unary_response(
          stream, [&, state, start](error_code ec, const std::string&) {
            if (ec) std::fprintf(stderr, "unary call failed: %s\n", ec.message().c_str());
            {
              std::lock_guard<std::mutex> lock(state->mutex);
              state->micros.push_back(micros_since(start));
            }
            if (state->finished.fetch_add(1) + 1 == total) {
              state->done.set_value();
            } else {
              issue();
            }
          });
    };
    const auto start = Clock::now();
    for (int i = 0; i < concurrency; ++i) asio::post(client_io.io(), issue);
    state->done.get_future().wait();
    Latencies out;
    out.seconds = micros_since(start) / 1e6;
    out.micros = std::move(state->micros);
    return out;
  }

  // Sends kBulkBytes on one stream; returns MB/s (10^6 bytes per second).
  double bulk(std::atomic<bool>* running = nullptr) {
    bulk_received = 0;
    auto stream = client->open_stream("bulk").value();
    auto message = std::make_shared<std::string>(1024 * 1024, 'b');
    auto sent = std::make_shared<size_t>(0);
    std::promise<void> done;
    const auto start = Clock::now();
    std::function<void()> write_next = [&, stream, message, sent]() {
      if (*sent == kBulkBytes) {
        stream->close_write();
        tunnel::async_read_all(
            stream, [](const std::string&) {}, [&done](error_code) { done.set_value(); });
        return;
      }
      *sent += message->size();
      stream->async_write(*message, false, [&](error_code ec) {
        if (!ec) write_next();
      });
    };
    if (running != nullptr) running->store(true);
    asio::post(client_io.io(), write_next);
    done.get_future().wait();
    const double seconds = micros_since(start) / 1e6;
    if (running != nullptr) running->store(false);
    if (bulk_received.load() != kBulkBytes) std::fprintf(stderr, "bulk transfer lost bytes\n");
    return static_cast<double>(kBulkBytes) / seconds / 1e6;
  }
};

// ------------------------------------------------------------------------------------------
// The baseline: raw Beast WebSocket over TLS, an echo server and a pipelining client.

using Ws = tunnel::WebSocket;

class BaselineServer : public std::enable_shared_from_this<BaselineServer> {
 public:
  BaselineServer(asio::io_context& io, std::shared_ptr<asio::ssl::context> tls)
      : io_(io), tls_(std::move(tls)), acceptor_(io, {asio::ip::make_address("127.0.0.1"), 0}) {}
  uint16_t port() const { return acceptor_.local_endpoint().port(); }

  void accept() {
    acceptor_.async_accept(
        asio::make_strand(io_),
        [self = shared_from_this()](error_code ec, asio::ip::tcp::socket socket) {
          if (ec) return;
          socket.set_option(asio::ip::tcp::no_delay(true));
          auto ws = std::make_shared<Ws>(std::move(socket), *self->tls_);
          ws->next_layer().async_handshake(asio::ssl::stream_base::server, [ws](error_code tls_ec) {
            if (tls_ec) return;
            ws->async_accept([ws](error_code accept_ec) {
              if (accept_ec) return;
              ws->binary(true);
              ws->auto_fragment(false);
              ws->read_message_max(2 * 1024 * 1024);
              serve(ws, std::make_shared<beast::flat_buffer>(), std::make_shared<size_t>(0));
            });
          });
          self->accept();
        });
  }

 private:
  // Small messages are echoed; "bulk" traffic (64 KiB messages) is counted until the "end"
  // marker, which is answered with "done".
  static void serve(const std::shared_ptr<Ws>& ws,
                    const std::shared_ptr<beast::flat_buffer>& buffer,
                    const std::shared_ptr<size_t>& bulk) {
    ws->async_read(*buffer, [ws, buffer, bulk](error_code ec, size_t n) {
      if (ec) return;
      if (n > kSmall) {
        *bulk += n;
        buffer->consume(n);
        return serve(ws, buffer, bulk);
      }
      if (n == 3 && beast::buffers_to_string(buffer->data()) == "end") {
        buffer->consume(n);
        *bulk = 0;
        ws->async_write(asio::buffer(std::string_view("done")),
                        [ws, buffer, bulk](error_code write_ec, size_t) {
                          if (!write_ec) serve(ws, buffer, bulk);
                        });
        return;
      }
      ws->async_write(buffer->data(), [ws, buffer, bulk](error_code write_ec, size_t written) {
        if (write_ec) return;
        buffer->consume(written);
        serve(ws, buffer, bulk);
      });
    });
  }

  asio::io_context& io_;
  std::shared_ptr<asio::ssl::context> tls_;
  asio::ip::tcp::acceptor acceptor_;
};

struct BaselineRig {
  testing::TestPki pki{"baseline"};
  IoThread server_io;
  IoThread client_io;
  std::shared_ptr<BaselineServer> server;
  std::shared_ptr<asio::ssl::context> client_tls;
  std::unique_ptr<Ws> ws;

  BaselineRig() {
    server = std::make_shared<BaselineServer>(
        server_io.io(), tunnel::make_server_tls_context(pki.cert_file(), pki.key_file()).value());
    server->accept();
    client_tls = tunnel::make_client_tls_context({pki.ca_file(), {}}).value();
    ws = std::make_unique<Ws>(asio::make_strand(client_io.io()), *client_tls);
    std::promise<error_code> ready;
    auto& tcp = beast::get_lowest_layer(*ws);
    tcp.async_connect({asio::ip::make_address("127.0.0.1"), server->port()}, [&](error_code ec) {
      if (ec) return ready.set_value(ec);
      tcp.socket().set_option(asio::ip::tcp::no_delay(true));
      SSL_set_tlsext_host_name(ws->next_layer().native_handle(), "localhost");
      ws->next_layer().set_verify_callback(asio::ssl::host_name_verification("localhost"));
      ws->next_layer().async_handshake(asio::ssl::stream_base::client, [&](error_code tls_ec) {
        if (tls_ec) return ready.set_value(tls_ec);
        ws->async_handshake("localhost", "/", [&](error_code hs_ec) { ready.set_value(hs_ec); });
      });
    });
    const error_code ec = ready.get_future().get();
    if (ec) {
      std::fprintf(stderr, "baseline connect failed: %s\n", ec.message().c_str());
      std::exit(1);
    }
    ws->binary(true);
    ws->auto_fragment(false);
    ws->read_message_max(2 * 1024 * 1024);
  }

  ~BaselineRig() {
    asio::post(ws->get_executor(), [this] { beast::get_lowest_layer(*ws).close(); });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  // Keeps `concurrency` echo messages in flight on the one WebSocket until `total` returned.
  Latencies unary(int concurrency, int total) {
    struct State {
      std::deque<Clock::time_point> in_flight;
      int sent = 0;
      int received = 0;
      bool writing = false;
      std::vector<double> micros;
      beast::flat_buffer buffer;
      std::string payload = std::string(kSmall, 'u');
      std::promise<void> done;
    };
    auto state = std::make_shared<State>();
    state->micros.reserve(static_cast<size_t>(total));
    std::function<void()> pump_writes;
    std::function<void()> read_loop;
    pump_writes = [&, state] {
      if (state->writing || state->sent == total ||
          static_cast<int>(state->in_flight.size()) >= concurrency) {
        return;
      }
      state->writing = true;
      state->in_flight.push_back(Clock::now());
      ++state->sent;
      ws->async_write(asio::buffer(state->payload), [&, state](error_code ec, size_t) {
        state->writing = false;
        if (!ec) pump_writes();
      });
    };
    read_loop = [&, state] {
      ws->async_read(state->buffer, [&, state](error_code ec, size_t n) {
        if (ec) return;
        state->buffer.consume(n);
        state->micros.push_back(micros_since(state->in_flight.front()));
        state->in_flight.pop_front();
        if (++state->received == total) return state->done.set_value();
        pump_writes();
        read_loop();
      });
    };
    const auto start = Clock::now();
    asio::post(ws->get_executor(), [&] {
      read_loop();
      pump_writes();
    });
    state->done.get_future().wait();
    Latencies out;
    out.seconds = micros_since(start) / 1e6;
    out.micros = std::move(state->micros);
    return out;
  }

  double bulk() {
    auto message = std::make_shared<std::string>(64 * 1024, 'b');
    auto sent = std::make_shared<size_t>(0);
    auto buffer = std::make_shared<beast::flat_buffer>();
    std::promise<void> done;
    const auto start = Clock::now();
    std::function<void()> write_next = [&, message, sent, buffer] {
      if (*sent == kBulkBytes) {
        ws->async_write(asio::buffer(std::string_view("end")), [&, buffer](error_code, size_t) {
          ws->async_read(*buffer, [&](error_code, size_t) { done.set_value(); });
        });
        return;
      }
      *sent += message->size();
      ws->async_write(asio::buffer(*message), [&](error_code ec, size_t) {
        if (!ec) write_next();
      });
    };
    asio::post(ws->get_executor(), write_next);
    done.get_future().wait();
    return static_cast<double>(kBulkBytes) / (micros_since(start) / 1e6) / 1e6;
  }
};

}  // namespace

int main(int argc, char** argv) {
  log::set_min_severity(log::Severity::kWarning);
  // Single measurements, for profilers and experiments:
  //   bench_tunnel profile-unary N [C]      N tunnel unary calls at concurrency C (default 1)
  //   bench_tunnel profile-baseline N [C]   the same on the raw WebSocket
  //   bench_tunnel profile-hol              three rounds of the head-of-line measurement
  if (argc >= 3 && std::string(argv[1]) == "profile-unary") {
    TunnelRig rig;
    auto calls = rig.unary(argc > 3 ? std::stoi(argv[3]) : 1, std::stoi(argv[2]));
    std::printf("{\"unary_rps\":%.0f,\"unary_p50_us\":%.1f}\n", calls.rps(), calls.percentile(0.5));
    return 0;
  }
  if (argc >= 2 && std::string(argv[1]) == "profile-hol") {
    TunnelRig rig;
    for (int round = 0; round < 3; ++round) {
      const double idle = rig.unary(1, 5000).percentile(0.99);
      std::atomic<bool> running{false};
      Latencies during;
      double mbps = 0;
      std::thread bulk([&] { mbps = rig.bulk(&running); });
      while (!running.load()) std::this_thread::yield();
      while (running.load()) {
        auto sample = rig.unary(1, 200);
        if (running.load())
          during.micros.insert(during.micros.end(), sample.micros.begin(), sample.micros.end());
      }
      bulk.join();
      std::printf("bulk %.0f MB/s, idle p99 %.0f us, hol p99 %.0f us\n", mbps, idle,
                  during.percentile(0.99));
    }
    return 0;
  }
  if (argc >= 3 && std::string(argv[1]) == "profile-baseline") {
    BaselineRig rig;
    auto calls = rig.unary(argc > 3 ? std::stoi(argv[3]) : 1, std::stoi(argv[2]));
    std::printf("{\"baseline_rps\":%.0f,\"baseline_p50_us\":%.1f}\n", calls.rps(),
                calls.percentile(0.5));
    return 0;
  }
  constexpr int kRounds = 3;
  constexpr int kC1Calls = 20'000;
  constexpr int kC64Calls = 100'000;
  // Both rigs stay up; each round measures baseline and tunnel back to back, and the figures
  // reported are the medians over the rounds, so that drift on a shared machine hits both.
  BaselineRig baseline;
  TunnelRig rig;
  baseline.unary(1, 2000);  // warm-up
  rig.unary(1, 2000);
  std::map<std::string, std::vector<double>> samples;
  for (int round = 0; round < kRounds; ++round) {
    auto b1 = baseline.unary(1, kC1Calls);
    auto t1 = rig.unary(1, kC1Calls);
    samples["baseline_unary_rps"].push_back(b1.rps());
    samples["baseline_p50_us"].push_back(b1.percentile(0.50));
    samples["baseline_p99_us"].push_back(b1.percentile(0.99));
    samples["unary_rps"].push_back(t1.rps());
    samples["unary_p50_us"].push_back(t1.percentile(0.50));
    samples["unary_p99_us"].push_back(t1.percentile(0.99));
    auto b64 = baseline.unary(64, kC64Calls);
    auto t64 = rig.unary(64, kC64Calls);
    samples["baseline_c64_rps"].push_back(b64.rps());
    samples["baseline_c64_p50_us"].push_back(b64.percentile(0.50));
    samples["baseline_c64_p99_us"].push_back(b64.percentile(0.99));
    samples["unary_c64_rps"].push_back(t64.rps());
    samples["unary_c64_p50_us"].push_back(t64.percentile(0.50));
    samples["unary_c64_p99_us"].push_back(t64.percentile(0.99));
    samples["baseline_bulk_mbps"].push_back(baseline.bulk());
    samples["bulk_mbps"].push_back(rig.bulk());

    // Head-of-line: small calls while a bulk transfer shares the connection, against the same
    // calls with the connection otherwise idle.
    samples["idle_p99_us"].push_back(rig.unary(1, 5000).percentile(0.99));
    std::atomic<bool> running{false};
    Latencies during;
    std::thread bulk([&] { rig.bulk(&running); });
    while (!running.load()) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    while (running.load()) {
      auto sample = rig.unary(1, 200);
      if (running.load()) {
        during.micros.insert(during.micros.end(), sample.micros.begin(), sample.micros.end());
      }
    }
    bulk.join();
    samples["hol_p99_us"].push_back(during.percentile(0.99));
    samples["hol_samples"].push_back(static_cast<double>(during.micros.size()));
  }
  nlohmann::json out;
  for (auto& [key, values] : samples) {
    std::sort(values.begin(), values.end());
    out[key] = values[values.size() / 2];
  }
  out["rounds"] = kRounds;
  out["unary_rps_ratio"] = out["unary_rps"].get<double>() / out["baseline_unary_rps"].get<double>();
  out["unary_c64_rps_ratio"] =
      out["unary_c64_rps"].get<double>() / out["baseline_c64_rps"].get<double>();
  out["bulk_ratio"] = out["bulk_mbps"].get<double>() / out["baseline_bulk_mbps"].get<double>();
  out["hol_over_idle_p99"] = out["hol_p99_us"].get<double>() / out["idle_p99_us"].get<double>();
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
