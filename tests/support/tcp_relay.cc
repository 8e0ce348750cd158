#include "tests/support/tcp_relay.h"

#include <array>
#include <future>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

namespace outpost::testing {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

struct RelayState {
  std::vector<std::weak_ptr<TcpRelay::Link>> links;
  // Frozen links: a frozen pump has no operation in flight to keep its link alive, and a link
  // destroyed would close its sockets, which a silent drop must not do.
  std::vector<std::shared_ptr<TcpRelay::Link>> frozen;
};

// One relayed connection: two sockets and a pump in each direction.
struct TcpRelay::Link : std::enable_shared_from_this<TcpRelay::Link> {
  struct Pump {
    tcp::socket* from;
    tcp::socket* to;
    std::array<char, 64 * 1024> buffer{};
    size_t pending = 0;  // bytes read but not yet written (held while frozen)
  };

  Link(tcp::socket client, asio::io_context& io, std::shared_ptr<RelayState> state)
      : client_socket(std::move(client)), server_socket(io), state(std::move(state)) {
    up.from = &client_socket;
    up.to = &server_socket;
    down.from = &server_socket;
    down.to = &client_socket;
  }

  void read(Pump& pump) {
    pump.from->async_read_some(asio::buffer(pump.buffer),
                               [self = shared_from_this(), &pump](error_code ec, size_t n) {
                                 if (ec) return self->close();
                                 pump.pending = n;
                                 self->forward(pump);
                               });
  }

  void forward(Pump& pump) {
    // thaw() calls forward again, and for a held link connect() once upstream is connected.
    if (frozen || !connected || pump.pending == 0) return;
    const size_t n = pump.pending;
    asio::async_write(*pump.to, asio::buffer(pump.buffer.data(), n),
                      [self = shared_from_this(), &pump](error_code ec, size_t) {
                        if (ec) return self->close();
                        pump.pending = 0;
                        self->read(pump);
                      });
  }

  // Connects upstream, then relays both ways (a held link first sends what it read meanwhile).
  void connect(uint16_t target_port, bool read_up) {
    server_socket.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), target_port),
                                [self = shared_from_this(), read_up](error_code connect_ec) {
                                  if (connect_ec || self->closed) return self->close();
                                  error_code ignored;
                                  self->server_socket.set_option(tcp::no_delay(true), ignored);
                                  self->client_socket.set_option(tcp::no_delay(true), ignored);
                                  self->connected = true;
                                  if (read_up) self->read(self->up);
                                  self->read(self->down);
                                  self->forward(self->up);
                                });
  }

  void close() {
    closed = true;
    error_code ignored;
    client_socket.close(ignored);
    server_socket.close(ignored);
  }

  tcp::socket client_socket;
  tcp::socket server_socket;
  std::shared_ptr<RelayState> state;
  bool frozen = false;
  bool closed = false;
  bool connected = false;  // upstream; a link held by partition() connects on thaw()
  Pump up;
  Pump down;
};

TcpRelay::TcpRelay(uint16_t target_port)
    : acceptor_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)),
      target_port_(target_port),
      state_(std::make_shared<RelayState>()) {
  port_ = acceptor_.local_endpoint().port();
  accept();
  thread_ = std::thread([this] { io_.run(); });
}

TcpRelay::~TcpRelay() {
  asio::post(io_, [this] {
    error_code ignored;
    acceptor_.close(ignored);
    for (auto& weak : state_->links) {
      if (auto link = weak.lock()) link->close();
    }
  });
  io_.stop();
  thread_.join();
  state_->frozen.clear();  // links hold the state: no cycle left behind
}

void TcpRelay::accept() {
  acceptor_.async_accept([this](error_code ec, tcp::socket socket) {
    if (ec) return;
    if (refuse_.load()) {
      error_code ignored;
      socket.close(ignored);
      return accept();
    }
    ++accepted_;
    auto link = std::make_shared<Link>(std::move(socket), io_, state_);
    state_->links.push_back(link);
    if (black_hole_) {
      // Held: read what the client sends (a TLS ClientHello), forward nothing, connect nothing.
      link->frozen = true;
      state_->frozen.push_back(link);
      link->read(link->up);
    } else {
      link->connect(target_port_, /*read_up=*/true);
    }
    accept();
  });
}

void TcpRelay::cut() {
  std::promise<void> done;
  asio::post(io_, [this, &done] {
    for (auto& weak : state_->links) {
      if (auto link = weak.lock()) link->close();
    }
    state_->links.clear();
    state_->frozen.clear();
    done.set_value();
  });
  done.get_future().wait();
}

void TcpRelay::freeze() {
  std::promise<void> done;
  asio::post(io_, [this, &done] {
    for (auto& weak : state_->links) {
      if (auto link = weak.lock()) {
        link->frozen = true;
        state_->frozen.push_back(link);
      }
    }
    done.set_value();
  });
  done.get_future().wait();
}

void TcpRelay::freeze_one(size_t index) {
  std::promise<void> done;
  asio::post(io_, [this, &done, index] {
    if (index < state_->links.size()) {
      if (auto link = state_->links[index].lock()) {
        link->frozen = true;
        state_->frozen.push_back(link);
      }
    }
    done.set_value();
  });
  done.get_future().wait();
}

void TcpRelay::partition() {
  // New connections are held from now on; the ones accepted before are frozen next.
  std::promise<void> done;
  asio::post(io_, [this, &done] {
    black_hole_ = true;
    done.set_value();
  });
  done.get_future().wait();
  freeze();
}

void TcpRelay::thaw() {
  std::promise<void> done;
  asio::post(io_, [this, &done] {
    black_hole_ = false;
    for (auto& weak : state_->links) {
      if (auto link = weak.lock()) {
        link->frozen = false;
        if (link->closed) continue;
        if (!link->connected) {
          link->connect(target_port_, /*read_up=*/false);  // its up pump is reading already
          continue;
        }
        link->forward(link->up);
        link->forward(link->down);
      }
    }
    state_->frozen.clear();
    done.set_value();
  });
  done.get_future().wait();
}

void TcpRelay::refuse_new(bool refuse) { refuse_.store(refuse); }

}  // namespace outpost::testing
