// The CLI's HTTPS client for outpost-control: one verified TLS connection per call (the CLI
// makes few), JSON bodies, uploads streamed from a file, responses read whole or piece by piece
// as they arrive (generate), and a WebSocket for stream calls. TLS is always verified, against
// the system's roots or the CA file given. Every operation has a deadline.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace outpost::cli {

struct BaseUrl {
  std::string host;
  uint16_t port = 443;
  std::string path;  // prefix for every request path, "" or "/something"
};

// "https://host[:port][/prefix]"; http:// is refused (tokens never travel in clear).
Result<BaseUrl> parse_base_url(std::string_view url);

struct ClientConfig {
  std::string base_url;
  std::string ca_file;  // empty: the system's roots
  std::string pat;      // sent as "Authorization: Key <pat>"; empty: no header
  std::chrono::seconds timeout{300};
};

struct Response {
  int status = 0;
  std::string content_type;
  std::string request_id;
  std::string retry_after;  // a 503's Retry-After, in seconds
  std::string body;
};

using Headers = std::vector<std::pair<std::string, std::string>>;

class WebSocketClient {
 public:
  virtual ~WebSocketClient() = default;
  virtual Status send(const std::string& text) = 0;
  // The next message; nullopt once the server closed the WebSocket.
  virtual Result<std::optional<std::string>> receive() = 0;
  virtual void close() = 0;
};

class HttpClient {
 public:
  static Result<std::unique_ptr<HttpClient>> create(ClientConfig config);
  virtual ~HttpClient() = default;

  virtual Result<Response> send(std::string_view method, const std::string& path,
                                const std::string& body = {},
                                const std::string& content_type = "application/json",
                                const Headers& headers = {}) = 0;
  // The body comes from a file, streamed.
  virtual Result<Response> send_file(std::string_view method, const std::string& path,
                                     const std::string& file, const std::string& content_type) = 0;
  // The response body is handed to `on_data` piece by piece as it arrives (the returned body is
  // empty unless the status is an error). `on_data` returning false stops reading and drops the
  // connection (the server cancels the call): the result is then a `cancelled` error.
  virtual Result<Response> send_streaming(std::string_view method, const std::string& path,
                                          const std::string& body, const std::string& content_type,
                                          const Headers& headers,
                                          const std::function<bool(std::string_view)>& on_data) = 0;
  // A WebSocket; a refused upgrade gives the server's error.
  virtual Result<std::unique_ptr<WebSocketClient>> websocket(const std::string& path) = 0;
};

// The error in an outpost-control error body ({"status": {"code", "description"}}), or a
// generic one naming the HTTP status.
Error error_from_response(const Response& response);

}  // namespace outpost::cli
