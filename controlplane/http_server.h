// The HTTPS listener of outpost-control (Boost.Beast over OpenSSL). It serves the REST API and
// takes agents' tunnels on the same port: a WebSocket upgrade to the tunnel path is handed, TLS
// stream and request, to tunnel::TunnelServer::accept_upgrade.
//
// Each connection is a session on its own strand. Once a request is read, the session reads the
// next request's head at once: a client that disconnects mid-exchange is seen immediately (and
// its prediction cancelled), and a pipelined request waits its turn. Deadlines: TLS handshake
// and request head, idle keep-alive, body reads and each write; an expired deadline closes the
// connection. Errors in a session end that session only.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>

#include "common/result.h"
#include "controlplane/http_types.h"

namespace outpost::tunnel {
class TunnelServer;
}

namespace outpost::control {

struct HttpServerOptions {
  std::string temp_dir;                    // where uploads land while they are read
  std::string tunnel_path = "/v1/tunnel";  // upgrades here go to the tunnel server
  size_t header_limit = 16 * 1024;
  std::chrono::milliseconds handshake_timeout{10'000};  // TLS + the first request head
  std::chrono::milliseconds idle_timeout{60'000};       // between requests
  std::chrono::milliseconds body_timeout{600'000};      // reading one body (uploads are large)
  std::chrono::milliseconds write_timeout{60'000};      // one write to a client
  size_t websocket_message_limit = 16 * 1024 * 1024;
};

class HttpServer {
 public:
  static std::shared_ptr<HttpServer> create(boost::asio::io_context& io,
                                            std::shared_ptr<boost::asio::ssl::context> tls,
                                            HttpServerOptions options, HttpHandlers handlers,
                                            std::shared_ptr<tunnel::TunnelServer> tunnel);
  virtual ~HttpServer() = default;

  // Binds and starts accepting; returns the port (useful with port 0).
  virtual Result<uint16_t> listen(const std::string& address, uint16_t port) = 0;
  // Stops accepting new connections. Open sessions finish on their own.
  virtual void stop() = 0;
};

}  // namespace outpost::control
