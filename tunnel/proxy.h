// HTTP CONNECT proxies for the agent's outbound connections. The proxy comes from the
// configuration or from HTTPS_PROXY / https_proxy / ALL_PROXY (curl's conventions), skipped
// for hosts that match NO_PROXY / no_proxy. Basic authentication credentials in the URL
// (http://user:pass@host:port, percent-encoded) are sent in Proxy-Authorization and never logged:
// errors name the proxy by host:port only. TLS to the control plane runs inside the tunnel, so
// the proxy sees only the host name.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <boost/beast/core/tcp_stream.hpp>

#include "common/result.h"
#include "common/url.h"

namespace outpost::tunnel {

struct ProxyConfig {
  std::string host;
  uint16_t port = 0;
  std::string username;  // empty: no authentication
  std::string password;
  // "host:port" ("[::1]:port"): how logs and errors name the proxy (never with its credentials).
  std::string display() const { return Url::host_port(host, port); }
};

// "http://[user[:password]@]host[:port]" (common/url); without a scheme, http:// is assumed, and
// the port defaults to 3128 when absent. Errors never repeat the URL (it may hold a password).
Result<ProxyConfig> parse_proxy_url(std::string_view url);

// NO_PROXY semantics: comma-separated host names or domain suffixes (".example.com" and
// "example.com" both match "a.example.com"), "*" matches everything; ports are ignored.
bool no_proxy_matches(std::string_view no_proxy, std::string_view host);

// The proxy the environment asks for when connecting to `host`, if any.
Result<std::optional<ProxyConfig>> proxy_from_environment(std::string_view host);

// What went wrong in a CONNECT exchange. `status` is the proxy's HTTP status (0 when it never
// answered); 407 (or 401, from some proxies) means the proxy refused our credentials.
struct ProxyOutcome {
  boost::system::error_code ec;
  int status = 0;
  std::string message;
};

// Sends CONNECT host:port on an already connected stream to the proxy and reads the answer.
// The handler gets an empty `ec` once the proxy answered 2xx and the stream is a raw pipe to
// the target. The stream must outlive the operation.
void async_proxy_connect(boost::beast::tcp_stream& stream, const ProxyConfig& proxy,
                         const std::string& target_host, uint16_t target_port,
                         std::function<void(ProxyOutcome)> handler);

}  // namespace outpost::tunnel
