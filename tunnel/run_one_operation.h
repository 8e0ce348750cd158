// Blocking use of Asio for tools that do one thing at a time (the CLI, benchmarks): start one
// asynchronous operation and run the io_context until that operation completes.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/system/error_code.hpp>

namespace outpost::tunnel {

// Runs the operation that `start` begins (it receives the completion handler) and returns its
// error code. It runs until this operation completes, not until the context runs dry: a timer
// the operation leaves behind (a WebSocket's handshake timeout, say) must not hold the caller.
// Bound it with the stream's own deadline (beast::tcp_stream::expires_after).
template <class Start>
boost::system::error_code run_one_operation(boost::asio::io_context& io, Start&& start) {
  boost::system::error_code result;
  bool done = false;
  start([&result, &done](boost::system::error_code ec, auto&&...) {
    result = ec;
    done = true;
  });
  io.restart();
  while (!done && io.run_one() > 0) {
  }
  return result;
}

}  // namespace outpost::tunnel
