#include "common/url.h"

#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>

namespace outpost {

namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// What RFC 3986 never allows in a URL, unescaped: spaces, controls, non-ASCII, and "<>\"{}|\\^`".
bool forbidden(char c) {
  const auto byte = static_cast<unsigned char>(c);
  return byte <= 0x20 || byte >= 0x7f || c == '<' || c == '>' || c == '"' || c == '{' || c == '}' ||
         c == '|' || c == '\\' || c == '^' || c == '`';
}

bool host_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_';
}

}  // namespace

std::string Url::target() const {
  std::string out = path.empty() ? "/" : path;
  if (query.has_value()) out += "?" + *query;
  return out;
}

std::string Url::host_header(std::string_view host, uint16_t port, uint16_t default_port) {
  if (port != default_port) return host_port(host, port);
  return host.find(':') != std::string_view::npos ? "[" + std::string(host) + "]"
                                                  : std::string(host);
}

std::string Url::host_port(std::string_view host, uint16_t port) {
  const std::string port_text = ":" + std::to_string(port);
  return host.find(':') != std::string_view::npos ? "[" + std::string(host) + "]" + port_text
                                                  : std::string(host) + port_text;
}

uint16_t default_port(std::string_view scheme) {
  const std::string name = lower(scheme);
  if (name == "http" || name == "ws") return 80;
  if (name == "https" || name == "wss") return 443;
  return 0;
}

Result<Url> parse_url(std::string_view text) {
  if (text.empty()) return invalid_argument("the URL is empty");
  for (size_t i = 0; i < text.size(); ++i) {
    if (forbidden(text[i])) {
      return invalid_argument("the URL holds a space, control or non-ASCII character (at " +
                              std::to_string(i + 1) + "); percent-encode it");
    }
  }
  if (text.find("://") == std::string_view::npos) {
    return invalid_argument("the URL has no scheme: write it as scheme://host, e.g. https://host");
  }
  const auto parsed = boost::urls::parse_uri(text);
  if (!parsed) {
    // Boost's reasons name grammar rules; the likely causes are these.
    return invalid_argument("the URL is not valid (" + parsed.error().message() +
                            "): check the scheme, percent-escapes (%XX) and brackets around an "
                            "IPv6 address");
  }
  const boost::urls::url_view& view = *parsed;
  if (!view.has_authority()) return invalid_argument("the URL names no host");
  Url url;
  url.scheme = lower(view.scheme());
  switch (view.host_type()) {
    case boost::urls::host_type::ipv6:
    case boost::urls::host_type::ipv4:
      url.host = view.host_address();
      break;
    case boost::urls::host_type::name: {
      url.host = lower(view.host_address());
      for (const char c : url.host) {
        if (!host_name_char(c)) {
          return invalid_argument(
              "the URL's host name may hold letters, digits, '-', '.' and '_' "
              "(use the xn-- form for other names)");
        }
      }
      break;
    }
    case boost::urls::host_type::ipvfuture:
      return invalid_argument("the URL's host is an IP literal of an unknown version");
    default:
      break;
  }
  if (url.host.empty()) return invalid_argument("the URL names no host");
  url.port = default_port(url.scheme);
  if (view.has_port() && !view.port().empty()) {
    const std::string_view digits = view.port();
    uint32_t value = 0;
    for (const char c : digits) {
      if (c < '0' || c > '9') {
        return invalid_argument("the URL's port must be a number, not '" + std::string(digits) +
                                "'");
      }
      value = value * 10 + static_cast<uint32_t>(c - '0');
      if (value > 65535) break;
    }
    if (value == 0 || value > 65535) {
      return invalid_argument("the URL's port " + std::string(digits) +
                              " is out of range (1 to 65535)");
    }
    url.port = static_cast<uint16_t>(value);
    url.port_given = true;
  }
  url.path = view.encoded_path();
  // Boost.URL 1.81 reads "h:x/" as host h, an empty port and the path "x/".
  if (!url.path.empty() && url.path.front() != '/') {
    return invalid_argument("the URL's port must be a number, and its path start with '/'");
  }
  if (view.has_query()) url.query = std::string(view.encoded_query());
  if (view.has_userinfo()) {
    url.user = view.user();
    if (view.has_password()) url.password = view.password();
  }
  return url;
}

std::string format_url(const Url& url) {
  boost::urls::url out;
  out.set_scheme(url.scheme);
  if (url.user.has_value()) out.set_user(*url.user);
  if (url.password.has_value()) out.set_password(*url.password);
  out.set_host_address(url.host);
  out.set_port_number(url.port);
  out.set_encoded_path(url.path.empty() ? "/" : url.path);
  if (url.query.has_value()) out.set_encoded_query(*url.query);
  return std::string(out.buffer());
}

}  // namespace outpost
