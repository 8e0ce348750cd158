// What the API sees of HTTP, without Beast: a parsed request, a response, and the objects
// through which a handler answers — whole, as a stream of chunks (server-sent events, JSON
// lines), or by taking over the connection as a WebSocket. Keeping Beast out of the handlers
// keeps them cheap to compile and easy to read; http_server.cc is the only place that holds both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace outpost::control {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // as received, with the query
  std::string path;    // percent-decoded, without the query
  std::map<std::string, std::string> query;
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;                            // the body, unless it went to a file
  std::string body_file;   // an upload's body on disk; removed when the exchange ends
  std::string remote;      // "address:port"
  std::string request_id;  // the client's X-Request-Id when safe, else generated

  // "" when absent. `name` in lower case.
  std::string header(std::string_view name) const {
    const auto it = headers.find(std::string(name));
    return it == headers.end() ? std::string() : it->second;
  }
  std::string query_value(std::string_view name) const {
    const auto it = query.find(std::string(name));
    return it == query.end() ? std::string() : it->second;
  }
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// One request and the way back to its client. Every method is thread-safe.
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual const HttpRequest& request() const = 0;

  // Answers the whole request. Called once, unless a stream was started.
  virtual void respond(HttpResponse response) = 0;

  // A streamed answer (chunked transfer encoding): the status and headers now, then chunks, each
  // flushed on its own. `done(false)` when the client is gone. One write at a time: call the
  // next write_chunk from the previous one's `done`.
  virtual void start_stream(int status, std::string content_type) = 0;
  virtual void write_chunk(std::string data, std::function<void(bool ok)> done) = 0;
  virtual void end_stream() = 0;

  // Runs once if the client disconnects before the exchange finished (from any thread).
  virtual void on_client_gone(std::function<void()> handler) = 0;
};

// An accepted WebSocket (text messages). One read and one write at a time.
class WebSocketChannel {
 public:
  virtual ~WebSocketChannel() = default;
  virtual void read(std::function<void(bool ok, std::string message)> handler) = 0;
  virtual void write(std::string message, std::function<void(bool ok)> done) = 0;
  virtual void close(uint16_t code, std::string reason) = 0;
};

// A WebSocket upgrade request that the application accepts or refuses with an HTTP answer.
class WebSocketUpgrade {
 public:
  virtual ~WebSocketUpgrade() = default;
  virtual const HttpRequest& request() const = 0;
  virtual void reject(HttpResponse response) = 0;
  virtual void accept(std::function<void(std::shared_ptr<WebSocketChannel>)> on_open) = 0;
};

// How a request's body is read, decided from its head.
struct BodyPolicy {
  size_t max_bytes = 1024 * 1024;
  bool to_file = false;  // uploads: streamed to a file under the server's temporary directory
};

// What the application decides from a request's head alone, before any byte of its body is
// read: a refusal (credential, scope, route, throttle), answered at once with the connection
// closed and the body never read; or how the body is to be read.
struct HeadDecision {
  std::optional<HttpResponse> refusal;
  BodyPolicy body;
};

struct HttpHandlers {
  // Called for every request but WebSocket upgrades, which are admitted before they are accepted.
  // `done` may run on any thread (the credential check runs a KDF off the event loop).
  std::function<void(const HttpRequest& head, std::function<void(HeadDecision)> done)> admit_head;
  std::function<void(std::shared_ptr<HttpExchange>)> on_request;
  std::function<void(std::shared_ptr<WebSocketUpgrade>)> on_websocket;
};

}  // namespace outpost::control
