// The agent's end of the tunnel: keeps `connections` parallel outbound WSS connections to the
// control plane (2 by default), each in its own slot that reconnects forever.
//
// Each attempt: resolve, TCP connect (through an HTTP CONNECT proxy when configured or when
// HTTPS_PROXY asks for one), TLS with SNI, host-name check and optional public-key pins, then the
// WebSocket upgrade carrying the credential (Authorization: Bearer) and the subprotocol that
// names the protocol version, then the HELLO exchange. A failed attempt waits per
// ReconnectBackoff: full jitter up to 30 s, or minutes when the control plane refused the
// credential or TLS trust failed (logged as errors, since only an operator can fix them). A GOAWAY
// from the server opens the replacement connection at once, while the old one finishes its
// streams. Streams stay on the connection they were opened on.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "common/clock.h"
#include "common/result.h"
#include "tunnel/backoff.h"
#include "tunnel/connection.h"
#include "tunnel/tls.h"

namespace outpost::tunnel {

struct TunnelUrl {
  std::string host;
  uint16_t port = 443;
  std::string path;
};

// "wss://host[:port][/path]"; anything but wss:// is refused (the tunnel always uses TLS).
Result<TunnelUrl> parse_tunnel_url(std::string_view url);

struct ClientOptions {
  std::string url;         // wss://host[:port][/path]; the path defaults to /v1/tunnel
  std::string credential;  // sent as "Authorization: Bearer <credential>"; never logged
  ClientTlsOptions tls;
  std::string proxy_url;              // http://[user:pass@]host:port; empty: see below
  bool use_environment_proxy = true;  // HTTPS_PROXY / NO_PROXY when proxy_url is empty
  int connections = 2;
  ConnectionOptions connection;
  BackoffOptions backoff;
  // The whole attempt (TCP, proxy, TLS, upgrade, HELLO) must finish within this.
  std::chrono::milliseconds connect_timeout{15'000};
};

enum class SlotState { kConnecting, kConnected, kBackingOff, kStopped };
std::string_view slot_state_name(SlotState state);

struct SlotStatus {
  SlotState state = SlotState::kConnecting;
  int consecutive_failures = 0;
  bool refused = false;    // the last failure was a refusal (credential, TLS, proxy auth)
  std::string last_error;  // why the last attempt or connection failed
  std::chrono::milliseconds retry_in{0};
  std::string server_id;  // from the server's HELLO
};

struct ClientStatus {
  std::vector<SlotStatus> slots;
  int connected() const;
};

// Where reconnect delays are waited out. The client uses Asio timers unless a test injects one
// of these (with a fake clock) to see and control every delay.
class DelayScheduler {
 public:
  virtual ~DelayScheduler() = default;
  virtual void wait(int slot, std::chrono::milliseconds delay, std::function<void()> done) = 0;
};

// The client's time and randomness, replaceable in tests.
struct ClientSeams {
  const Clock* clock = nullptr;         // default: the steady clock
  Random* random = nullptr;             // default: a seeded Mersenne twister
  DelayScheduler* scheduler = nullptr;  // default: Asio timers
};

class TunnelClient {
 public:
  struct Handlers {
    // The control plane opened a stream on connection `slot`.
    std::function<void(std::shared_ptr<Stream>, int slot)> on_stream;
    // Some slot changed state. Runs on that slot's strand.
    std::function<void(const ClientStatus&)> on_status;
  };

  static Result<std::shared_ptr<TunnelClient>> create(boost::asio::io_context& io,
                                                      ClientOptions options, Handlers handlers,
                                                      ClientSeams seams = {});
  ~TunnelClient();

  void start();

  // Drains every connection (GOAWAY; open streams get up to `grace`), stops reconnecting, and
  // calls `done` once every connection has closed.
  void shutdown(std::chrono::milliseconds grace, std::function<void()> done);

  // Opens a stream on the ready connection with the fewest streams; kUnavailable when no
  // connection is up (the message says why the last attempt failed).
  Result<std::shared_ptr<Stream>> open_stream(std::string metadata, std::string first_message = {},
                                              bool send_first_message = false,
                                              bool end_stream = false);

  ClientStatus status() const;

  class Slot;

 private:
  struct Shared;
  explicit TunnelClient(std::shared_ptr<Shared> shared);
  std::shared_ptr<Shared> shared_;
};

}  // namespace outpost::tunnel
