#include "tunnel/server.h"

#include <algorithm>
#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "common/log.h"
#include "tunnel/ws_transport.h"

namespace outpost::tunnel {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using boost::system::error_code;

namespace {

bool offers_subprotocol(std::string_view header) {
  size_t start = 0;
  while (start <= header.size()) {
    size_t end = header.find(',', start);
    if (end == std::string_view::npos) end = header.size();
    std::string_view item = header.substr(start, end - start);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item == kSubprotocol) return true;
    start = end + 1;
  }
  return false;
}

int status_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::kUnauthenticated:
      return 401;
    case ErrorCode::kPermissionDenied:
      return 403;
    case ErrorCode::kInvalidArgument:
      return 400;
    case ErrorCode::kNotFound:
      return 404;
    case ErrorCode::kResourceExhausted:
      return 429;  // too many refused credentials from this address: slowed down, not refused
    default:
      return 503;
  }
}

}  // namespace

// One incoming connection from TCP accept to the WebSocket upgrade (or a refusal).
class TunnelServer::Handshake : public std::enable_shared_from_this<TunnelServer::Handshake> {
 public:
  Handshake(std::shared_ptr<TunnelServer> server, std::unique_ptr<WsTransport> transport,
            std::string remote)
      : server_(std::move(server)), transport_(std::move(transport)) {
    peer_.remote_address = std::move(remote);
  }

  // From a raw TCP socket: TLS handshake, then read the upgrade request.
  void start_tls() {
    transport_->tcp().expires_after(server_->options_.handshake_timeout);
    transport_->ws().next_layer().async_handshake(
        asio::ssl::stream_base::server, [self = shared_from_this()](error_code ec) {
          if (ec) {
            LOG_DEBUG("tunnel.tls_failed", "TLS handshake from " << self->peer_.remote_address
                                                                 << " failed: " << ec.message());
            return;
          }
          self->read_request();
        });
  }

  void read_request() {
    parser_.emplace();
    parser_->header_limit(8 * 1024);
    parser_->body_limit(1024);
    http::async_read(transport_->ws().next_layer(), buffer_, *parser_,
                     [self = shared_from_this()](error_code ec, size_t) {
                       if (ec) {
                         LOG_DEBUG("tunnel.bad_request", "unreadable upgrade request from "
                                                             << self->peer_.remote_address << ": "
                                                             << ec.message());
                         return;
                       }
                       self->upgrade(self->parser_->release());
                     });
  }

  void upgrade(Request request) {
    request_ = std::move(request);
    transport_->tcp().expires_after(server_->options_.handshake_timeout);
    if (request_.target() != server_->options_.path) {
      return refuse(404, "not_found", "no tunnel endpoint at " + std::string(request_.target()));
    }
    if (!websocket::is_upgrade(request_)) {
      return refuse(400, "invalid_argument", "expected a WebSocket upgrade");
    }
    if (!offers_subprotocol(request_[http::field::sec_websocket_protocol])) {
      return refuse(400, "invalid_argument",
                    "this server speaks " + std::string(kSubprotocol) + "; the client offered '" +
                        std::string(request_[http::field::sec_websocket_protocol]) + "'");
    }
    const std::string_view authorization = request_[http::field::authorization];
    constexpr std::string_view kBearer = "Bearer ";
    if (authorization.substr(0, kBearer.size()) != kBearer ||
        authorization.size() == kBearer.size()) {
      return refuse(401, "unauthenticated", "missing credential (Authorization: Bearer ...)");
    }
    const std::string_view index_text = request_["X-Outpost-Connection-Index"];
    int index = 0;
    for (const char c : index_text) {
      if (c < '0' || c > '9' || index > 1000) {
        return refuse(400, "invalid_argument", "bad X-Outpost-Connection-Index");
      }
      index = index * 10 + (c - '0');
    }
    peer_.connection_index = index;
    if (!server_->handlers_.authenticate) {
      return refuse(503, "unavailable", "authentication is not configured");
    }
    busy_ = server_->enter_handlers();
    if (!busy_) return refuse(503, "unavailable", "the control plane is shutting down");
    const std::string credential(authorization.substr(kBearer.size()));
    auto executor = transport_->ws().get_executor();
    server_->handlers_.authenticate(
        credential, peer_, [self = shared_from_this(), executor](Result<std::string> identity) {
          asio::post(executor, [self, identity = std::move(identity)]() mutable {
            self->on_authenticated(std::move(identity));
          });
        });
  }

 private:
  void on_authenticated(Result<std::string> identity) {
    if (!identity.ok()) {
      const Error& error = identity.error();
      LOG_NOTICE("tunnel.auth_refused",
                 "tunnel upgrade from " << peer_.remote_address << " refused: " << error.message());
      busy_.reset();
      return refuse(status_for(error.code()), std::string(error_code_name(error.code())),
                    error.message());
    }
    peer_.identity = std::move(identity).value();
    auto& ws = transport_->ws();
    ws.set_option(websocket::stream_base::decorator([](websocket::response_type& response) {
      response.set(http::field::server, "outpost-control");
      response.set(http::field::sec_websocket_protocol, kSubprotocol);
    }));
    ws.async_accept(request_, [self = shared_from_this()](error_code ec) {
      if (ec) {
        LOG_DEBUG("tunnel.upgrade_failed",
                  "upgrade from " << self->peer_.remote_address << " failed: " << ec.message());
        return;
      }
      self->start_connection();
    });
  }

  void start_connection() {
    transport_->tcp().expires_never();
    ConnectionOptions options = server_->options_.connection;
    auto connection = Connection::create(std::move(transport_), Connection::Role::kServer, options);
    std::weak_ptr<TunnelServer> weak_server = server_;
    std::weak_ptr<Connection> weak_connection = connection;
    const PeerInfo peer = peer_;
    Connection::Handlers handlers;
    handlers.on_ready = [weak_server, weak_connection, peer](const Hello&) {
      auto server = weak_server.lock();
      auto connection = weak_connection.lock();
      if (server && connection) server->on_ready(connection, peer);
    };
    handlers.on_stream = [weak_server, peer](std::shared_ptr<Stream> stream) {
      auto server = weak_server.lock();
      if (!server || !server->handlers_.on_stream) {
        stream->reset(Errc::kRefusedStream, "the server accepts no streams");
        return;
      }
      server->handlers_.on_stream(std::move(stream), peer);
    };
    handlers.on_closed = [weak_server, weak_connection, peer](error_code code,
                                                              const std::string& reason) {
      auto server = weak_server.lock();
      auto connection = weak_connection.lock();
      if (server) server->on_closed(connection, peer, code, reason);
    };
    {
      std::lock_guard<std::mutex> lock(server_->mutex_);
      if (server_->stopping_) {
        // Shutdown began during the upgrade and drained the connections it knew of; this one
        // is not started. The client reconnects elsewhere.
        connection->close(Errc::kGoingAway, "control plane shutting down");
        return;
      }
      server_->all_.push_back(connection);
    }
    busy_.reset();  // shutdown now waits for the connection itself
    connection->start(std::move(handlers));
  }

  void refuse(int status, const std::string& code, const std::string& message) {
    auto response = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(status), request_.version());
    response->set(http::field::server, "outpost-control");
    response->set(http::field::content_type, "application/json");
    response->keep_alive(false);
    response->body() =
        nlohmann::json{{"error", {{"code", code}, {"message", message}}}}.dump() + "\n";
    response->prepare_payload();
    http::async_write(transport_->ws().next_layer(), *response,
                      [self = shared_from_this(), response](error_code, size_t) {
                        self->transport_->ws().next_layer().async_shutdown(
                            [self](error_code) { self->transport_->tcp().close(); });
                      });
  }

  std::shared_ptr<TunnelServer> server_;
  std::unique_ptr<WsTransport> transport_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  Request request_;
  PeerInfo peer_;
  std::shared_ptr<void> busy_;  // from authenticate to the connection's start
};

std::shared_ptr<TunnelServer> TunnelServer::create(asio::io_context& io,
                                                   std::shared_ptr<asio::ssl::context> tls,
                                                   ServerOptions options, Handlers handlers) {
  return std::shared_ptr<TunnelServer>(
      new TunnelServer(io, std::move(tls), std::move(options), std::move(handlers)));
}

TunnelServer::TunnelServer(asio::io_context& io, std::shared_ptr<asio::ssl::context> tls,
                           ServerOptions options, Handlers handlers)
    : io_(io),
      tls_(std::move(tls)),
      options_(std::move(options)),
      handlers_(std::move(handlers)),
      acceptor_(asio::make_strand(io)) {}

Result<uint16_t> TunnelServer::listen(const std::string& address, uint16_t port) {
  error_code ec;
  const auto ip = asio::ip::make_address(address, ec);
  if (ec) return invalid_argument("bad listen address '" + address + "'");
  const asio::ip::tcp::endpoint endpoint(ip, port);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return unavailable("cannot listen on " + address + ":" + std::to_string(port) + ": " +
                       ec.message());
  }
  const uint16_t bound = acceptor_.local_endpoint().port();
  asio::post(acceptor_.get_executor(), [self = shared_from_this()] { self->do_accept(); });
  return bound;
}

void TunnelServer::do_accept() {
  acceptor_.async_accept(asio::make_strand(io_), [self = shared_from_this()](
                                                     error_code ec, asio::ip::tcp::socket socket) {
    if (ec) {
      if (ec == asio::error::operation_aborted || self->stopping_) return;
      LOG_WARNING("tunnel.accept_failed", "accept failed: " << ec.message());
    } else {
      error_code endpoint_ec;
      const auto remote = socket.remote_endpoint(endpoint_ec);
      std::string remote_name =
          endpoint_ec ? "unknown"
                      : remote.address().to_string() + ":" + std::to_string(remote.port());
      socket.set_option(asio::ip::tcp::no_delay(true), endpoint_ec);
      auto transport = std::make_unique<WsTransport>(std::move(socket), *self->tls_);
      std::make_shared<Handshake>(self, std::move(transport), std::move(remote_name))->start_tls();
    }
    if (!self->stopping_) self->do_accept();
  });
}

void TunnelServer::accept_upgrade(std::unique_ptr<WsTransport> transport, Request request,
                                  std::string remote_address) {
  auto handshake = std::make_shared<Handshake>(shared_from_this(), std::move(transport),
                                               std::move(remote_address));
  auto executor = asio::make_strand(io_);
  asio::post(executor, [handshake, request = std::move(request)]() mutable {
    handshake->upgrade(std::move(request));
  });
}

void TunnelServer::on_ready(const std::shared_ptr<Connection>& connection, const PeerInfo& peer) {
  std::shared_ptr<Connection> replaced;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto& slot = registry_[{peer.identity, peer.connection_index}];
    // A connection that is draining finishes its streams; only a live one is replaced.
    if (slot && slot != connection && !slot->is_going_away()) replaced = slot;
    slot = connection;
  }
  if (replaced) {
    LOG_NOTICE("tunnel.replaced", "connection " << peer.connection_index << " of " << peer.identity
                                                << " replaced by a newer one from "
                                                << peer.remote_address);
    replaced->close(Errc::kReplaced, "replaced by a newer connection with the same identity");
  }
  LOG_INFO("tunnel.accepted", "connection " << peer.connection_index << " of " << peer.identity
                                            << " from " << peer.remote_address << " is up");
  if (handlers_.on_connection) handlers_.on_connection(connection, peer);
}

void TunnelServer::on_closed(const std::shared_ptr<Connection>& connection, const PeerInfo& peer,
                             error_code code, const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = registry_.find({peer.identity, peer.connection_index});
    if (it != registry_.end() && it->second == connection) registry_.erase(it);
  }
  if (handlers_.on_disconnect) handlers_.on_disconnect(peer, code, reason);
  // Only now is the connection done with the handlers: shutdown's `done` may follow.
  std::function<void()> finished;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    all_.erase(std::remove(all_.begin(), all_.end(), connection), all_.end());
    finished = take_finished_locked();
  }
  if (finished) finished();
}

std::shared_ptr<void> TunnelServer::enter_handlers() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_) return nullptr;
  ++upgrading_;
  return std::shared_ptr<void>(new char, [self = shared_from_this()](void* token) {
    delete static_cast<char*>(token);
    std::function<void()> finished;
    {
      std::lock_guard<std::mutex> lock(self->mutex_);
      --self->upgrading_;
      finished = self->take_finished_locked();
    }
    if (finished) finished();
  });
}

std::function<void()> TunnelServer::take_finished_locked() {
  if (!stopping_ || !all_.empty() || upgrading_ > 0) return nullptr;
  return std::exchange(on_shutdown_, nullptr);
}

std::vector<std::shared_ptr<Connection>> TunnelServer::connections_of(
    const std::string& identity) const {
  std::vector<std::shared_ptr<Connection>> out;
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = registry_.lower_bound({identity, 0});
       it != registry_.end() && it->first.first == identity; ++it) {
    if (it->second->is_ready()) out.push_back(it->second);
  }
  return out;
}

size_t TunnelServer::connection_count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return registry_.size();
}

std::set<std::string> TunnelServer::identities() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::set<std::string> out;
  for (const auto& [key, connection] : registry_) out.insert(key.first);
  return out;
}

void TunnelServer::disconnect(const std::string& identity, Errc code, const std::string& reason) {
  std::vector<std::shared_ptr<Connection>> closing;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = registry_.lower_bound({identity, 0});
         it != registry_.end() && it->first.first == identity; ++it) {
      closing.push_back(it->second);
    }
  }
  for (auto& connection : closing) connection->close(code, reason);
}

void TunnelServer::shutdown(std::chrono::milliseconds grace, const std::function<void()>& done) {
  std::vector<std::shared_ptr<Connection>> open;
  std::function<void()> finished;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    open = all_;
    on_shutdown_ = done;
    finished = take_finished_locked();
  }
  asio::post(acceptor_.get_executor(), [self = shared_from_this()] {
    error_code ignored;
    self->acceptor_.close(ignored);
  });
  for (auto& connection : open) {
    connection->drain(grace, Errc::kGoingAway, "control plane shutting down");
  }
  if (finished) finished();
}

}  // namespace outpost::tunnel
