// The socket under a tunnel Connection: a Boost.Beast WebSocket over TLS over TCP, plus the
// buffer its reader uses. Only the files that set up or drive the socket include this header
// (Beast's WebSocket templates are costly to compile).
#pragma once

#include <utility>

#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

namespace outpost::tunnel {

using TlsStream = boost::beast::ssl_stream<boost::beast::tcp_stream>;
using WebSocket = boost::beast::websocket::stream<TlsStream>;

class WsTransport {
 public:
  template <class... Args>
  explicit WsTransport(Args&&... args) : ws_(std::forward<Args>(args)...) {}

  WebSocket& ws() { return ws_; }
  boost::beast::flat_buffer& read_buffer() { return read_buffer_; }
  boost::beast::tcp_stream& tcp() { return boost::beast::get_lowest_layer(ws_); }

 private:
  WebSocket ws_;
  boost::beast::flat_buffer read_buffer_;
};

}  // namespace outpost::tunnel
