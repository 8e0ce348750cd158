// Fetches the inputs a predict request gives by URL ({"url": "https://..."}), with a size cap
// and a deadline. Because the control plane sits inside a site's network, a URL must not reach
// what the caller could not: loopback, private, link-local, CGNAT, multicast and unspecified
// addresses are refused (after DNS resolution, for every address tried) unless the config allows
// them. Redirects are not followed: a redirect could lead to a refused address.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/context.hpp>

#include "common/result.h"

namespace outpost::control {

struct UrlFetchOptions {
  size_t max_bytes = 16 * 1024 * 1024;
  std::chrono::milliseconds timeout{10'000};
  bool allow_private_addresses = false;
  std::string ca_file;  // for https; empty: the system's roots
};

struct FetchUrl {
  bool https = false;
  std::string host;
  uint16_t port = 0;
  std::string target;  // path and query
};

Result<FetchUrl> parse_fetch_url(std::string_view url);

// True for addresses a fetch may reach without allow_private_addresses.
bool is_public_address(const boost::asio::ip::address& address);

class UrlFetcher {
 public:
  UrlFetcher(boost::asio::io_context& io, UrlFetchOptions options);
  // `done` runs once, on an io thread, with the body or why the fetch failed.
  void fetch(const std::string& url, std::function<void(Result<std::string>)> done);

 private:
  boost::asio::io_context& io_;
  UrlFetchOptions options_;
  std::mutex mutex_;
  std::shared_ptr<boost::asio::ssl::context> tls_;  // made at the first https fetch
};

}  // namespace outpost::control
