#include "agent/status_server.h"

#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "common/log.h"
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace outpost::agent {

namespace asio = boost::asio;
using Local = asio::local::stream_protocol;

StatusServer::StatusServer(asio::io_context& io, std::string path, Snapshot snapshot)
    : acceptor_(io), path_(std::move(path)), snapshot_(std::move(snapshot)) {}

StatusServer::~StatusServer() { ::unlink(path_.c_str()); }

Result<std::shared_ptr<StatusServer>> StatusServer::create(asio::io_context& io,
                                                           const std::string& path,
                                                           Snapshot snapshot) {
  auto server = std::shared_ptr<StatusServer>(new StatusServer(io, path, std::move(snapshot)));
  ::unlink(path.c_str());  // a socket left by a crashed agent
  boost::system::error_code ec;
  server->acceptor_.open(Local(), ec);
  const mode_t old_mask = ::umask(0177);  // the socket file is created 0600
  if (!ec) server->acceptor_.bind(Local::endpoint(path), ec);
  ::umask(old_mask);
  if (!ec) server->acceptor_.listen(16, ec);
  if (ec) return unavailable("cannot listen on " + path + ": " + ec.message());
  server->accept();
  return server;
}

void StatusServer::stop() {
  boost::system::error_code ignored;
  acceptor_.close(ignored);
}

void StatusServer::accept() {
  acceptor_.async_accept(
      [self = shared_from_this()](boost::system::error_code ec, Local::socket socket) {
        if (ec) return;  // closed
        ucred peer{};
        socklen_t size = sizeof peer;
        const bool known =
            ::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &peer, &size) == 0 &&
            (peer.uid == 0 || peer.uid == ::getuid());
        if (known) {
          auto body = std::make_shared<std::string>(self->snapshot_().dump(2) + "\n");
          auto client = std::make_shared<Local::socket>(std::move(socket));
          asio::async_write(*client, asio::buffer(*body),
                            [client, body](boost::system::error_code, size_t) {
                              boost::system::error_code ignored;
                              client->close(ignored);
                            });
        } else {
          LOG_NOTICE("agent.status_refused", "refused a status request from uid " << peer.uid);
        }
        self->accept();
      });
}

Result<nlohmann::json> query_status(const std::string& path) {
  asio::io_context io;
  Local::socket socket(io);
  boost::system::error_code ec;
  socket.connect(Local::endpoint(path), ec);
  if (ec) {
    return unavailable("cannot reach outpostd at " + path + ": " + ec.message() +
                       " (is it running? is runtime_dir right?)");
  }
  std::string body;
  asio::read(socket, asio::dynamic_buffer(body), ec);
  if (ec && ec != asio::error::eof)
    return unavailable("reading the status failed: " + ec.message());
  try {
    return nlohmann::json::parse(body);
  } catch (const nlohmann::json::exception& e) {
    return internal_error(std::string("outpostd sent a malformed status: ") + e.what());
  }
}

}  // namespace outpost::agent
