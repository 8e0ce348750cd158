// The control plane's end of the tunnel. It accepts the WebSocket upgrade (on a TLS listener of
// its own, or handed over by an HTTPS server that read the request), checks the subprotocol,
// asks the application who the credential belongs to, and knows every connection by
// (identity, connection index): a newer connection with the same pair replaces the older one,
// which is closed with kReplaced. The server can open streams toward an agent and accepts the
// streams an agent opens.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include "common/result.h"
#include "tunnel/connection.h"

namespace outpost::tunnel {

class WsTransport;

struct PeerInfo {
  std::string identity;  // what authenticate() returned
  int connection_index = 0;
  std::string remote_address;
};

struct ServerOptions {
  ConnectionOptions connection;
  std::string path = "/v1/tunnel";
  // TLS handshake + upgrade request + authentication must finish within this.
  std::chrono::milliseconds handshake_timeout{10'000};
};

class TunnelServer : public std::enable_shared_from_this<TunnelServer> {
 public:
  // Calls back exactly once, from any thread, with the identity or why it is refused
  // (kUnauthenticated answers 401, kPermissionDenied 403, kResourceExhausted 429, anything else
  // 503).
  using AuthDone = std::function<void(Result<std::string> identity)>;

  struct Handlers {
    std::function<void(const std::string& credential, const PeerInfo& peer, AuthDone done)>
        authenticate;
    // The HELLO exchange finished: the connection can carry streams.
    std::function<void(std::shared_ptr<Connection>, const PeerInfo&)> on_connection;
    // The agent opened a stream.
    std::function<void(std::shared_ptr<Stream>, const PeerInfo&)> on_stream;
    std::function<void(const PeerInfo&, boost::system::error_code, const std::string& reason)>
        on_disconnect;
  };

  using Request = boost::beast::http::request<boost::beast::http::string_body>;

  static std::shared_ptr<TunnelServer> create(boost::asio::io_context& io,
                                              std::shared_ptr<boost::asio::ssl::context> tls,
                                              ServerOptions options, Handlers handlers);

  // Listens on a TLS port of its own; returns the port (useful with port 0).
  Result<uint16_t> listen(const std::string& address, uint16_t port);

  // Takes over a TLS connection whose HTTP upgrade request the caller already read. The
  // transport's executor must be a strand.
  void accept_upgrade(std::unique_ptr<WsTransport> transport, Request request,
                      std::string remote_address);

  // Ready connections of one identity, ordered by connection index.
  std::vector<std::shared_ptr<Connection>> connections_of(const std::string& identity) const;
  size_t connection_count() const;
  // The identities with at least one ready connection.
  std::set<std::string> identities() const;

  // Closes every connection of `identity` (a revoked credential, say).
  void disconnect(const std::string& identity, Errc code, const std::string& reason);

  // Stops accepting, drains every connection (GOAWAY, `grace` for open streams), then `done`.
  // Once `done` runs no handler is called again: a connection's on_disconnect has returned and
  // no upgrade is between authenticate and its connection's start.
  void shutdown(std::chrono::milliseconds grace, const std::function<void()>& done);

 private:
  class Handshake;
  TunnelServer(boost::asio::io_context& io, std::shared_ptr<boost::asio::ssl::context> tls,
               ServerOptions options, Handlers handlers);
  void do_accept();
  void on_ready(const std::shared_ptr<Connection>& connection, const PeerInfo& peer);
  void on_closed(const std::shared_ptr<Connection>& connection, const PeerInfo& peer,
                 boost::system::error_code code, const std::string& reason);
  // An upgrade that is about to call the handlers holds one of these until its connection is
  // started or refused; null once shutdown began (the upgrade is refused).
  std::shared_ptr<void> enter_handlers();
  // shutdown's `done` when nothing is left that could call a handler (under mutex_).
  std::function<void()> take_finished_locked();

  boost::asio::io_context& io_;
  std::shared_ptr<boost::asio::ssl::context> tls_;
  const ServerOptions options_;
  const Handlers handlers_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::atomic<bool> stopping_{false};

  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, std::shared_ptr<Connection>> registry_;
  std::vector<std::shared_ptr<Connection>> all_;  // every started connection, until closed
  int upgrading_ = 0;                             // upgrades holding enter_handlers()
  std::function<void()> on_shutdown_;
};

}  // namespace outpost::tunnel
