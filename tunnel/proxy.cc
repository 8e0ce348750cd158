#include "tunnel/proxy.h"

#include <cctype>
#include <cstdlib>
#include <memory>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "common/base64.h"

namespace outpost::tunnel {
namespace http = boost::beast::http;

namespace {

Result<std::string> percent_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size() || !std::isxdigit(static_cast<unsigned char>(text[i + 1])) ||
        !std::isxdigit(static_cast<unsigned char>(text[i + 2]))) {
      return invalid_argument("bad percent-encoding in the proxy URL's credentials");
    }
    out += static_cast<char>(std::stoi(std::string(text.substr(i + 1, 2)), nullptr, 16));
    i += 2;
  }
  return out;
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

const char* first_env(std::initializer_list<const char*> names) {
  for (const char* name : names) {
    const char* value = std::getenv(name);
    if (value != nullptr && *value != '\0') return value;
  }
  return nullptr;
}

struct ConnectOp {
  http::request<http::empty_body> request;
  http::response_parser<http::empty_body> parser;
  boost::beast::flat_buffer buffer;
  std::string proxy_name;
  std::function<void(ProxyOutcome)> handler;
};

}  // namespace

Result<ProxyConfig> parse_proxy_url(std::string_view url) {
  std::string_view rest = url;
  const auto scheme_end = rest.find("://");
  if (scheme_end != std::string_view::npos) {
    const std::string scheme = lower(rest.substr(0, scheme_end));
    if (scheme == "https") {
      return invalid_argument(
          "https:// proxies (TLS to the proxy itself) are not supported; use an http:// proxy, "
          "the tunnel's own TLS runs inside the CONNECT");
    }
    if (scheme != "http") {
      return invalid_argument("unsupported proxy scheme '" + scheme + "' (only http:// proxies)");
    }
    rest = rest.substr(scheme_end + 3);
  }
  const auto path = rest.find('/');
  if (path != std::string_view::npos) rest = rest.substr(0, path);
  ProxyConfig config;
  const auto at = rest.rfind('@');
  if (at != std::string_view::npos) {
    const std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const auto colon = userinfo.find(':');
    OUTPOST_ASSIGN_OR_RETURN(config.username, percent_decode(userinfo.substr(0, colon)));
    if (colon != std::string_view::npos) {
      OUTPOST_ASSIGN_OR_RETURN(config.password, percent_decode(userinfo.substr(colon + 1)));
    }
  }
  std::string_view host = rest;
  std::string_view port;
  if (!rest.empty() && rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) return invalid_argument("bad IPv6 proxy host");
    host = rest.substr(1, close - 1);
    if (close + 1 < rest.size() && rest[close + 1] == ':') port = rest.substr(close + 2);
  } else if (const auto colon = rest.rfind(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (host.empty()) return invalid_argument("the proxy URL names no host");
  config.host = std::string(host);
  config.port = 3128;
  if (!port.empty()) {
    int value = 0;
    for (const char c : port) {
      if (!std::isdigit(static_cast<unsigned char>(c)) || value > 65535) {
        return invalid_argument("bad proxy port '" + std::string(port) + "'");
      }
      value = value * 10 + (c - '0');
    }
    if (value <= 0 || value > 65535) {
      return invalid_argument("bad proxy port '" + std::string(port) + "'");
    }
    config.port = static_cast<uint16_t>(value);
  }
  return config;
}

bool no_proxy_matches(std::string_view no_proxy, std::string_view host) {
  const std::string target = lower(host);
  size_t start = 0;
  while (start <= no_proxy.size()) {
    size_t end = no_proxy.find(',', start);
    if (end == std::string_view::npos) end = no_proxy.size();
    std::string entry = lower(no_proxy.substr(start, end - start));
    start = end + 1;
    while (!entry.empty() && std::isspace(static_cast<unsigned char>(entry.front()))) {
      entry.erase(0, 1);
    }
    while (!entry.empty() && std::isspace(static_cast<unsigned char>(entry.back()))) {
      entry.pop_back();
    }
    if (const auto colon = entry.rfind(':');
        colon != std::string::npos && entry.find(':') == colon) {
      entry.resize(colon);  // "host:port": ports are ignored
    }
    if (entry.empty()) continue;
    if (entry == "*") return true;
    if (entry.front() == '.') entry.erase(0, 1);
    if (target == entry) return true;
    if (target.size() > entry.size() &&
        target.compare(target.size() - entry.size(), entry.size(), entry) == 0 &&
        target[target.size() - entry.size() - 1] == '.') {
      return true;
    }
  }
  return false;
}

Result<std::optional<ProxyConfig>> proxy_from_environment(std::string_view host) {
  const char* proxy = first_env({"HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"});
  if (proxy == nullptr) return std::optional<ProxyConfig>{};
  if (const char* no_proxy = first_env({"NO_PROXY", "no_proxy"});
      no_proxy != nullptr && no_proxy_matches(no_proxy, host)) {
    return std::optional<ProxyConfig>{};
  }
  auto parsed = parse_proxy_url(proxy);
  if (!parsed.ok()) {
    return invalid_argument("HTTPS_PROXY from the environment: " + parsed.error().message());
  }
  return std::optional<ProxyConfig>(std::move(parsed).value());
}

void async_proxy_connect(boost::beast::tcp_stream& stream, const ProxyConfig& proxy,
                         const std::string& target_host, uint16_t target_port,
                         std::function<void(ProxyOutcome)> handler) {
  auto op = std::make_shared<ConnectOp>();
  op->handler = std::move(handler);
  op->proxy_name = proxy.display();
  const std::string authority =
      (target_host.find(':') != std::string::npos ? "[" + target_host + "]" : target_host) + ":" +
      std::to_string(target_port);
  op->request = http::request<http::empty_body>(http::verb::connect, authority, 11);
  op->request.set(http::field::host, authority);
  op->request.set(http::field::user_agent, "outpost-tunnel/1");
  if (!proxy.username.empty()) {
    op->request.set(http::field::proxy_authorization,
                    "Basic " + base64_encode(proxy.username + ":" + proxy.password));
  }
  // A 2xx answer to CONNECT has no body, whatever its headers say.
  op->parser.skip(true);
  op->parser.header_limit(16 * 1024);
  http::async_write(stream, op->request, [&stream, op](boost::system::error_code ec, size_t) {
    if (ec) {
      op->handler({ec, 0, "cannot send CONNECT to proxy " + op->proxy_name + ": " + ec.message()});
      return;
    }
    http::async_read_header(
        stream, op->buffer, op->parser, [op](boost::system::error_code read_ec, size_t) {
          if (read_ec) {
            op->handler({read_ec, 0,
                         "proxy " + op->proxy_name +
                             " gave no valid answer to CONNECT: " + read_ec.message()});
            return;
          }
          const auto& response = op->parser.get();
          const int status = static_cast<int>(response.result_int());
          // 407 is the standard answer; some proxies (tinyproxy) answer 401 instead.
          if (status == 407 || status == 401) {
            op->handler({boost::asio::error::access_denied, status,
                         "proxy " + op->proxy_name + " refused the proxy credentials (" +
                             std::to_string(status) + " " + std::string(response.reason()) +
                             "): check the user and password in the proxy URL"});
            return;
          }
          if (status / 100 != 2) {
            op->handler({boost::asio::error::connection_refused, status,
                         "proxy " + op->proxy_name + " refused CONNECT: " + std::to_string(status) +
                             " " + std::string(response.reason())});
            return;
          }
          if (op->buffer.size() != 0) {
            op->handler({boost::asio::error::invalid_argument, status,
                         "proxy " + op->proxy_name + " sent bytes before the TLS handshake"});
            return;
          }
          op->handler({{}, status, {}});
        });
  });
}

}  // namespace outpost::tunnel
