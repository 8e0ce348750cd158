// One persistent HTTPS connection for bench_e2e: Boost.Beast over OpenSSL, verified against a CA
// file (SNI and host-name check), kept alive across requests so that a measured call pays for
// the request, not for a TCP and TLS handshake. Synchronous on the caller's thread, each step
// under a deadline; one request at a time. A connection the server closed is opened again on the
// next request (that request then pays for the handshake).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"

namespace outpost::bench {

struct HttpsTarget {
  std::string host = "localhost";  // what the certificate names; SNI and verification use it
  uint16_t port = 0;
  std::string ca_file;
  std::string authorization;  // the Authorization header's value; empty: none
  std::chrono::seconds timeout{60};
};

struct HttpsAnswer {
  int status = 0;
  std::string body;  // empty for a streamed answer with a 2xx status
};

class KeepAliveHttps {
 public:
  static Result<std::unique_ptr<KeepAliveHttps>> connect(const HttpsTarget& target);
  ~KeepAliveHttps();
  KeepAliveHttps(const KeepAliveHttps&) = delete;
  KeepAliveHttps& operator=(const KeepAliveHttps&) = delete;

  // POSTs a body (JSON unless said otherwise) to `path` and reads the whole answer.
  Result<HttpsAnswer> post(const std::string& path, const std::string& body,
                           const std::string& content_type = "application/json");
  // POSTs a JSON body to `path`; a 2xx answer's body goes to `on_data` piece by piece as it
  // arrives (each chunk of a chunked answer as it is parsed).
  Result<HttpsAnswer> post_streaming(const std::string& path, const std::string& body,
                                     const std::string& accept,
                                     const std::function<void(std::string_view)>& on_data);
  // TCP and TLS handshakes so far (1 while the server kept the connection alive).
  int connects() const;

 private:
  struct Impl;
  explicit KeepAliveHttps(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::bench
