// Local status over a Unix socket (the agent listens on no TCP port). A client connects, the
// agent writes one JSON document and closes. Only root and the agent's own user may read it
// (SO_PEERCRED); the socket file is 0600. `outpostd status` is the client.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <nlohmann/json.hpp>

#include "common/result.h"

namespace outpost::agent {

class StatusServer : public std::enable_shared_from_this<StatusServer> {
 public:
  using Snapshot = std::function<nlohmann::json()>;

  // Replaces a stale socket file at `path`. `snapshot` runs on the io_context's thread.
  static Result<std::shared_ptr<StatusServer>> create(boost::asio::io_context& io,
                                                      const std::string& path, Snapshot snapshot);
  ~StatusServer();
  void stop();

 private:
  StatusServer(boost::asio::io_context& io, std::string path, Snapshot snapshot);
  void accept();

  boost::asio::local::stream_protocol::acceptor acceptor_;
  std::string path_;
  Snapshot snapshot_;
};

// Connects to the agent's socket and returns its status document.
Result<nlohmann::json> query_status(const std::string& path);

}  // namespace outpost::agent
