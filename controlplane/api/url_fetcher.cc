#include "controlplane/api/url_fetcher.h"

#include <optional>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "common/log.h"
#include "common/url.h"
#include "tunnel/tls.h"

namespace outpost::control {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

Result<FetchUrl> parse_fetch_url(std::string_view url) {
  auto parsed = parse_url(url);
  if (!parsed.ok()) return invalid_argument("input URL: " + parsed.error().message());
  if (parsed->scheme != "http" && parsed->scheme != "https") {
    return invalid_argument("input URLs must start with http:// or https://");
  }
  if (parsed->user.has_value()) return invalid_argument("input URLs may not carry credentials");
  FetchUrl out;
  out.https = parsed->scheme == "https";
  out.host = parsed->host;
  out.port = parsed->port;
  out.target = parsed->target();
  return out;
}

bool is_public_address(const asio::ip::address& address) {
  if (address.is_unspecified() || address.is_loopback() || address.is_multicast()) return false;
  if (address.is_v6()) {
    const auto v6 = address.to_v6();
    if (v6.is_v4_mapped()) {
      return is_public_address(asio::ip::make_address_v4(asio::ip::v4_mapped, v6));
    }
    const auto bytes = v6.to_bytes();
    if (v6.is_link_local() || v6.is_site_local()) return false;
    if ((bytes[0] & 0xfe) == 0xfc) return false;  // fc00::/7 unique local
    return true;
  }
  const auto bytes = address.to_v4().to_bytes();
  if (bytes[0] == 0 || bytes[0] == 10 || bytes[0] == 127) return false;
  if (bytes[0] == 169 && bytes[1] == 254) return false;          // link-local
  if (bytes[0] == 172 && (bytes[1] & 0xf0) == 16) return false;  // 172.16/12
  if (bytes[0] == 192 && bytes[1] == 168) return false;          // 192.168/16
  if (bytes[0] == 100 && (bytes[1] & 0xc0) == 64) return false;  // 100.64/10 CGNAT
  if (bytes[0] == 192 && bytes[1] == 0 && bytes[2] == 0) return false;
  if (bytes[0] == 198 && (bytes[1] & 0xfe) == 18) return false;  // 198.18/15 benchmarking
  if (bytes[0] >= 240) return false;                             // reserved, broadcast
  return true;
}

namespace {

class Fetch : public std::enable_shared_from_this<Fetch> {
 public:
  Fetch(asio::io_context& io, const UrlFetchOptions& options, FetchUrl url,
        std::shared_ptr<asio::ssl::context> tls, std::function<void(Result<std::string>)> done)
      : strand_(asio::make_strand(io)),
        resolver_(strand_),
        timer_(strand_),
        options_(options),
        url_(std::move(url)),
        tls_(std::move(tls)),
        done_(std::move(done)) {}

  void start() {
    timer_.expires_after(options_.timeout);
    timer_.async_wait([self = shared_from_this()](error_code ec) {
      if (ec) return;
      self->finish(Error(ErrorCode::kDeadlineExceeded,
                         "fetching the input URL took longer than " +
                             std::to_string(self->options_.timeout.count() / 1000) + " s"));
    });
    resolver_.async_resolve(
        url_.host, std::to_string(url_.port),
        [self = shared_from_this()](error_code ec, const tcp::resolver::results_type& results) {
          self->on_resolve(ec, results);
        });
  }

 private:
  void on_resolve(error_code ec, const tcp::resolver::results_type& results) {
    if (finished_) return;
    if (ec) return finish(invalid_argument("cannot resolve '" + url_.host + "': " + ec.message()));
    for (const auto& entry : results) {
      const auto address = entry.endpoint().address();
      if (!options_.allow_private_addresses && !is_public_address(address)) {
        return finish(Error(ErrorCode::kPermissionDenied,
                            "input URL refused: " + url_.host + " resolves to " +
                                address.to_string() +
                                ", a private or loopback address (allowed only when the control "
                                "plane's config sets url_inputs.allow_private_addresses)"));
      }
      endpoints_.push_back(entry.endpoint());
    }
    if (endpoints_.empty()) return finish(invalid_argument("'" + url_.host + "' has no address"));
    if (url_.https) {
      tls_stream_.emplace(strand_, *tls_);
      if (!SSL_set_tlsext_host_name(tls_stream_->native_handle(), url_.host.c_str())) {
        return finish(invalid_argument("bad host name for TLS"));
      }
      tls_stream_->set_verify_callback(asio::ssl::host_name_verification(url_.host));
      beast::get_lowest_layer(*tls_stream_)
          .async_connect(endpoints_,
                         [self = shared_from_this()](error_code ec, const tcp::endpoint&) {
                           self->on_connect(ec);
                         });
    } else {
      plain_stream_.emplace(strand_);
      plain_stream_->async_connect(
          endpoints_, [self = shared_from_this()](error_code ec, const tcp::endpoint&) {
            self->on_connect(ec);
          });
    }
  }

  void on_connect(error_code ec) {
    if (finished_) return;
    if (ec) return finish(unavailable("cannot connect to " + url_.host + ": " + ec.message()));
    if (tls_stream_.has_value()) {
      tls_stream_->async_handshake(
          asio::ssl::stream_base::client, [self = shared_from_this()](error_code handshake_ec) {
            if (self->finished_) return;
            if (handshake_ec) {
              return self->finish(
                  unavailable("TLS to " + self->url_.host + " failed: " + handshake_ec.message()));
            }
            self->send();
          });
      return;
    }
    send();
  }

  void send() {
    request_.version(11);
    request_.method(http::verb::get);
    request_.target(url_.target);
    request_.set(http::field::host, Url::host_header(url_.host, url_.port, url_.https ? 443 : 80));
    request_.set(http::field::user_agent, "outpost-control");
    request_.set(http::field::accept, "*/*");
    request_.keep_alive(false);
    parser_.body_limit(options_.max_bytes);
    parser_.header_limit(64 * 1024);
    auto on_write = [self = shared_from_this()](error_code ec, size_t) {
      if (self->finished_) return;
      if (ec) {
        return self->finish(
            unavailable("sending to " + self->url_.host + " failed: " + ec.message()));
      }
      auto on_read = [self](error_code read_ec, size_t) { self->on_read(read_ec); };
      if (self->tls_stream_.has_value()) {
        http::async_read(*self->tls_stream_, self->buffer_, self->parser_, on_read);
      } else {
        http::async_read(*self->plain_stream_, self->buffer_, self->parser_, on_read);
      }
    };
    if (tls_stream_.has_value()) {
      http::async_write(*tls_stream_, request_, on_write);
    } else {
      http::async_write(*plain_stream_, request_, on_write);
    }
  }

  void on_read(error_code ec) {
    if (finished_) return;
    if (ec == http::error::body_limit) {
      return finish(invalid_argument("the input URL's content is larger than " +
                                     std::to_string(options_.max_bytes) + " bytes"));
    }
    if (ec) return finish(unavailable("reading from " + url_.host + " failed: " + ec.message()));
    auto& response = parser_.get();
    const int status = static_cast<int>(response.result_int());
    if (status >= 300 && status < 400) {
      return finish(invalid_argument("the input URL answered " + std::to_string(status) +
                                     " (a redirect); redirects are not followed, give the final "
                                     "URL"));
    }
    if (status != 200) {
      return finish(invalid_argument("the input URL answered " + std::to_string(status)));
    }
    finish(std::move(response.body()));
  }

  void finish(Result<std::string> result) {
    if (finished_) return;
    finished_ = true;
    timer_.cancel();
    resolver_.cancel();
    if (tls_stream_.has_value()) beast::get_lowest_layer(*tls_stream_).close();
    if (plain_stream_.has_value()) plain_stream_->close();
    auto done = std::move(done_);
    done(std::move(result));
  }

  asio::strand<asio::io_context::executor_type> strand_;
  tcp::resolver resolver_;
  asio::steady_timer timer_;
  const UrlFetchOptions options_;
  FetchUrl url_;
  std::shared_ptr<asio::ssl::context> tls_;
  std::function<void(Result<std::string>)> done_;
  std::vector<tcp::endpoint> endpoints_;
  std::optional<beast::tcp_stream> plain_stream_;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls_stream_;
  beast::flat_buffer buffer_;
  http::request<http::empty_body> request_;
  http::response_parser<http::string_body> parser_;
  bool finished_ = false;
};

}  // namespace

UrlFetcher::UrlFetcher(asio::io_context& io, UrlFetchOptions options)
    : io_(io), options_(std::move(options)) {}

void UrlFetcher::fetch(const std::string& url, std::function<void(Result<std::string>)> done) {
  auto parsed = parse_fetch_url(url);
  if (!parsed.ok()) return done(parsed.error());
  std::shared_ptr<asio::ssl::context> tls;
  if (parsed->https) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!tls_) {
      tunnel::ClientTlsOptions tls_options;
      tls_options.ca_file = options_.ca_file;
      auto context = tunnel::make_client_tls_context(tls_options);
      if (!context.ok()) return done(context.error());
      tls_ = context.value();
    }
    tls = tls_;
  }
  auto fetch = std::make_shared<Fetch>(io_, options_, std::move(parsed).value(), std::move(tls),
                                       std::move(done));
  fetch->start();
}

}  // namespace outpost::control
