#include "cli/http_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <nlohmann/json.hpp>

#include "common/url.h"
#include "tunnel/run_one_operation.h"
#include "tunnel/tls.h"

namespace outpost::cli {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

Result<BaseUrl> parse_base_url(std::string_view url) {
  auto parsed = parse_url(url);
  if (!parsed.ok()) {
    return invalid_argument("the base URL must look like https://host[:port]: " +
                            parsed.error().message());
  }
  if (parsed->scheme == "http") {
    return invalid_argument("the base URL must use https:// (tokens never travel in clear)");
  }
  if (parsed->scheme != "https") {
    return invalid_argument("the base URL must look like https://host[:port], not " +
                            parsed->scheme + "://");
  }
  if (parsed->user.has_value()) {
    return invalid_argument("the base URL may not hold user:password@ (log in with a token)");
  }
  if (parsed->query.has_value()) return invalid_argument("the base URL may not hold a query (?)");
  BaseUrl out;
  out.host = parsed->host;
  out.port = parsed->port;
  out.path = parsed->path;
  while (!out.path.empty() && out.path.back() == '/') out.path.pop_back();
  return out;
}

Error error_from_response(const Response& response) {
  auto body = nlohmann::json::parse(response.body, nullptr, false);
  std::string code;
  std::string message;
  if (body.is_object() && body.contains("status") && body["status"].is_object()) {
    code = body["status"].value("code", "");
    message = body["status"].value("description", "");
  }
  ErrorCode error_code = ErrorCode::kInternal;
  for (int i = 0; i <= static_cast<int>(ErrorCode::kInternal); ++i) {
    if (error_code_name(static_cast<ErrorCode>(i)) == code) error_code = static_cast<ErrorCode>(i);
  }
  if (message.empty()) {
    if (response.status == 401) {
      error_code = ErrorCode::kUnauthenticated;
    } else if (response.status == 404) {
      error_code = ErrorCode::kNotFound;
    } else if (response.status >= 500) {
      error_code = ErrorCode::kUnavailable;
    }
    message = "the server answered HTTP " + std::to_string(response.status);
  }
  return {error_code, message};
}

namespace {

using tunnel::run_one_operation;

std::string describe(const error_code& ec) {
  if (ec == beast::error::timeout) return "timed out";
  return ec.message();
}

class WebSocketImpl final : public WebSocketClient {
 public:
  WebSocketImpl(std::unique_ptr<asio::io_context> io, std::shared_ptr<asio::ssl::context> tls,
                std::unique_ptr<websocket::stream<TlsStream>> ws)
      : io_(std::move(io)), tls_(std::move(tls)), ws_(std::move(ws)) {}
  ~WebSocketImpl() override { close(); }

  Status send(const std::string& text) override {
    ws_->text(true);
    const error_code ec = run_one_operation(
        *io_, [&](auto handler) { ws_->async_write(asio::buffer(text), handler); });
    if (ec) return unavailable("sending on the WebSocket failed: " + describe(ec));
    return {};
  }

  Result<std::optional<std::string>> receive() override {
    beast::flat_buffer buffer;
    const error_code ec =
        run_one_operation(*io_, [&](auto handler) { ws_->async_read(buffer, handler); });
    if (ec == websocket::error::closed) return std::optional<std::string>();
    if (ec) return unavailable("the WebSocket ended: " + describe(ec));
    return std::optional<std::string>(beast::buffers_to_string(buffer.data()));
  }

  void close() override {
    if (closed_) return;
    closed_ = true;
    if (ws_->is_open()) {
      run_one_operation(
          *io_, [&](auto handler) { ws_->async_close(websocket::close_code::normal, handler); });
    }
  }

 private:
  std::unique_ptr<asio::io_context> io_;
  std::shared_ptr<asio::ssl::context> tls_;
  std::unique_ptr<websocket::stream<TlsStream>> ws_;
  bool closed_ = false;
};

class HttpClientImpl final : public HttpClient {
 public:
  HttpClientImpl(ClientConfig config, BaseUrl base, std::shared_ptr<asio::ssl::context> tls)
      : config_(std::move(config)), base_(std::move(base)), tls_(std::move(tls)) {}

  Result<Response> send(std::string_view method, const std::string& path, const std::string& body,
                        const std::string& content_type, const Headers& headers) override {
    http::request<http::string_body> request;
    prepare(request, method, path, headers);
    if (!body.empty() || method == "POST" || method == "PUT") {
      request.set(http::field::content_type, content_type);
      request.body() = body;
    }
    request.prepare_payload();
    return exchange(request, nullptr);
  }

  Result<Response> send_file(std::string_view method, const std::string& path,
                             const std::string& file, const std::string& content_type) override {
    http::request<http::file_body> request;
    prepare(request, method, path, {});
    request.set(http::field::content_type, content_type);
    error_code ec;
    request.body().open(file.c_str(), beast::file_mode::scan, ec);
    if (ec) return invalid_argument("cannot read " + file + ": " + ec.message());
    request.prepare_payload();
    return exchange(request, nullptr);
  }

  Result<Response> send_streaming(std::string_view method, const std::string& path,
                                  const std::string& body, const std::string& content_type,
                                  const Headers& headers,
                                  const std::function<bool(std::string_view)>& on_data) override {
    http::request<http::string_body> request;
    prepare(request, method, path, headers);
    request.set(http::field::content_type, content_type);
    request.body() = body;
    request.prepare_payload();
    return exchange(request, &on_data);
  }

  Result<std::unique_ptr<WebSocketClient>> websocket(const std::string& path) override {
    auto io = std::make_unique<asio::io_context>();
    auto ws = std::make_unique<websocket::stream<TlsStream>>(*io, *tls_);
    OUTPOST_RETURN_IF_ERROR(connect(*io, ws->next_layer()));
    auto timeouts = websocket::stream_base::timeout::suggested(beast::role_type::client);
    timeouts.handshake_timeout = config_.timeout;
    ws->set_option(timeouts);
    const std::string pat = config_.pat;
    ws->set_option(websocket::stream_base::decorator([pat](websocket::request_type& request) {
      request.set(http::field::user_agent, "outpost-cli");
      if (!pat.empty()) request.set(http::field::authorization, "Key " + pat);
    }));
    ws->read_message_max(64 * 1024 * 1024);
    websocket::response_type upgrade;
    const std::string host = host_header();
    const std::string target = base_.path + path;
    beast::get_lowest_layer(*ws).expires_never();
    const error_code ec = run_one_operation(
        *io, [&](auto handler) { ws->async_handshake(upgrade, host, target, handler); });
    if (ec) {
      if (upgrade.result_int() >= 400) {
        Response response;
        response.status = static_cast<int>(upgrade.result_int());
        response.body = upgrade.body();
        // Beast keeps only the head of a refused upgrade; the status still says what happened.
        return error_from_response(response);
      }
      return unavailable("the WebSocket upgrade failed: " + describe(ec));
    }
    // Open: a peer that stops answering pings for the call's timeout is gone (a link that drops
    // packets silently would otherwise leave a receive waiting forever).
    timeouts.idle_timeout = config_.timeout;
    timeouts.keep_alive_pings = true;
    ws->set_option(timeouts);
    return std::unique_ptr<WebSocketClient>(
        std::make_unique<WebSocketImpl>(std::move(io), tls_, std::move(ws)));
  }

 private:
  std::string host_header() const { return Url::host_header(base_.host, base_.port, 443); }

  template <class Body>
  void prepare(http::request<Body>& request, std::string_view method, const std::string& path,
               const Headers& headers) {
    request.version(11);
    request.method(http::string_to_verb(method));
    request.target(base_.path + path);
    request.set(http::field::host, host_header());
    request.set(http::field::user_agent, "outpost-cli");
    request.keep_alive(false);
    if (!config_.pat.empty()) request.set(http::field::authorization, "Key " + config_.pat);
    for (const auto& [name, value] : headers) request.set(name, value);
  }

  Status connect(asio::io_context& io, TlsStream& stream) {
    tcp::resolver resolver(io);
    error_code ec;
    auto endpoints = resolver.resolve(base_.host, std::to_string(base_.port), ec);
    if (ec) return unavailable("cannot resolve " + base_.host + ": " + ec.message());
    auto& tcp_stream = beast::get_lowest_layer(stream);
    tcp_stream.expires_after(std::chrono::seconds(30));
    ec = run_one_operation(io, [&](auto handler) { tcp_stream.async_connect(endpoints, handler); });
    if (ec) {
      return unavailable("cannot connect to " + host_header() + ": " + describe(ec) +
                         " (is outpost-control running there?)");
    }
    if (!SSL_set_tlsext_host_name(stream.native_handle(), base_.host.c_str())) {
      return invalid_argument("bad host name for TLS: " + base_.host);
    }
    stream.set_verify_callback(asio::ssl::host_name_verification(base_.host));
    tcp_stream.expires_after(std::chrono::seconds(30));
    ec = run_one_operation(
        io, [&](auto handler) { stream.async_handshake(asio::ssl::stream_base::client, handler); });
    if (ec) {
      std::string why = describe(ec);
      const std::string verify = tunnel::verify_failure_reason(stream.native_handle());
      if (!verify.empty()) why = verify;
      return unavailable("TLS with " + host_header() + " failed: " + why +
                         (config_.ca_file.empty() ? "" : " (CA file " + config_.ca_file + ")"));
    }
    return {};
  }

  template <class Body>
  Result<Response> exchange(http::request<Body>& request,
                            const std::function<bool(std::string_view)>* on_data) {
    asio::io_context io;
    TlsStream stream(io, *tls_);
    OUTPOST_RETURN_IF_ERROR(connect(io, stream));
    auto& tcp_stream = beast::get_lowest_layer(stream);
    tcp_stream.expires_after(config_.timeout);
    error_code ec =
        run_one_operation(io, [&](auto handler) { http::async_write(stream, request, handler); });
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(boost::none);
    if (ec) {
      // The server may have refused the request early (a body too large) and closed: its answer
      // is still worth reading.
      tcp_stream.expires_after(std::chrono::seconds(10));
      const error_code read_ec = run_one_operation(
          io, [&](auto handler) { http::async_read(stream, buffer, parser, handler); });
      if (read_ec || !parser.is_header_done()) {
        return unavailable("sending the request failed: " + describe(ec));
      }
      return to_response(parser.release());
    }
    tcp_stream.expires_after(config_.timeout);
    ec = run_one_operation(
        io, [&](auto handler) { http::async_read_header(stream, buffer, parser, handler); });
    if (ec) return unavailable("reading the answer failed: " + describe(ec));
    const int status = static_cast<int>(parser.get().result_int());
    if (on_data != nullptr && status < 300) {
      // Hand each piece of the body over as it comes (a generate call's events).
      bool stopped = false;
      auto on_chunk = [on_data, &stopped](std::uint64_t, std::string_view data,
                                          error_code& chunk_ec) {
        if (!(*on_data)(data)) {
          stopped = true;
          chunk_ec = asio::error::operation_aborted;
          return std::size_t{0};
        }
        return data.size();
      };
      parser.on_chunk_body(on_chunk);
      while (!parser.is_done()) {
        tcp_stream.expires_after(config_.timeout);
        ec = run_one_operation(
            io, [&](auto handler) { http::async_read_some(stream, buffer, parser, handler); });
        if (stopped) return Error(ErrorCode::kCancelled, "stopped reading the answer");
        if (ec) return unavailable("the answer was cut short: " + describe(ec));
        if (!parser.chunked() && !parser.get().body().empty()) {
          if (!(*on_data)(parser.get().body())) {
            return Error(ErrorCode::kCancelled, "stopped reading the answer");
          }
          parser.get().body().clear();
        }
      }
      Response response = to_response(parser.release());
      response.body.clear();
      return response;
    }
    ec = run_one_operation(
        io, [&](auto handler) { http::async_read(stream, buffer, parser, handler); });
    if (ec) return unavailable("reading the answer failed: " + describe(ec));
    return to_response(parser.release());
  }

  static Response to_response(http::response<http::string_body> message) {
    Response response;
    response.status = static_cast<int>(message.result_int());
    response.content_type = std::string(message[http::field::content_type]);
    response.request_id = std::string(message["X-Request-Id"]);
    response.retry_after = std::string(message[http::field::retry_after]);
    response.body = std::move(message.body());
    return response;
  }

  ClientConfig config_;
  BaseUrl base_;
  std::shared_ptr<asio::ssl::context> tls_;
};

}  // namespace

Result<std::unique_ptr<HttpClient>> HttpClient::create(ClientConfig config) {
  OUTPOST_ASSIGN_OR_RETURN(auto base, parse_base_url(config.base_url));
  tunnel::ClientTlsOptions tls_options;
  tls_options.ca_file = config.ca_file;
  OUTPOST_ASSIGN_OR_RETURN(auto tls, tunnel::make_client_tls_context(tls_options));
  return std::unique_ptr<HttpClient>(
      std::make_unique<HttpClientImpl>(std::move(config), std::move(base), std::move(tls)));
}

}  // namespace outpost::cli
