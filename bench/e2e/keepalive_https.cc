#include "bench/e2e/keepalive_https.h"

#include <optional>
#include <utility>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "tunnel/run_one_operation.h"
#include "tunnel/tls.h"

namespace outpost::bench {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

using tunnel::run_one_operation;

}  // namespace

struct KeepAliveHttps::Impl {
  HttpsTarget target;
  std::shared_ptr<asio::ssl::context> tls;
  asio::io_context io;
  std::optional<TlsStream> stream;
  beast::flat_buffer buffer;
  bool open = false;
  int connects = 0;

  Status ensure_open() {
    if (open) return {};
    stream.reset();
    buffer.clear();
    stream.emplace(io, *tls);
    auto& lowest = beast::get_lowest_layer(*stream);
    lowest.expires_after(target.timeout);
    const tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), target.port);
    error_code ec =
        run_one_operation(io, [&](auto handler) { lowest.async_connect(endpoint, handler); });
    if (ec) {
      return unavailable("cannot connect to port " + std::to_string(target.port) + ": " +
                         ec.message());
    }
    lowest.socket().set_option(tcp::no_delay(true));
    if (!SSL_set_tlsext_host_name(stream->native_handle(), target.host.c_str())) {
      return invalid_argument("bad host name for TLS: " + target.host);
    }
    stream->set_verify_callback(asio::ssl::host_name_verification(target.host));
    ec = run_one_operation(io, [&](auto handler) {
      stream->async_handshake(asio::ssl::stream_base::client, handler);
    });
    if (ec) {
      const std::string reason = tunnel::verify_failure_reason(stream->native_handle());
      return unavailable("TLS handshake failed: " + (reason.empty() ? ec.message() : reason));
    }
    open = true;
    ++connects;
    return {};
  }

  http::request<http::string_body> request(const std::string& path, const std::string& body,
                                           const std::string& accept,
                                           const std::string& content_type) const {
    http::request<http::string_body> message{http::verb::post, path, 11};
    message.set(http::field::host, target.host + ":" + std::to_string(target.port));
    message.set(http::field::content_type, content_type);
    message.set(http::field::accept, accept);
    if (!target.authorization.empty()) {
      message.set(http::field::authorization, target.authorization);
    }
    message.keep_alive(true);
    message.body() = body;
    message.prepare_payload();
    return message;
  }

  // One exchange. `on_data` null: the whole body is read into the answer. Sets `retry_worthy`
  // when the request failed before the server answered anything on a connection reused from an
  // earlier request (the server may have closed it while idle): worth one retry.
  Result<HttpsAnswer> exchange(const http::request<http::string_body>& message,
                               const std::function<void(std::string_view)>* on_data,
                               bool& retry_worthy) {
    retry_worthy = false;
    const bool reused = open;
    OUTPOST_RETURN_IF_ERROR(ensure_open());
    auto& lowest = beast::get_lowest_layer(*stream);
    lowest.expires_after(target.timeout);
    error_code ec =
        run_one_operation(io, [&](auto handler) { http::async_write(*stream, message, handler); });
    http::response_parser<http::string_body> parser;
    parser.body_limit(boost::none);
    if (!ec) {
      ec = run_one_operation(
          io, [&](auto handler) { http::async_read_header(*stream, buffer, parser, handler); });
    }
    if (ec) {
      open = false;
      retry_worthy = reused;
      return unavailable("request failed: " + ec.message());
    }
    HttpsAnswer answer;
    answer.status = static_cast<int>(parser.get().result_int());
    if (on_data != nullptr && answer.status < 300) {
      // The parser keeps a reference to the callback: it lives as long as the parser.
      auto on_chunk = [on_data](std::uint64_t, std::string_view data, error_code&) {
        (*on_data)(data);
        return data.size();
      };
      parser.on_chunk_body(on_chunk);
      while (!parser.is_done()) {
        ec = run_one_operation(
            io, [&](auto handler) { http::async_read_some(*stream, buffer, parser, handler); });
        if (ec) break;
        if (!parser.chunked() && !parser.get().body().empty()) {
          (*on_data)(parser.get().body());
          parser.get().body().clear();
        }
      }
    } else {
      ec = run_one_operation(
          io, [&](auto handler) { http::async_read(*stream, buffer, parser, handler); });
    }
    if (ec) {
      open = false;
      return unavailable("reading the answer failed: " + ec.message());
    }
    if (!parser.get().keep_alive()) open = false;
    if (on_data == nullptr || answer.status >= 300) answer.body = std::move(parser.get().body());
    return answer;
  }

  Result<HttpsAnswer> send(const http::request<http::string_body>& message,
                           const std::function<void(std::string_view)>* on_data) {
    bool retry_worthy = false;
    auto answer = exchange(message, on_data, retry_worthy);
    if (!answer.ok() && retry_worthy) return exchange(message, on_data, retry_worthy);
    return answer;
  }
};

KeepAliveHttps::KeepAliveHttps(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
KeepAliveHttps::~KeepAliveHttps() = default;

Result<std::unique_ptr<KeepAliveHttps>> KeepAliveHttps::connect(const HttpsTarget& target) {
  auto impl = std::make_unique<Impl>();
  impl->target = target;
  tunnel::ClientTlsOptions options;
  options.ca_file = target.ca_file;
  OUTPOST_ASSIGN_OR_RETURN(impl->tls, tunnel::make_client_tls_context(options));
  OUTPOST_RETURN_IF_ERROR(impl->ensure_open());
  return std::unique_ptr<KeepAliveHttps>(new KeepAliveHttps(std::move(impl)));
}

Result<HttpsAnswer> KeepAliveHttps::post(const std::string& path, const std::string& body,
                                         const std::string& content_type) {
  return impl_->send(impl_->request(path, body, "application/json", content_type), nullptr);
}

Result<HttpsAnswer> KeepAliveHttps::post_streaming(
    const std::string& path, const std::string& body, const std::string& accept,
    const std::function<void(std::string_view)>& on_data) {
  return impl_->send(impl_->request(path, body, accept, "application/json"), &on_data);
}

int KeepAliveHttps::connects() const { return impl_->connects; }

}  // namespace outpost::bench
