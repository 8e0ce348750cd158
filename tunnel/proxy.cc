#include "tunnel/proxy.h"

#include <cctype>
#include <cstdlib>
#include <memory>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "common/base64.h"
#include "common/url.h"

namespace outpost::tunnel {
namespace http = boost::beast::http;

namespace {

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
  // curl's convention: a proxy without a scheme is an http:// one.
  const std::string text =
      url.find("://") == std::string_view::npos ? "http://" + std::string(url) : std::string(url);
  auto parsed = parse_url(text);
  if (!parsed.ok()) return invalid_argument("the proxy URL: " + parsed.error().message());
  if (parsed->scheme == "https") {
    return invalid_argument(
        "https:// proxies (TLS to the proxy itself) are not supported; use an http:// proxy, "
        "the tunnel's own TLS runs inside the CONNECT");
  }
  if (parsed->scheme != "http") {
    return invalid_argument("unsupported proxy scheme '" + parsed->scheme +
                            "' (only http:// proxies)");
  }
  ProxyConfig config;
  config.host = parsed->host;
  config.port = parsed->port_given ? parsed->port : 3128;
  config.username = parsed->user.value_or("");
  config.password = parsed->password.value_or("");
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
  const std::string authority = Url::host_port(target_host, target_port);
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
