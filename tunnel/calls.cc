#include "tunnel/calls.h"

namespace outpost::tunnel {

using boost::system::error_code;

void async_read_unary_response(const std::shared_ptr<Stream>& stream,
                               std::function<void(error_code, std::string)> done) {
  stream->async_read([stream, done = std::move(done)](error_code ec, std::string response) mutable {
    if (ec == Errc::kEndOfStream) {
      done(make_error_code(Errc::kProtocolError), {});
      return;
    }
    if (ec) {
      done(ec, {});
      return;
    }
    stream->async_read([stream, done = std::move(done), response = std::move(response)](
                           error_code end, const std::string&) mutable {
      if (end == Errc::kEndOfStream) {
        done({}, std::move(response));
      } else if (end) {
        done(end, {});
      } else {
        stream->reset(Errc::kProtocolError, "a unary call got more than one response");
        done(make_error_code(Errc::kProtocolError), {});
      }
    });
  });
}

namespace {

void read_loop(const std::shared_ptr<Stream>& stream,
               const std::shared_ptr<std::function<void(std::string)>>& on_message,
               const std::shared_ptr<std::function<void(error_code)>>& done) {
  stream->async_read([stream, on_message, done](error_code ec, std::string message) {
    if (ec == Errc::kEndOfStream) {
      (*done)({});
      return;
    }
    if (ec) {
      (*done)(ec);
      return;
    }
    (*on_message)(std::move(message));
    read_loop(stream, on_message, done);
  });
}

}  // namespace

void async_read_all(const std::shared_ptr<Stream>& stream,
                    std::function<void(std::string)> on_message,
                    std::function<void(error_code)> done) {
  read_loop(stream, std::make_shared<std::function<void(std::string)>>(std::move(on_message)),
            std::make_shared<std::function<void(error_code)>>(std::move(done)));
}

}  // namespace outpost::tunnel
