#include "tunnel/client.h"

#include <algorithm>
#include <atomic>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <openssl/ssl.h>

#include "common/log.h"
#include "common/url.h"
#include "tunnel/proxy.h"
#include "tunnel/ws_transport.h"

namespace outpost::tunnel {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using boost::system::error_code;

std::string_view slot_state_name(SlotState state) {
  switch (state) {
    case SlotState::kConnecting:
      return "connecting";
    case SlotState::kConnected:
      return "connected";
    case SlotState::kBackingOff:
      return "backing off";
    case SlotState::kStopped:
      return "stopped";
  }
  return "unknown";
}

int ClientStatus::connected() const {
  return static_cast<int>(std::count_if(slots.begin(), slots.end(), [](const SlotStatus& s) {
    return s.state == SlotState::kConnected;
  }));
}

Result<TunnelUrl> parse_tunnel_url(std::string_view url) {
  const std::string quoted = "control plane URL '" + std::string(url) + "'";
  auto parsed = parse_url(url);
  if (!parsed.ok()) return invalid_argument(quoted + ": " + parsed.error().message());
  if (parsed->scheme != "wss") {
    return invalid_argument(quoted + " must start with wss:// (the tunnel always uses TLS)");
  }
  TunnelUrl out;
  out.host = parsed->host;
  out.port = parsed->port;
  out.path = parsed->path.empty() ? "/v1/tunnel" : parsed->path;
  if (parsed->query.has_value()) out.path += "?" + *parsed->query;
  return out;
}

// State shared by the client object and its slots.
struct TunnelClient::Shared {
  asio::io_context& io;
  ClientOptions options;
  Handlers handlers;
  TunnelUrl url;
  std::optional<ProxyConfig> proxy;
  std::shared_ptr<asio::ssl::context> tls;
  const Clock* clock;
  Random* random;
  DelayScheduler* scheduler;
  std::vector<std::shared_ptr<Slot>> slots;
  mutable std::mutex status_mutex;
  ClientStatus status;

  Shared(asio::io_context& io_context, ClientOptions client_options, Handlers client_handlers)
      : io(io_context),
        options(std::move(client_options)),
        handlers(std::move(client_handlers)),
        clock(nullptr),
        random(nullptr),
        scheduler(nullptr) {}

  void publish(int index, const SlotStatus& slot_status) {
    ClientStatus snapshot;
    {
      std::lock_guard<std::mutex> lock(status_mutex);
      status.slots[static_cast<size_t>(index)] = slot_status;
      snapshot = status;
    }
    if (handlers.on_status) handlers.on_status(snapshot);
  }
};

// One connection slot: a loop of attempt -> connected -> lost -> backoff -> attempt.
class TunnelClient::Slot : public std::enable_shared_from_this<TunnelClient::Slot> {
 public:
  Slot(std::shared_ptr<Shared> shared, int index)
      : shared_(std::move(shared)),
        index_(index),
        strand_(asio::make_strand(shared_->io)),
        resolver_(strand_),
        retry_timer_(strand_),
        attempt_timer_(strand_),
        backoff_(shared_->options.backoff, *shared_->clock, *shared_->random) {}

  void start() {
    asio::post(strand_, [self = shared_from_this()] { self->attempt(); });
  }

  void stop(std::chrono::milliseconds grace, std::function<void()> done) {
    asio::post(strand_, [self = shared_from_this(), grace, done = std::move(done)]() mutable {
      self->do_stop(grace, std::move(done));
    });
  }

  std::shared_ptr<Connection> ready_connection() const {
    std::lock_guard<std::mutex> lock(connection_mutex_);
    if (current_ && current_->is_ready() && !current_->is_going_away()) return current_;
    return nullptr;
  }

 private:
  void attempt() {
    if (stopped_) return;
    ++attempt_id_;
    status_.state = SlotState::kConnecting;
    status_.retry_in = std::chrono::milliseconds(0);
    shared_->publish(index_, status_);
    transport_ = std::make_unique<WsTransport>(strand_, *shared_->tls);
    attempt_timed_out_ = false;
    const bool via_proxy = shared_->proxy.has_value();
    const std::string& host = via_proxy ? shared_->proxy->host : shared_->url.host;
    const uint16_t port = via_proxy ? shared_->proxy->port : shared_->url.port;
    arm_step(Step::kResolve);
    resolver_.async_resolve(
        host, std::to_string(port),
        [self = shared_from_this(), id = attempt_id_](
            error_code ec, const asio::ip::tcp::resolver::results_type& results) {
          // A resolution that outlived its timeout: the attempt has failed already.
          if (id != self->attempt_id_ || !self->transport_) return;
          self->on_resolve(ec, results);
        });
  }

  // The steps of an attempt, each bounded by its own DialTimeouts entry.
  enum class Step { kResolve, kTcpConnect, kProxy, kTls, kUpgrade, kHello };

  std::chrono::milliseconds step_limit(Step step) const {
    const DialTimeouts& dial = shared_->options.dial;
    switch (step) {
      case Step::kResolve:
        return dial.resolve;
      case Step::kTcpConnect:
        return dial.tcp_connect;
      case Step::kProxy:
        return dial.proxy_connect;
      case Step::kTls:
        return dial.tls_handshake;
      case Step::kUpgrade:
      case Step::kHello:
        return dial.upgrade;
    }
    return dial.upgrade;
  }

  static std::string_view step_name(Step step) {
    switch (step) {
      case Step::kResolve:
        return "name resolution";
      case Step::kTcpConnect:
        return "TCP connect";
      case Step::kProxy:
        return "proxy CONNECT";
      case Step::kTls:
        return "TLS handshake";
      case Step::kUpgrade:
        return "WebSocket upgrade";
      case Step::kHello:
        return "HELLO exchange";
    }
    return "dial";
  }

  // Starts the clock of the attempt's next step. When it runs out first, the step is abandoned:
  // its socket closed (its handler then fails the attempt, named as timed out), or for a
  // resolution, which cannot be interrupted, the attempt fails at once.
  void arm_step(Step step) {
    step_ = step;
    const uint64_t id = ++step_id_;
    attempt_timer_.expires_after(step_limit(step));
    attempt_timer_.async_wait([self = shared_from_this(), id](error_code ec) {
      // A timer re-armed after it expired still runs its old handler: the id tells.
      if (!ec && id == self->step_id_) self->step_timed_out();
    });
  }

  void disarm_step() {
    ++step_id_;
    attempt_timer_.cancel();
  }

  void step_timed_out() {
    if (stopped_) return;
    attempt_timed_out_ = true;
    if (step_ == Step::kResolve) {
      resolver_.cancel();
      return failed(FailureKind::kTransient, "no answer from the resolver");
    }
    if (transport_) {
      transport_->tcp().close();
      return;
    }
    std::shared_ptr<Connection> pending;
    {
      std::lock_guard<std::mutex> lock(connection_mutex_);
      pending = pending_;
    }
    // Its on_closed fails the attempt.
    if (pending) pending->close(Errc::kTimeout, "no HELLO from the server in time");
  }

  std::string target_name() const { return Url::host_port(shared_->url.host, shared_->url.port); }

  void on_resolve(error_code ec, const asio::ip::tcp::resolver::results_type& results) {
    if (stopped_) return finish_stopped_attempt();
    if (ec) {
      const std::string what =
          shared_->proxy ? "proxy " + shared_->proxy->display() : target_name();
      return failed(FailureKind::kTransient, "cannot resolve " + what + ": " + ec.message());
    }
    arm_step(Step::kTcpConnect);
    transport_->tcp().async_connect(
        results,
        [self = shared_from_this()](error_code connect_ec, const asio::ip::tcp::endpoint&) {
          self->on_tcp_connect(connect_ec);
        });
  }

  void on_tcp_connect(error_code ec) {
    if (stopped_) return finish_stopped_attempt();
    if (ec) {
      const std::string what =
          shared_->proxy ? "proxy " + shared_->proxy->display() : target_name();
      return failed(FailureKind::kTransient, "cannot connect to " + what + ": " + reason(ec));
    }
    error_code ignored;
    transport_->tcp().socket().set_option(asio::ip::tcp::no_delay(true), ignored);
    if (shared_->proxy) {
      arm_step(Step::kProxy);
      async_proxy_connect(
          transport_->tcp(), *shared_->proxy, shared_->url.host, shared_->url.port,
          [self = shared_from_this()](const ProxyOutcome& outcome) { self->on_proxy(outcome); });
      return;
    }
    start_tls();
  }

  void on_proxy(const ProxyOutcome& outcome) {
    if (stopped_) return finish_stopped_attempt();
    if (outcome.ec) {
      const bool refused = outcome.status == 407 || outcome.status == 401;
      return failed(refused ? FailureKind::kRefused : FailureKind::kTransient,
                    attempt_timed_out_ ? "timed out waiting for proxy " + shared_->proxy->display()
                                       : outcome.message);
    }
    start_tls();
  }

  void start_tls() {
    auto& tls = transport_->ws().next_layer();
    // SNI, so that a server hosting several names presents the right certificate.
    if (SSL_set_tlsext_host_name(tls.native_handle(), shared_->url.host.c_str()) != 1) {
      return failed(FailureKind::kTransient, "cannot set TLS server name " + shared_->url.host);
    }
    tls.set_verify_callback(asio::ssl::host_name_verification(shared_->url.host));
    arm_step(Step::kTls);
    tls.async_handshake(asio::ssl::stream_base::client,
                        [self = shared_from_this()](error_code ec) { self->on_tls(ec); });
  }

  void on_tls(error_code ec) {
    if (stopped_) return finish_stopped_attempt();
    auto* ssl = transport_->ws().next_layer().native_handle();
    if (ec) {
      const std::string verify = verify_failure_reason(ssl);
      if (!verify.empty()) {
        return failed(FailureKind::kRefused, "TLS verification of " + shared_->url.host +
                                                 " failed: " + verify +
                                                 " (check ca_file and the server's certificate)");
      }
      return failed(FailureKind::kTransient,
                    "TLS handshake with " + target_name() + " failed: " + reason(ec));
    }
    if (Status pinned = check_spki_pins(ssl, shared_->options.tls.spki_pins); !pinned.ok()) {
      return failed(FailureKind::kRefused, "TLS pin check of " + shared_->url.host +
                                               " failed: " + pinned.error().message());
    }
    auto& ws = transport_->ws();
    const std::string credential = shared_->options.credential;
    const int index = index_;
    ws.set_option(
        websocket::stream_base::decorator([credential, index](websocket::request_type& req) {
          req.set(http::field::user_agent, "outpost-tunnel/1");
          req.set(http::field::authorization, "Bearer " + credential);
          req.set(http::field::sec_websocket_protocol, kSubprotocol);
          req.set("X-Outpost-Connection-Index", std::to_string(index));
        }));
    // An IPv6 host goes in brackets; the default port is left out.
    const std::string host_header = Url::host_header(shared_->url.host, shared_->url.port, 443);
    upgrade_response_ = {};
    arm_step(Step::kUpgrade);
    ws.async_handshake(
        upgrade_response_, host_header, shared_->url.path,
        [self = shared_from_this()](error_code handshake_ec) { self->on_upgrade(handshake_ec); });
  }

  void on_upgrade(error_code ec) {
    if (stopped_) return finish_stopped_attempt();
    const int status = static_cast<int>(upgrade_response_.result_int());
    if (ec) {
      std::string body = upgrade_response_.body().substr(0, 300);
      if (status == 401 || status == 403) {
        return failed(FailureKind::kRefused, "the control plane refused this agent's credential (" +
                                                 std::to_string(status) +
                                                 (body.empty() ? "" : ": " + body) + ")");
      }
      if (status != 0) {
        return failed(FailureKind::kTransient,
                      "WebSocket upgrade at " + target_name() + shared_->url.path + " answered " +
                          std::to_string(status) + (body.empty() ? "" : ": " + body));
      }
      return failed(FailureKind::kTransient,
                    "WebSocket upgrade at " + target_name() + " failed: " + reason(ec));
    }
    if (upgrade_response_[http::field::sec_websocket_protocol] != kSubprotocol) {
      return failed(FailureKind::kRefused, "the server at " + target_name() + " does not speak " +
                                               std::string(kSubprotocol));
    }
    transport_->tcp().expires_never();
    arm_step(Step::kHello);
    ConnectionOptions options = shared_->options.connection;
    auto connection = Connection::create(std::move(transport_), Connection::Role::kClient, options);
    {
      std::lock_guard<std::mutex> lock(connection_mutex_);
      pending_ = connection;
    }
    std::weak_ptr<Slot> weak = shared_from_this();
    std::weak_ptr<Connection> weak_connection = connection;
    Connection::Handlers handlers;
    handlers.on_ready = [weak, weak_connection](const Hello& hello) {
      if (auto self = weak.lock()) self->on_ready(weak_connection.lock(), hello);
    };
    handlers.on_stream = [weak](std::shared_ptr<Stream> stream) {
      auto self = weak.lock();
      if (!self || !self->shared_->handlers.on_stream) {
        stream->reset(Errc::kRefusedStream, "the agent accepts no streams");
        return;
      }
      self->shared_->handlers.on_stream(std::move(stream), self->index_);
    };
    handlers.on_goaway = [weak, weak_connection](Errc code, const std::string& why) {
      auto self = weak.lock();
      if (!self) return;
      asio::post(self->strand_, [self, connection = weak_connection.lock(), code, why] {
        self->on_goaway(connection, code, why);
      });
    };
    handlers.on_closed = [weak, weak_connection](error_code code, const std::string& why) {
      auto self = weak.lock();
      if (!self) return;
      asio::post(self->strand_, [self, connection = weak_connection.lock(), code, why] {
        self->on_closed(connection, code, why);
      });
    };
    connection->start(std::move(handlers));
  }

  void on_ready(const std::shared_ptr<Connection>& connection, const Hello& hello) {
    if (!connection) return;
    disarm_step();
    {
      std::lock_guard<std::mutex> lock(connection_mutex_);
      if (pending_ != connection) return;
      pending_.reset();
      current_ = connection;
    }
    if (stopped_) {
      connection->drain(stop_grace_);
      return;
    }
    backoff_.on_connected();
    const bool was_down = status_.consecutive_failures > 0;
    status_.state = SlotState::kConnected;
    status_.server_id = std::string(hello.peer_id);
    status_.consecutive_failures = 0;
    status_.refused = false;
    shared_->publish(index_, status_);
    LOG_NOTICE(
        "tunnel.up", "connection "
                         << index_ << " to " << target_name() << " is up"
                         << (status_.server_id.empty() ? "" : " (server " + status_.server_id + ")")
                         << (was_down ? ", after failures" : ""));
  }

  void on_goaway(const std::shared_ptr<Connection>& connection, Errc code, const std::string& why) {
    if (!connection || stopped_) return;
    // Replaced by a newer connection with this identity: another agent holds this node's
    // credential. Fighting back at once would make the two replace each other in a loop; the
    // close that follows takes the slow, refused path instead (on_closed).
    if (code == Errc::kReplaced) return;
    {
      std::lock_guard<std::mutex> lock(connection_mutex_);
      if (current_ != connection) return;
      current_.reset();
      draining_.push_back(connection);
    }
    LOG_INFO("tunnel.server_drain", "connection " << index_ << ": server is going away ("
                                                  << errc_name(code) << ": " << why
                                                  << "); opening a replacement now");
    backoff_.on_disconnected();
    attempt();  // the replacement comes up while the old connection finishes its streams
  }

  void on_closed(const std::shared_ptr<Connection>& connection, error_code code,
                 const std::string& why) {
    bool was_current = false;
    bool was_pending = false;
    {
      std::lock_guard<std::mutex> lock(connection_mutex_);
      if (connection && connection == current_) {
        current_.reset();
        was_current = true;
      } else if (connection && connection == pending_) {
        pending_.reset();
        was_pending = true;
      } else {
        draining_.erase(std::remove(draining_.begin(), draining_.end(), connection),
                        draining_.end());
      }
    }
    if (!was_current && !was_pending) {
      if (stopped_) maybe_stopped();
      return;  // an old, draining connection finished
    }
    if (stopped_) return maybe_stopped();
    if (was_current) {
      backoff_.on_disconnected();
      LOG_WARNING("tunnel.down",
                  "connection " << index_ << " to " << target_name() << " lost: " << why);
      if (code == make_error_code(Errc::kReplaced)) {
        LOG_ERROR("tunnel.replaced",
                  "connection " << index_
                                << " was replaced by another with the same identity; is a second "
                                   "agent running with this node's credential?");
        return failed(FailureKind::kRefused,
                      "replaced by a newer connection with this node's identity (a second agent "
                      "with the same credential?)");
      }
      return failed(FailureKind::kTransient, "connection lost: " + why);
    }
    failed(FailureKind::kTransient, "connection closed during the handshake: " + why);
  }

  void failed(FailureKind kind, const std::string& why) {
    disarm_step();
    transport_.reset();
    if (stopped_) return maybe_stopped();
    std::string message = why;
    if (attempt_timed_out_) {
      message = std::string(step_name(step_)) + " timed out after " +
                std::to_string(step_limit(step_).count()) + " ms (" + why + ")";
    }
    const auto delay = backoff_.next_delay(kind);
    status_.state = SlotState::kBackingOff;
    status_.consecutive_failures = backoff_.consecutive_failures();
    status_.refused = kind == FailureKind::kRefused;
    status_.last_error = message;
    status_.retry_in = delay;
    shared_->publish(index_, status_);
    if (kind == FailureKind::kRefused) {
      LOG_ERROR("tunnel.refused", "connection " << index_ << ": " << message << "; retrying in "
                                                << delay.count() / 1000 << " s");
    } else if (status_.consecutive_failures == 1 || status_.consecutive_failures % 10 == 0) {
      // The first failure of a burst, then every tenth: enough to see, not a flood.
      LOG_WARNING("tunnel.retry", "connection " << index_ << ": " << message << "; retrying in "
                                                << delay.count() << " ms (failure "
                                                << status_.consecutive_failures << ")");
    }
    const uint64_t id = attempt_id_;
    auto resume = [weak = std::weak_ptr<Slot>(shared_from_this()), id] {
      auto self = weak.lock();
      if (!self) return;
      asio::post(self->strand_, [self, id] {
        if (id == self->attempt_id_ && !self->stopped_) self->attempt();
      });
    };
    if (shared_->scheduler != nullptr) {
      shared_->scheduler->wait(index_, delay, std::move(resume));
      return;
    }
    retry_timer_.expires_after(delay);
    retry_timer_.async_wait([resume = std::move(resume)](error_code ec) {
      if (!ec) resume();
    });
  }

  static std::string reason(error_code ec) {
    if (ec == asio::error::operation_aborted) return "timed out";
    return ec.message();
  }

  void do_stop(std::chrono::milliseconds grace, std::function<void()> done) {
    stopped_ = true;
    stop_grace_ = grace;
    on_stopped_ = std::move(done);
    retry_timer_.cancel();
    disarm_step();
    resolver_.cancel();
    if (transport_) transport_->tcp().close();
    std::vector<std::shared_ptr<Connection>> open;
    {
      std::lock_guard<std::mutex> lock(connection_mutex_);
      if (current_) open.push_back(current_);
      if (pending_) open.push_back(pending_);
      open.insert(open.end(), draining_.begin(), draining_.end());
      if (current_) draining_.push_back(current_);
      if (pending_) draining_.push_back(pending_);
      current_.reset();
      pending_.reset();
    }
    for (auto& connection : open) connection->drain(grace, Errc::kGoingAway, "agent shutting down");
    maybe_stopped();
  }

  void finish_stopped_attempt() {
    transport_.reset();
    maybe_stopped();
  }

  void maybe_stopped() {
    {
      std::lock_guard<std::mutex> lock(connection_mutex_);
      if (current_ || pending_ || !draining_.empty() || transport_) return;
    }
    if (!on_stopped_) return;
    status_.state = SlotState::kStopped;
    shared_->publish(index_, status_);
    auto done = std::move(on_stopped_);
    on_stopped_ = nullptr;
    done();
  }

  std::shared_ptr<Shared> shared_;
  const int index_;
  asio::strand<asio::io_context::executor_type> strand_;
  asio::ip::tcp::resolver resolver_;
  asio::steady_timer retry_timer_;
  asio::steady_timer attempt_timer_;
  ReconnectBackoff backoff_;
  std::unique_ptr<WsTransport> transport_;
  websocket::response_type upgrade_response_;
  uint64_t attempt_id_ = 0;
  Step step_ = Step::kResolve;
  uint64_t step_id_ = 0;  // which arm_step() the attempt timer's handler belongs to
  bool attempt_timed_out_ = false;
  bool stopped_ = false;
  std::chrono::milliseconds stop_grace_{0};
  std::function<void()> on_stopped_;
  SlotStatus status_;

  mutable std::mutex connection_mutex_;
  std::shared_ptr<Connection> current_;
  std::shared_ptr<Connection> pending_;
  std::vector<std::shared_ptr<Connection>> draining_;
};

Result<std::shared_ptr<TunnelClient>> TunnelClient::create(asio::io_context& io,
                                                           ClientOptions options, Handlers handlers,
                                                           ClientSeams seams) {
  if (options.connections < 1 || options.connections > 16) {
    return invalid_argument("connections must be between 1 and 16, got " +
                            std::to_string(options.connections));
  }
  if (options.credential.empty()) return invalid_argument("a tunnel credential is required");
  auto shared = std::make_shared<Shared>(io, std::move(options), std::move(handlers));
  OUTPOST_ASSIGN_OR_RETURN(shared->url, parse_tunnel_url(shared->options.url));
  OUTPOST_ASSIGN_OR_RETURN(shared->tls, make_client_tls_context(shared->options.tls));
  if (!shared->options.proxy_url.empty()) {
    OUTPOST_ASSIGN_OR_RETURN(shared->proxy, parse_proxy_url(shared->options.proxy_url));
  } else if (shared->options.use_environment_proxy) {
    OUTPOST_ASSIGN_OR_RETURN(shared->proxy, proxy_from_environment(shared->url.host));
  }
  static SystemRandom default_random;
  shared->clock = seams.clock != nullptr ? seams.clock : &SteadyClock::instance();
  shared->random = seams.random != nullptr ? seams.random : &default_random;
  shared->scheduler = seams.scheduler;
  shared->status.slots.resize(static_cast<size_t>(shared->options.connections));
  for (int i = 0; i < shared->options.connections; ++i) {
    shared->slots.push_back(std::make_shared<Slot>(shared, i));
  }
  if (shared->proxy) {
    LOG_INFO("tunnel.proxy",
             "connecting to " << shared->url.host << " through proxy " << shared->proxy->display());
  }
  return std::shared_ptr<TunnelClient>(new TunnelClient(std::move(shared)));
}

TunnelClient::TunnelClient(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}

// Each slot holds the shared state, which lists the slots: the list goes with the client, so
// that the slots and the state are freed once the slots' last operations have ended.
TunnelClient::~TunnelClient() { shared_->slots.clear(); }

void TunnelClient::start() {
  for (auto& slot : shared_->slots) slot->start();
}

void TunnelClient::shutdown(std::chrono::milliseconds grace, std::function<void()> done) {
  auto remaining = std::make_shared<std::atomic<int>>(static_cast<int>(shared_->slots.size()));
  auto shared_done = std::make_shared<std::function<void()>>(std::move(done));
  for (auto& slot : shared_->slots) {
    slot->stop(grace, [remaining, shared_done] {
      if (remaining->fetch_sub(1) == 1 && *shared_done) (*shared_done)();
    });
  }
}

Result<std::shared_ptr<Stream>> TunnelClient::open_stream(std::string metadata,
                                                          std::string first_message,
                                                          bool send_first_message,
                                                          bool end_stream) {
  // A connection that stopped answering (a silent partition of its path, not yet declared
  // dead) gets new streams only when no other one answers.
  std::shared_ptr<Connection> best;
  bool best_responsive = false;
  for (auto& slot : shared_->slots) {
    auto connection = slot->ready_connection();
    if (!connection) continue;
    const bool responsive = connection->is_responsive();
    if (!best || (responsive && !best_responsive) ||
        (responsive == best_responsive && connection->stream_count() < best->stream_count())) {
      best = std::move(connection);
      best_responsive = responsive;
    }
  }
  if (!best) {
    std::string why;
    {
      std::lock_guard<std::mutex> lock(shared_->status_mutex);
      for (const auto& slot : shared_->status.slots) {
        if (!slot.last_error.empty()) why = slot.last_error;
      }
    }
    return unavailable("no tunnel connection is up" + (why.empty() ? "" : ": " + why));
  }
  return best->open_stream(std::move(metadata), std::move(first_message), send_first_message,
                           end_stream);
}

ClientStatus TunnelClient::status() const {
  std::lock_guard<std::mutex> lock(shared_->status_mutex);
  return shared_->status;
}

}  // namespace outpost::tunnel
