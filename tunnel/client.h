// The agent's end of the tunnel: keeps `connections` parallel outbound WSS connections to the
// control plane (2 by default), each in its own slot that reconnects forever.
//
// Each attempt: resolve, TCP connect (through an HTTP CONNECT proxy when configured or when
// HTTPS_PROXY asks for one), TLS with SNI, host-name check and optional public-key pins, then the
// WebSocket upgrade carrying the credential (Authorization: Bearer) and the subprotocol that
// names the protocol version, then the HELLO exchange, each step within its DialTimeouts. A
// failed attempt waits per ReconnectBackoff: full jitter up to 2 s, or seconds doubling to
// minutes when the control plane refused the credential or TLS trust failed (logged as errors,
// since only an operator can fix them). A GOAWAY from the server opens the replacement connection
// at once, while the old one finishes its streams. Streams stay on the connection they were opened
// on.
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

// Each step of a dial is bounded on its own, so that a step that hangs (a SYN or a ClientHello
// lost in a partition, a proxy that never answers) fails in seconds and the next attempt, after
// the backoff, finds the network as it is now. A step that runs out fails the attempt as a
// transient failure naming the step.
struct DialTimeouts {
  std::chrono::milliseconds resolve{5'000};  // the control plane's (or proxy's) name
  // TCP connect: Linux resends a SYN after 1 s and 3 s; a dial started in a partition gives up
  // before the third and starts afresh once the backoff allows.
  std::chrono::milliseconds tcp_connect{3'000};
  std::chrono::milliseconds proxy_connect{5'000};  // the proxy's answer to CONNECT
  std::chrono::milliseconds tls_handshake{5'000};
  // The WebSocket upgrade (the server checks the credential, maybe with a KDF) and the HELLO
  // exchange; the server allows itself 10 s for TLS, upgrade and authentication.
  std::chrono::milliseconds upgrade{10'000};
};

struct ClientOptions {
  std::string url;         // wss://host[:port][/path]; the path defaults to /v1/tunnel
  std::string credential;  // sent as "Authorization: Bearer <credential>"; never logged
  ClientTlsOptions tls;
  std::string proxy_url;              // http://[user:pass@]host:port; empty: see below
  bool use_environment_proxy = true;  // HTTPS_PROXY / NO_PROXY when proxy_url is empty
  int connections = 2;
  ConnectionOptions connection;
  BackoffOptions backoff;
  DialTimeouts dial;
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
