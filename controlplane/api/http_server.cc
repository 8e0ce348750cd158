#include "controlplane/api/http_server.h"

#include <array>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <sstream>
#include <unordered_map>

#include <boost/asio/strand.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "common/log.h"
#include "controlplane/auth/auth_throttle.h"
#include "controlplane/auth/secrets.h"
#include "controlplane/state/ids.h"
#include "tunnel/server.h"
#include "tunnel/ws_transport.h"

namespace outpost::control {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using tunnel::TlsStream;

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decoding; refuses broken escapes, NUL, and (in paths) an encoded '/'.
std::optional<std::string> percent_decode(std::string_view text, bool is_query) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      if (i + 2 >= text.size()) return std::nullopt;
      const int high = hex_value(text[i + 1]);
      const int low = hex_value(text[i + 2]);
      if (high < 0 || low < 0) return std::nullopt;
      const char decoded = static_cast<char>(high * 16 + low);
      if (decoded == '\0' || (!is_query && decoded == '/')) return std::nullopt;
      out.push_back(decoded);
      i += 2;
    } else if (c == '+' && is_query) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string status_reason(int status) {
  return std::string(http::obsolete_reason(static_cast<http::status>(status)));
}

std::string error_body(std::string_view code, std::string_view message,
                       const std::string& request_id) {
  nlohmann::json body{{"status", {{"code", code}, {"description", message}}}};
  if (!request_id.empty()) body["status"]["req_id"] = request_id;
  return body.dump() + "\n";
}

class ServerImpl;

// Connections answered 429 and closed, beyond the limits, before further ones are closed at
// accept without a TLS handshake.
constexpr size_t kRefusingSlack = 64;

// After a refusal whose body was not read: how long, and how much of what still arrives, is read
// and dropped before the socket closes (see Session::linger).
constexpr std::chrono::milliseconds kLingerTime{2'000};
constexpr size_t kLingerBytes = 1024 * 1024;

// Bytes of a body being read, held against the server's budget (memory or disk) until the
// exchange that holds the body ends. Empty: nothing held.
class BodyLease {
 public:
  BodyLease() = default;
  // Empty when the budget cannot hold `bytes` more.
  static BodyLease take(const std::shared_ptr<ServerImpl>& server, bool disk, size_t bytes);
  BodyLease(BodyLease&& other) noexcept { *this = std::move(other); }
  BodyLease& operator=(BodyLease&& other) noexcept;
  BodyLease(const BodyLease&) = delete;
  BodyLease& operator=(const BodyLease&) = delete;
  ~BodyLease() { release(); }
  void release();
  explicit operator bool() const { return server_ != nullptr; }

 private:
  std::shared_ptr<ServerImpl> server_;
  bool disk_ = false;
  size_t bytes_ = 0;
};

// Holds `owner` inside a write's completion handler. Asio runs every handler once, unless the
// io_context is torn down with the operation still pending; then the handler is destroyed
// without running, and this drops the owner's queued writes. Their callbacks may hold the owner
// (a predict call holds its exchange, which holds this session): dropping them breaks that
// cycle, which otherwise outlives the server (LeakSanitizer found one at a test's end).
template <class Owner>
class WriteHandlerOwner {
 public:
  explicit WriteHandlerOwner(std::shared_ptr<Owner> owner) : owner_(std::move(owner)) {}
  WriteHandlerOwner(WriteHandlerOwner&&) noexcept = default;  // leaves the source empty
  WriteHandlerOwner& operator=(WriteHandlerOwner&&) noexcept = default;
  WriteHandlerOwner(const WriteHandlerOwner&) = delete;
  WriteHandlerOwner& operator=(const WriteHandlerOwner&) = delete;
  ~WriteHandlerOwner() {
    if (owner_) owner_->drop_writes();
  }
  // The handler runs: it takes the owner, and nothing is dropped.
  std::shared_ptr<Owner> take() { return std::move(owner_); }

 private:
  std::shared_ptr<Owner> owner_;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  // `over_limit`: the connection is past the server's connection limits; its first request is
  // answered 429 and the connection closed.
  Session(std::shared_ptr<ServerImpl> server, tcp::socket socket, std::string remote,
          std::string source, bool over_limit);
  ~Session();
  void start();

  // Called (on the strand) by the exchange.
  void send_response(const HttpResponse& response);
  void send_stream_head(int status, const std::string& content_type);
  void send_chunk(const std::string& data, std::function<void(bool)> done);
  void send_stream_end();
  void set_gone_handler(std::function<void()> handler);
  void accept_websocket(std::function<void(std::shared_ptr<WebSocketChannel>)> on_open);
  void reject_websocket(const HttpResponse& response);

  asio::any_io_executor executor() { return stream_.get_executor(); }

 private:
  void arm(std::chrono::milliseconds timeout);
  void disarm() { deadline_.cancel(); }
  void close_socket();
  void read_head();
  void on_head(error_code ec);
  void process_head();
  void on_admitted(HeadDecision decision);
  void read_body_part();
  void on_body_part(error_code ec, size_t bytes);
  void on_body(error_code ec);
  // Answers an error and closes the connection; `retry_after_seconds` > 0 adds Retry-After.
  void refuse(int status, std::string_view code, const std::string& message,
              int retry_after_seconds = 0);
  void begin_exchange();
  void finish_exchange(bool keep_alive);
  void client_gone();
  void linger();
  void drain_next();
  void queue_write(std::string data, std::function<void(bool)> done);
  void write_next();
  friend class WriteHandlerOwner<Session>;
  void drop_writes() {
    auto dropped = std::move(writes_);  // destroyed here, callbacks and all
    writes_.clear();
  }
  std::string response_head(int status, const std::string& content_type, bool chunked,
                            size_t length,
                            const std::vector<std::pair<std::string, std::string>>& extra);

  std::shared_ptr<ServerImpl> server_;
  TlsStream stream_;
  std::string remote_;
  const std::string source_;  // what the per-address connection limit counts under
  const bool over_limit_;
  beast::flat_buffer buffer_;
  asio::steady_timer deadline_;
  asio::steady_timer write_deadline_;

  std::optional<http::request_parser<http::empty_body>> head_parser_;
  std::optional<http::request_parser<http::string_body>> string_parser_;
  std::optional<http::request_parser<http::file_body>> file_parser_;
  BodyLease body_lease_;
  std::chrono::steady_clock::time_point body_started_;
  size_t body_bytes_ = 0;
  bool unread_body_ = false;  // refused before its body was read: linger before closing
  std::unique_ptr<std::array<char, 4096>> drain_buffer_;
  size_t drained_ = 0;
  bool reading_head_ = false;
  bool head_ready_ = false;  // a pipelined request head waits for the current exchange
  bool exchange_active_ = false;
  bool closed_ = false;
  bool handed_over_ = false;  // stream_ was moved to the tunnel or a WebSocket
  bool keep_alive_ = true;
  bool streaming_ = false;
  HttpRequest request_;
  std::function<void()> gone_handler_;
  bool gone_ = false;

  struct PendingWrite {
    std::string data;
    std::function<void(bool)> done;
  };
  std::deque<PendingWrite> writes_;
  bool writing_ = false;
};

class Exchange final : public HttpExchange {
 public:
  Exchange(std::shared_ptr<Session> session, HttpRequest request, BodyLease body_lease)
      : session_(std::move(session)),
        request_(std::move(request)),
        body_lease_(std::move(body_lease)) {}
  ~Exchange() override {
    if (!request_.body_file.empty()) {
      std::error_code ignored;
      std::filesystem::remove(request_.body_file, ignored);
    }
  }
  const HttpRequest& request() const override { return request_; }
  void respond(HttpResponse response) override {
    auto session = session_;
    asio::post(session->executor(), [session, response = std::move(response)]() mutable {
      session->send_response(response);
    });
  }
  void start_stream(int status, std::string content_type) override {
    auto session = session_;
    asio::post(session->executor(),
               [session, status, content_type = std::move(content_type)]() mutable {
                 session->send_stream_head(status, content_type);
               });
  }
  void write_chunk(std::string data, std::function<void(bool)> done) override {
    auto session = session_;
    asio::post(session->executor(),
               [session, data = std::move(data), done = std::move(done)]() mutable {
                 session->send_chunk(data, std::move(done));
               });
  }
  void end_stream() override {
    auto session = session_;
    asio::post(session->executor(), [session] { session->send_stream_end(); });
  }
  void on_client_gone(std::function<void()> handler) override {
    auto session = session_;
    asio::post(session->executor(), [session, handler = std::move(handler)]() mutable {
      session->set_gone_handler(std::move(handler));
    });
  }

 private:
  std::shared_ptr<Session> session_;
  HttpRequest request_;
  BodyLease body_lease_;  // released with the body, when the exchange ends
};

class Upgrade final : public WebSocketUpgrade {
 public:
  Upgrade(std::shared_ptr<Session> session, HttpRequest request)
      : session_(std::move(session)), request_(std::move(request)) {}
  const HttpRequest& request() const override { return request_; }
  void reject(HttpResponse response) override {
    auto session = session_;
    asio::post(session->executor(),
               [session, response = std::move(response)] { session->reject_websocket(response); });
  }
  void accept(std::function<void(std::shared_ptr<WebSocketChannel>)> on_open) override {
    auto session = session_;
    asio::post(session->executor(), [session, on_open = std::move(on_open)]() mutable {
      session->accept_websocket(std::move(on_open));
    });
  }

 private:
  std::shared_ptr<Session> session_;
  HttpRequest request_;
};

// A predict stream's WebSocket. Reads and writes run on the connection's strand; one write is
// in flight at a time, the rest queue.
class WsChannel final : public WebSocketChannel, public std::enable_shared_from_this<WsChannel> {
 public:
  explicit WsChannel(TlsStream stream) : ws_(std::move(stream)) {}

  websocket::stream<TlsStream>& ws() { return ws_; }

  void read(std::function<void(bool, std::string)> handler) override {
    asio::post(ws_.get_executor(),
               [self = shared_from_this(), handler = std::move(handler)]() mutable {
                 if (self->closed_) return handler(false, {});
                 self->ws_.async_read(self->read_buffer_, [self, handler = std::move(handler)](
                                                              error_code ec, size_t) mutable {
                   if (ec) {
                     self->closed_ = true;
                     return handler(false, {});
                   }
                   std::string message = beast::buffers_to_string(self->read_buffer_.data());
                   self->read_buffer_.consume(self->read_buffer_.size());
                   handler(true, std::move(message));
                 });
               });
  }

  void write(std::string message, std::function<void(bool)> done) override {
    asio::post(ws_.get_executor(), [self = shared_from_this(), message = std::move(message),
                                    done = std::move(done)]() mutable {
      self->writes_.push_back({std::move(message), std::move(done)});
      if (!self->writing_) self->write_next();
    });
  }

  void close(uint16_t code, std::string reason) override {
    asio::post(ws_.get_executor(), [self = shared_from_this(), code, reason = std::move(reason)] {
      self->close_requested_ = true;
      self->close_reason_ =
          websocket::close_reason(static_cast<websocket::close_code>(code), reason);
      if (!self->writing_) self->write_next();
    });
  }

 private:
  void write_next() {
    if (writes_.empty()) {
      if (close_requested_ && !closed_ && !close_sent_) {
        close_sent_ = true;
        writing_ = true;
        ws_.async_close(close_reason_, [self = shared_from_this()](error_code) {
          self->writing_ = false;
          self->closed_ = true;
        });
      }
      return;
    }
    if (closed_ || close_sent_) {
      auto failed = std::move(writes_);
      writes_.clear();
      for (auto& write : failed) {
        if (write.done) write.done(false);
      }
      return;
    }
    writing_ = true;
    ws_.text(true);
    ws_.async_write(
        asio::buffer(writes_.front().data),
        [owner = WriteHandlerOwner<WsChannel>(shared_from_this())](error_code ec, size_t) mutable {
          const auto self = owner.take();
          self->writing_ = false;
          auto done = std::move(self->writes_.front().done);
          self->writes_.pop_front();
          if (ec) self->closed_ = true;
          if (done) done(!ec);
          self->write_next();
        });
  }

  friend class WriteHandlerOwner<WsChannel>;
  void drop_writes() {
    auto dropped = std::move(writes_);  // destroyed here, callbacks and all
    writes_.clear();
  }

  struct PendingWrite {
    std::string data;
    std::function<void(bool)> done;
  };
  websocket::stream<TlsStream> ws_;
  beast::flat_buffer read_buffer_;
  std::deque<PendingWrite> writes_;
  bool writing_ = false;
  bool closed_ = false;
  bool close_requested_ = false;
  bool close_sent_ = false;
  websocket::close_reason close_reason_;
};

class ServerImpl final : public HttpServer, public std::enable_shared_from_this<ServerImpl> {
 public:
  ServerImpl(asio::io_context& io, std::shared_ptr<asio::ssl::context> tls,
             HttpServerOptions options, HttpHandlers handlers,
             std::shared_ptr<tunnel::TunnelServer> tunnel)
      : io_(io),
        tls_(std::move(tls)),
        options_(std::move(options)),
        handlers_(std::move(handlers)),
        tunnel_(std::move(tunnel)),
        acceptor_(asio::make_strand(io)) {}

  Result<uint16_t> listen(const std::string& address, uint16_t port) override {
    error_code ec;
    const auto ip = asio::ip::make_address(address, ec);
    if (ec) return invalid_argument("listen: bad address '" + address + "'");
    const tcp::endpoint endpoint(ip, port);
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return unavailable("cannot listen on " + address + ":" + std::to_string(port) + ": " +
                         ec.message());
    }
    const uint16_t bound = acceptor_.local_endpoint().port();
    asio::post(acceptor_.get_executor(), [self = shared_from_this()] { self->do_accept(); });
    return bound;
  }

  void stop() override {
    stopping_ = true;
    asio::post(acceptor_.get_executor(), [self = shared_from_this()] {
      error_code ignored;
      self->acceptor_.close(ignored);
    });
  }

  asio::ssl::context& tls() { return *tls_; }
  const HttpServerOptions& options() const { return options_; }

  // Connection accounting, from any thread. kServe and kRefuse are given back by
  // close_connection when the session ends.
  enum class Admission { kServe, kRefuse, kDrop };
  Admission open_connection(const std::string& source) {
    std::lock_guard<std::mutex> lock(accounting_mutex_);
    const auto it = per_address_.find(source);
    const size_t from_address = it == per_address_.end() ? 0 : it->second;
    if (connections_ >= options_.max_connections ||
        from_address >= options_.max_connections_per_address) {
      if (refusing_ >= kRefusingSlack) return Admission::kDrop;
      ++refusing_;
      return Admission::kRefuse;
    }
    ++connections_;
    ++per_address_[source];
    return Admission::kServe;
  }
  void close_connection(const std::string& source, bool refused) {
    std::lock_guard<std::mutex> lock(accounting_mutex_);
    if (refused) {
      --refusing_;
      return;
    }
    --connections_;
    const auto it = per_address_.find(source);
    if (it != per_address_.end() && --it->second == 0) per_address_.erase(it);
  }
  bool reserve_body(bool disk, size_t bytes) {
    std::lock_guard<std::mutex> lock(accounting_mutex_);
    size_t& used = disk ? body_disk_bytes_ : body_memory_bytes_;
    const size_t limit = disk ? options_.max_body_disk_bytes : options_.max_body_memory_bytes;
    if (bytes > limit || used > limit - bytes) return false;
    used += bytes;
    return true;
  }
  void release_body(bool disk, size_t bytes) {
    std::lock_guard<std::mutex> lock(accounting_mutex_);
    (disk ? body_disk_bytes_ : body_memory_bytes_) -= bytes;
  }
  const HttpHandlers& handlers() const { return handlers_; }
  tunnel::TunnelServer* tunnel() { return tunnel_.get(); }

 private:
  void do_accept() {
    acceptor_.async_accept(
        asio::make_strand(io_), [self = shared_from_this()](error_code ec, tcp::socket socket) {
          if (ec) {
            if (ec == asio::error::operation_aborted || self->stopping_) return;
            LOG_WARNING("control.accept_failed", "accept failed: " << ec.message());
          } else {
            error_code endpoint_ec;
            const auto remote = socket.remote_endpoint(endpoint_ec);
            std::string name =
                endpoint_ec ? "unknown"
                            : remote.address().to_string() + ":" + std::to_string(remote.port());
            socket.set_option(tcp::no_delay(true), endpoint_ec);
            std::string source = AuthThrottle::source_of(name);
            const Admission admission = self->open_connection(source);
            if (admission == Admission::kDrop) {
              LOG_DEBUG("control.connection_dropped",
                        "closed a connection from " << name << " at accept: over every limit");
              socket.close(endpoint_ec);
            } else {
              std::make_shared<Session>(self, std::move(socket), std::move(name), std::move(source),
                                        admission == Admission::kRefuse)
                  ->start();
            }
          }
          if (!self->stopping_) self->do_accept();
        });
  }

  asio::io_context& io_;
  std::shared_ptr<asio::ssl::context> tls_;
  const HttpServerOptions options_;
  const HttpHandlers handlers_;
  std::shared_ptr<tunnel::TunnelServer> tunnel_;
  tcp::acceptor acceptor_;
  std::atomic<bool> stopping_{false};

  std::mutex accounting_mutex_;
  size_t connections_ = 0;
  size_t refusing_ = 0;
  std::unordered_map<std::string, size_t> per_address_;
  size_t body_memory_bytes_ = 0;
  size_t body_disk_bytes_ = 0;
};

BodyLease BodyLease::take(const std::shared_ptr<ServerImpl>& server, bool disk, size_t bytes) {
  BodyLease lease;
  if (!server->reserve_body(disk, bytes)) return lease;
  lease.server_ = server;
  lease.disk_ = disk;
  lease.bytes_ = bytes;
  return lease;
}

BodyLease& BodyLease::operator=(BodyLease&& other) noexcept {
  if (this != &other) {
    release();
    server_ = std::move(other.server_);
    disk_ = other.disk_;
    bytes_ = other.bytes_;
    other.server_ = nullptr;
  }
  return *this;
}

void BodyLease::release() {
  if (server_ == nullptr) return;
  server_->release_body(disk_, bytes_);
  server_ = nullptr;
}

Session::Session(std::shared_ptr<ServerImpl> server, tcp::socket socket, std::string remote,
                 std::string source, bool over_limit)
    : server_(std::move(server)),
      stream_(std::move(socket), server_->tls()),
      remote_(std::move(remote)),
      source_(std::move(source)),
      over_limit_(over_limit),
      deadline_(stream_.get_executor()),
      write_deadline_(stream_.get_executor()) {}

Session::~Session() { server_->close_connection(source_, over_limit_); }

void Session::start() {
  arm(server_->options().handshake_timeout);
  stream_.async_handshake(
      asio::ssl::stream_base::server, [self = shared_from_this()](error_code ec) {
        if (ec) {
          LOG_DEBUG("control.tls_failed",
                    "TLS handshake from " << self->remote_ << " failed: " << ec.message());
          return self->close_socket();
        }
        self->read_head();
      });
}

void Session::arm(std::chrono::milliseconds timeout) {
  deadline_.expires_after(timeout);
  deadline_.async_wait([weak = std::weak_ptr<Session>(shared_from_this())](error_code ec) {
    auto self = weak.lock();
    if (!ec && self) self->close_socket();
  });
}

void Session::close_socket() {
  closed_ = true;
  if (handed_over_) return;  // the stream belongs to the tunnel or the WebSocket now
  error_code ignored;
  beast::get_lowest_layer(stream_).socket().close(ignored);
  deadline_.cancel();
  write_deadline_.cancel();
}

void Session::read_head() {
  if (closed_) return;
  head_parser_.emplace();
  head_parser_->header_limit(static_cast<uint32_t>(server_->options().header_limit));
  // The body's limit depends on the endpoint: decided once the head is read.
  head_parser_->body_limit(boost::none);
  reading_head_ = true;
  head_ready_ = false;
  http::async_read_header(
      stream_, buffer_, *head_parser_,
      [self = shared_from_this()](error_code ec, size_t) { self->on_head(ec); });
}

void Session::on_head(error_code ec) {
  reading_head_ = false;
  if (ec) {
    if (exchange_active_) return client_gone();
    if (ec.category() == http::make_error_code(http::error::end_of_stream).category() &&
        ec != http::error::end_of_stream && !closed_) {
      // A malformed head (bad method, header too large, ...): say so, then close.
      keep_alive_ = false;
      request_ = HttpRequest{};
      request_.request_id = "req-" + random_hex(8);
      return refuse(ec == http::error::header_limit ? 431 : 400, "invalid_argument",
                    "malformed HTTP request: " + ec.message());
    }
    return close_socket();
  }
  if (exchange_active_) {
    head_ready_ = true;  // pipelined; processed when the current exchange ends
    return;
  }
  process_head();
}

void Session::process_head() {
  disarm();
  auto& head = head_parser_->get();
  request_ = HttpRequest{};
  request_.method = std::string(head.method_string());
  request_.target = std::string(head.target());
  request_.remote = remote_;
  for (const auto& field : head) {
    std::string name(field.name_string());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string& slot = request_.headers[name];
    slot += (slot.empty() ? "" : ",") + std::string(field.value());
  }
  const std::string client_id = request_.header("x-request-id");
  request_.request_id = is_safe_token(client_id) ? client_id : "req-" + random_hex(8);
  keep_alive_ = head.keep_alive();
  if (over_limit_) {
    LOG_NOTICE("control.connection_limit", request_.request_id << ": refused a connection from "
                                                               << remote_
                                                               << ": over the connection limits");
    return refuse(429, "resource_exhausted",
                  "too many connections to this server (from this address, or in all); close "
                  "some and try again",
                  1);
  }

  const std::string_view target = head.target();
  const auto question = target.find('?');
  auto path = percent_decode(target.substr(0, question), false);
  if (!path.has_value() || path->empty() || path->front() != '/') {
    keep_alive_ = false;
    return refuse(400, "invalid_argument", "bad request path");
  }
  request_.path = std::move(*path);
  if (question != std::string_view::npos) {
    std::string_view query = target.substr(question + 1);
    while (!query.empty()) {
      const auto amp = query.find('&');
      const std::string_view item = query.substr(0, amp);
      const auto eq = item.find('=');
      auto key = percent_decode(item.substr(0, eq), true);
      auto value = percent_decode(eq == std::string_view::npos ? "" : item.substr(eq + 1), true);
      if (!key.has_value() || !value.has_value()) {
        keep_alive_ = false;
        return refuse(400, "invalid_argument", "bad query string");
      }
      if (!key->empty()) request_.query[*key] = *value;
      query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    }
  }

  const bool upgrade = websocket::is_upgrade(head);
  if (request_.path == server_->options().tunnel_path && server_->tunnel() != nullptr) {
    // The agent's tunnel: the tunnel server checks the upgrade and the credential.
    string_parser_.emplace(std::move(*head_parser_));
    string_parser_->body_limit(1024);
    arm(server_->options().handshake_timeout);
    http::async_read(
        stream_, buffer_, *string_parser_, [self = shared_from_this()](error_code ec, size_t) {
          self->disarm();
          if (ec) return self->close_socket();
          self->closed_ = true;
          self->handed_over_ = true;  // the stream is the tunnel's now
          auto transport = std::make_unique<tunnel::WsTransport>(std::move(self->stream_));
          self->server_->tunnel()->accept_upgrade(std::move(transport),
                                                  self->string_parser_->release(), self->remote_);
        });
    return;
  }
  if (upgrade) {
    string_parser_.emplace(std::move(*head_parser_));
    string_parser_->body_limit(1024);
    arm(server_->options().handshake_timeout);
    http::async_read(
        stream_, buffer_, *string_parser_, [self = shared_from_this()](error_code ec, size_t) {
          self->disarm();
          if (ec) return self->close_socket();
          self->exchange_active_ = true;
          auto upgrade_request = std::make_shared<Upgrade>(self, self->request_);
          if (!self->server_->handlers().on_websocket) {
            return upgrade_request->reject(HttpResponse{
                404,
                "application/json",
                error_body("not_found", "no WebSocket endpoint here", self->request_.request_id),
                {}});
          }
          self->server_->handlers().on_websocket(std::move(upgrade_request));
        });
    return;
  }

  // Nothing of the body is read before the application admitted the head.
  if (!server_->handlers().admit_head) return on_admitted(HeadDecision{});
  server_->handlers().admit_head(request_, [self = shared_from_this()](HeadDecision decision) {
    asio::post(self->executor(), [self, decision = std::move(decision)]() mutable {
      self->on_admitted(std::move(decision));
    });
  });
}

void Session::on_admitted(HeadDecision decision) {
  if (closed_) return;
  if (decision.refusal.has_value()) {
    keep_alive_ = false;  // the body, if any, is never read
    unread_body_ = true;
    begin_exchange();
    return send_response(*decision.refusal);
  }
  const BodyPolicy& policy = decision.body;
  const auto length = head_parser_->content_length();
  if (length.has_value() && *length > policy.max_bytes) {
    keep_alive_ = false;
    return refuse(413, "resource_exhausted",
                  "the request body (" + std::to_string(*length) + " bytes) is larger than the " +
                      std::to_string(policy.max_bytes) + " bytes this endpoint accepts");
  }
  // A chunked body counts for its endpoint's limit: its length is not known before it is read.
  const size_t expected =
      length.has_value() ? *length : (head_parser_->chunked() ? policy.max_bytes : 0);
  if (expected > 0) {
    body_lease_ = BodyLease::take(server_, policy.to_file, expected);
    if (!body_lease_) {
      LOG_NOTICE("control.body_budget", request_.request_id
                                            << ": refused a body of " << expected << " bytes from "
                                            << remote_ << ": the server's "
                                            << (policy.to_file ? "disk" : "memory")
                                            << " budget for bodies in flight is spent");
      return refuse(429, "resource_exhausted",
                    "the server is receiving too many request bodies at once; try again shortly",
                    1);
    }
  }
  if (request_.header("expect") == "100-continue") {
    queue_write("HTTP/1.1 100 Continue\r\n\r\n", nullptr);
  }
  body_started_ = std::chrono::steady_clock::now();
  body_bytes_ = 0;
  if (policy.to_file) {
    request_.body_file = server_->options().temp_dir + "/upload-" + random_hex(12);
    file_parser_.emplace(std::move(*head_parser_));
    file_parser_->body_limit(policy.max_bytes);
    error_code ec;
    file_parser_->get().body().open(request_.body_file.c_str(), beast::file_mode::write_new, ec);
    if (ec) {
      keep_alive_ = false;
      LOG_ERROR("control.upload_open_failed",
                "cannot create " << request_.body_file << ": " << ec.message());
      request_.body_file.clear();
      file_parser_.reset();
      body_lease_.release();
      return refuse(503, "unavailable", "cannot store the upload: " + ec.message(), 2);
    }
    if (file_parser_->is_done()) return on_body({});
  } else {
    string_parser_.emplace(std::move(*head_parser_));
    string_parser_->body_limit(policy.max_bytes);
    if (string_parser_->is_done()) return on_body({});
  }
  read_body_part();
}

void Session::read_body_part() {
  arm(server_->options().body_idle_timeout);
  auto on_read = [self = shared_from_this()](error_code ec, size_t bytes) {
    self->on_body_part(ec, bytes);
  };
  if (file_parser_.has_value()) {
    http::async_read_some(stream_, buffer_, *file_parser_, std::move(on_read));
  } else {
    http::async_read_some(stream_, buffer_, *string_parser_, std::move(on_read));
  }
}

void Session::on_body_part(error_code ec, size_t bytes) {
  disarm();
  if (ec) return on_body(ec);
  const bool done = file_parser_.has_value() ? file_parser_->is_done() : string_parser_->is_done();
  if (done) return on_body({});
  body_bytes_ += bytes;
  const auto& options = server_->options();
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - body_started_);
  if (elapsed > options.body_grace &&
      body_bytes_ * 1000 <
          options.body_min_bytes_per_second * static_cast<size_t>(elapsed.count())) {
    const size_t rate = body_bytes_ * 1000 / static_cast<size_t>(elapsed.count());
    if (!request_.body_file.empty()) {
      file_parser_.reset();
      std::error_code ignored;
      std::filesystem::remove(request_.body_file, ignored);
      request_.body_file.clear();
    }
    string_parser_.reset();
    body_lease_.release();
    return refuse(
        408, "deadline_exceeded",
        "the request body arrived at " + std::to_string(rate) + " bytes/s, slower than the " +
            std::to_string(options.body_min_bytes_per_second) + " bytes/s this server requires");
  }
  read_body_part();
}

void Session::on_body(error_code ec) {
  disarm();
  if (ec) {
    body_lease_.release();
    if (!request_.body_file.empty()) {
      file_parser_.reset();
      std::error_code ignored;
      std::filesystem::remove(request_.body_file, ignored);
      request_.body_file.clear();
    }
    if (ec == http::error::body_limit) {
      keep_alive_ = false;
      return refuse(413, "resource_exhausted",
                    "the request body is larger than this endpoint accepts");
    }
    if (ec.category() == http::make_error_code(http::error::end_of_stream).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message) {
      keep_alive_ = false;
      return refuse(400, "invalid_argument", "malformed HTTP request body: " + ec.message());
    }
    return close_socket();
  }
  if (file_parser_.has_value()) {
    file_parser_->get().body().close();
    file_parser_.reset();
  } else {
    request_.body = std::move(string_parser_->get().body());
    string_parser_.reset();
  }
  begin_exchange();
  auto exchange = std::make_shared<Exchange>(shared_from_this(), request_, std::move(body_lease_));
  request_.body.clear();  // the exchange has it; the session keeps only what it logs
  request_.body.shrink_to_fit();
  // Watch the connection: the next request's head, or the client leaving.
  if (keep_alive_) read_head();
  server_->handlers().on_request(std::move(exchange));
}

void Session::begin_exchange() {
  exchange_active_ = true;
  streaming_ = false;
  gone_ = false;
  gone_handler_ = nullptr;
}

void Session::refuse(int status, std::string_view code, const std::string& message,
                     int retry_after_seconds) {
  begin_exchange();
  keep_alive_ = false;
  unread_body_ = true;  // a refusal: whatever the client still sends is not read
  HttpResponse response{
      status, "application/json", error_body(code, message, request_.request_id), {}};
  if (retry_after_seconds > 0) {
    response.headers.emplace_back("Retry-After", std::to_string(retry_after_seconds));
  }
  send_response(response);
}

void Session::finish_exchange(bool keep_alive) {
  LOG_DEBUG("control.exchange_done",
            request_.request_id << " " << request_.method << " " << request_.path);
  exchange_active_ = false;
  gone_handler_ = nullptr;
  if (closed_) return;
  if (!keep_alive) {
    arm(server_->options().write_timeout);
    stream_.async_shutdown([self = shared_from_this()](error_code) {
      if (self->unread_body_) return self->linger();
      self->close_socket();
    });
    return;
  }
  if (head_ready_) return process_head();
  if (reading_head_) {
    arm(server_->options().idle_timeout);
    return;
  }
  read_head();
  arm(server_->options().idle_timeout);
}

// A refused request's body may still be on its way. Closing a socket with unread bytes makes the
// kernel send a reset, which can destroy the answer in the client's receive queue before the
// client reads it. So the write side is shut, and what arrives is read and dropped until the
// client closes, for at most kLingerTime and kLingerBytes (nginx's lingering close).
void Session::linger() {
  if (closed_) return;
  error_code ignored;
  beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_send, ignored);
  drain_buffer_ = std::make_unique<std::array<char, 4096>>();
  arm(kLingerTime);
  drain_next();
}

void Session::drain_next() {
  beast::get_lowest_layer(stream_).socket().async_read_some(
      asio::buffer(*drain_buffer_), [self = shared_from_this()](error_code ec, size_t bytes) {
        self->drained_ += bytes;
        if (ec || self->closed_ || self->drained_ > kLingerBytes) return self->close_socket();
        self->drain_next();
      });
}

void Session::client_gone() {
  if (gone_) return;
  gone_ = true;
  closed_ = true;
  LOG_INFO("control.client_gone", request_.request_id << ": the client disconnected");
  if (gone_handler_) {
    auto handler = std::move(gone_handler_);
    gone_handler_ = nullptr;
    handler();
  }
}

void Session::set_gone_handler(std::function<void()> handler) {
  if (gone_) {
    handler();
    return;
  }
  if (exchange_active_) gone_handler_ = std::move(handler);
}

std::string Session::response_head(int status, const std::string& content_type, bool chunked,
                                   size_t length,
                                   const std::vector<std::pair<std::string, std::string>>& extra) {
  std::string head = "HTTP/1.1 " + std::to_string(status) + " " + status_reason(status) + "\r\n";
  head += "Server: outpost-control\r\n";
  head += "X-Request-Id: " + request_.request_id + "\r\n";
  head += "Content-Type: " + content_type + "\r\n";
  for (const auto& [name, value] : extra) head += name + ": " + value + "\r\n";
  if (chunked) {
    head += "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n";
  } else {
    head += "Content-Length: " + std::to_string(length) + "\r\n";
  }
  if (!keep_alive_) head += "Connection: close\r\n";
  head += "\r\n";
  return head;
}

void Session::send_response(const HttpResponse& response) {
  if (!exchange_active_ || streaming_) return;
  if (closed_) {
    finish_exchange(false);
    return;
  }
  LOG_INFO("control.request", request_.request_id << " " << request_.method << " " << request_.path
                                                  << " " << response.status);
  std::string data = response_head(response.status, response.content_type, false,
                                   response.body.size(), response.headers);
  if (request_.method != "HEAD") data += response.body;
  queue_write(std::move(data), [self = shared_from_this()](bool ok) {
    self->finish_exchange(ok && self->keep_alive_);
  });
}

void Session::send_stream_head(int status, const std::string& content_type) {
  if (!exchange_active_ || streaming_) return;
  streaming_ = true;
  LOG_INFO("control.request", request_.request_id << " " << request_.method << " " << request_.path
                                                  << " " << status << " (stream)");
  queue_write(response_head(status, content_type, true, 0, {}), nullptr);
}

void Session::send_chunk(const std::string& data, std::function<void(bool)> done) {
  if (!streaming_ || closed_) {
    if (done) done(false);
    return;
  }
  if (data.empty()) {
    if (done) done(true);
    return;
  }
  std::ostringstream size;
  size << std::hex << data.size();
  queue_write(size.str() + "\r\n" + data + "\r\n", std::move(done));
}

void Session::send_stream_end() {
  if (!streaming_) return;
  streaming_ = false;
  queue_write("0\r\n\r\n", [self = shared_from_this()](bool ok) {
    self->finish_exchange(ok && self->keep_alive_);
  });
}

void Session::queue_write(std::string data, std::function<void(bool)> done) {
  writes_.push_back({std::move(data), std::move(done)});
  if (!writing_) write_next();
}

void Session::write_next() {
  if (writes_.empty()) return;
  if (closed_) {
    auto failed = std::move(writes_);
    writes_.clear();
    for (auto& write : failed) {
      if (write.done) write.done(false);
    }
    return;
  }
  writing_ = true;
  write_deadline_.expires_after(server_->options().write_timeout);
  write_deadline_.async_wait([weak = std::weak_ptr<Session>(shared_from_this())](error_code ec) {
    auto self = weak.lock();
    if (!ec && self) {
      LOG_INFO("control.write_stalled",
               self->request_.request_id << ": a write to " << self->remote_ << " stalled");
      self->close_socket();
    }
  });
  asio::async_write(
      stream_, asio::buffer(writes_.front().data),
      [owner = WriteHandlerOwner<Session>(shared_from_this())](error_code ec, size_t) mutable {
        const auto self = owner.take();
        self->write_deadline_.cancel();
        self->writing_ = false;
        auto done = std::move(self->writes_.front().done);
        self->writes_.pop_front();
        if (ec) {
          const bool was_active = self->exchange_active_;
          self->close_socket();
          if (was_active) self->client_gone();
        }
        if (done) done(!ec);
        self->write_next();
      });
}

void Session::reject_websocket(const HttpResponse& response) {
  keep_alive_ = false;
  send_response(response);
}

void Session::accept_websocket(std::function<void(std::shared_ptr<WebSocketChannel>)> on_open) {
  if (closed_) return;
  closed_ = true;  // the stream belongs to the WebSocket from here
  handed_over_ = true;
  deadline_.cancel();
  auto channel = std::make_shared<WsChannel>(std::move(stream_));
  auto& ws = channel->ws();
  auto timeouts = websocket::stream_base::timeout::suggested(beast::role_type::server);
  timeouts.idle_timeout = std::chrono::seconds(60);
  timeouts.keep_alive_pings = true;
  ws.set_option(timeouts);
  ws.read_message_max(server_->options().websocket_message_limit);
  const std::string request_id = request_.request_id;
  ws.set_option(websocket::stream_base::decorator([request_id](websocket::response_type& res) {
    res.set(http::field::server, "outpost-control");
    res.set("X-Request-Id", request_id);
  }));
  LOG_INFO("control.request",
           request_.request_id << " " << request_.method << " " << request_.path << " 101");
  ws.async_accept(
      string_parser_->release(), [channel, on_open = std::move(on_open)](error_code ec) {
        if (ec) {
          LOG_DEBUG("control.ws_accept_failed", "WebSocket accept failed: " << ec.message());
          return;
        }
        on_open(channel);
      });
}

}  // namespace

std::shared_ptr<HttpServer> HttpServer::create(asio::io_context& io,
                                               std::shared_ptr<asio::ssl::context> tls,
                                               HttpServerOptions options, HttpHandlers handlers,
                                               std::shared_ptr<tunnel::TunnelServer> tunnel) {
  return std::make_shared<ServerImpl>(io, std::move(tls), std::move(options), std::move(handlers),
                                      std::move(tunnel));
}

}  // namespace outpost::control
