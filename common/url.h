// Absolute URLs ("scheme://[user[:password]@]host[:port][/path][?query][#fragment]"), parsed
// once, by Boost.URL (RFC 3986). Each caller keeps its own policy: which schemes it takes,
// whether credentials are allowed, what a missing path means.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace outpost {

struct Url {
  std::string scheme;                // lower-cased: "https"
  std::string host;                  // IPv6 without brackets ("::1"); names lower-cased
  uint16_t port = 0;                 // the explicit port, else default_port(scheme) (0: none known)
  bool port_given = false;           // the URL named a port
  std::string path;                  // as written (percent-escapes kept), may be empty
  std::optional<std::string> query;  // without '?', escapes kept; nullopt: no '?'
  std::optional<std::string> user;   // percent-decoded; nullopt: no userinfo
  std::optional<std::string> password;  // percent-decoded; nullopt: no ':' in the userinfo

  // Path and query for an HTTP request line: "/" when the path is empty. No fragment.
  std::string target() const;
  // `host` in brackets when it is an IPv6 literal (holds a ':'), then ":port" (always, 0
  // included: a listener asking for any port).
  static std::string host_port(std::string_view host, uint16_t port);
  // An HTTP Host header: host_port() without the port when it is the scheme's `default_port`.
  static std::string host_header(std::string_view host, uint16_t port, uint16_t default_port);
};

// 80 for http and ws, 443 for https and wss, 0 for any other scheme.
uint16_t default_port(std::string_view scheme);

// An absolute URL with a host. invalid_argument naming what is wrong: no scheme, a character a
// URL cannot hold (and where), a bad percent-escape, an empty host, a port outside 1-65535.
// Messages never repeat the URL, which may hold a password.
Result<Url> parse_url(std::string_view text);

// `url` written back as a URL: user and password percent-encoded, an IPv6 host bracketed, the
// port always written, then target().
std::string format_url(const Url& url);

}  // namespace outpost
