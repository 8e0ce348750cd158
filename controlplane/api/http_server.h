// The HTTPS listener of outpost-control (Boost.Beast over OpenSSL). It serves the REST API and
// takes agents' tunnels on the same port: a WebSocket upgrade to the tunnel path is handed, TLS
// stream and request, to tunnel::TunnelServer::accept_upgrade.
//
// Each connection is a session on its own strand. Once a request is read, the session reads the
// next request's head at once: a client that disconnects mid-exchange is seen immediately (and
// its prediction cancelled), and a pipelined request waits its turn. Deadlines: TLS handshake
// and request head, idle keep-alive, body reads and each write; an expired deadline closes the
// connection. Errors in a session end that session only.
//
// Nothing of a body is read before the application admitted its head (HttpHandlers::admit_head:
// the credential, the route and its scope): an unauthenticated upload is refused with 0 bytes
// read or written. Connections per address and in total, and the bodies in flight in memory and
// on disk, are bounded (HttpServerOptions); a body must keep moving at a minimum rate.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>

#include "common/result.h"
#include "controlplane/api/http_types.h"

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
  std::chrono::milliseconds write_timeout{60'000};      // one write to a client
  size_t websocket_message_limit = 16 * 1024 * 1024;

  // Connections being served over HTTP (a tunnel counts until it is handed to the tunnel
  // server). Past either limit a connection is answered 429 with Retry-After and closed; past
  // both by kRefusingSlack more, it is closed at accept without a TLS handshake.
  size_t max_connections = 4096;
  size_t max_connections_per_address = 256;  // an IPv4 address, or an IPv6 /64
  // Request bodies being read, all clients together: into memory, and to disk (uploads). A body
  // counts for its Content-Length, or for its endpoint's limit when it is chunked. Past either,
  // 429 with Retry-After before any body byte is read.
  size_t max_body_memory_bytes = 256 * 1024 * 1024;
  size_t max_body_disk_bytes = size_t{8} * 1024 * 1024 * 1024;
  // A body that sends nothing for body_idle_timeout is cut; one that, after body_grace, has
  // averaged fewer than body_min_bytes_per_second is answered 408 and cut.
  std::chrono::milliseconds body_idle_timeout{15'000};
  std::chrono::milliseconds body_grace{10'000};
  size_t body_min_bytes_per_second = 16 * 1024;
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
