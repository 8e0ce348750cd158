// outpost-control's configuration: a YAML file (--config) whose values flags can override.
// Every key is checked: an unknown or mistyped key stops the start with a message naming it.
//
//   listen: "0.0.0.0:8443"
//   data_dir: /var/lib/outpost-control
//   tls: {cert_file: /etc/outpost-control/tls.crt, key_file: /etc/outpost-control/tls.key}
//   worker_path: /usr/lib/outpost/outpost-worker      # runs `inspect` on uploaded models
//   admin: {user: admin, token_file: /var/lib/outpost-control/admin-token}
//   limits: {max_request_bytes: 16777216, max_model_bytes: 2147483648,
//            inspect_timeout_seconds: 120, predict_timeout_seconds: 300,
//            max_connections: 4096, max_connections_per_address: 256,
//            max_body_memory_bytes: 268435456, max_body_disk_bytes: 8589934592,
//            body_idle_timeout_seconds: 15, body_min_bytes_per_second: 16384}
//   url_inputs: {allow_private_addresses: false, max_bytes: 16777216, timeout_seconds: 10,
//                ca_file: ""}
//   threads: {io: 2, blocking: 4}
//   port_file: ""                                      # written with the bound port
//   scaling: {target_ongoing_requests: 2, max_ongoing_per_replica: 5,
//             cold_start_timeout_seconds: 60, max_held_requests: 100,
//             node_offline_grace_seconds: 30}           # docs/scaling.md
//   metrics: {listen: ""}                              # e.g. "127.0.0.1:9464"; empty: off
//   auth_throttle: {max_failures: 10, window_seconds: 60}  # per address; 0 failures: off
//   tunnel: {keepalive_seconds: 2, dead_after_seconds: 8}  # PING each agent; silent: dead
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace outpost::control {

struct ControlConfig {
  std::string listen_address = "0.0.0.0";
  uint16_t listen_port = 8443;
  std::string data_dir = "/var/lib/outpost-control";
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string worker_path;  // empty: outpost-worker next to this executable
  std::string admin_user = "admin";
  std::string admin_token_file;  // empty: the first start prints the admin token once
  uint64_t max_request_bytes = 16 * 1024 * 1024;
  uint64_t max_model_bytes = uint64_t{2} * 1024 * 1024 * 1024;
  int inspect_timeout_seconds = 120;
  int predict_timeout_seconds = 300;
  // HTTP connections and request bodies (http_server.h, docs/security.md).
  uint64_t max_connections = 4096;
  uint64_t max_connections_per_address = 256;
  uint64_t max_body_memory_bytes = 256 * 1024 * 1024;
  uint64_t max_body_disk_bytes = uint64_t{8} * 1024 * 1024 * 1024;
  uint64_t body_idle_timeout_seconds = 15;
  uint64_t body_min_bytes_per_second = 16 * 1024;
  bool url_allow_private = false;
  uint64_t url_max_bytes = 16 * 1024 * 1024;
  int url_timeout_seconds = 10;
  std::string url_ca_file;
  int io_threads = 2;
  int blocking_threads = 4;
  std::string port_file;
  // scaling (docs/scaling.md)
  int target_ongoing_requests = 2;      // per replica: the autoscaler's target
  int max_ongoing_per_replica = 5;      // beyond: a nodepool is saturated and traffic overflows
  int cold_start_timeout_seconds = 60;  // how long a request waits for a replica to start
  int max_held_requests = 100;          // per deployment, waiting for a replica to start
  int node_offline_grace_seconds = 30;  // before an offline node's replicas move
  // tunnel keepalive: a PING every keepalive_seconds; a connection silent for dead_after_seconds
  // is dead, and a node whose every connection is dead leaves routing at that moment (its calls
  // in flight fail with `unavailable`; docs/reliability.md, "Partitions"). Four PINGs missed:
  // no false alarm from a lost packet or a loaded agent, and a partition noticed within 9 s.
  int tunnel_keepalive_seconds = 2;
  int tunnel_dead_after_seconds = 8;
  // auth_throttle (auth_throttle.h): refused credentials allowed per source address and window.
  int auth_max_failures = 10;
  int auth_window_seconds = 60;
  // metrics: a plain-HTTP Prometheus listener of its own; off when metrics_address is empty.
  std::string metrics_address;
  uint16_t metrics_port = 0;
};

// Reads --config FILE first, then applies the other flags over it.
//   --config F --listen ADDR:PORT --data-dir D --tls-cert F --tls-key F --worker-path F
//   --admin-token-file F --port-file F --metrics-listen ADDR:PORT
Result<ControlConfig> load_control_config(const std::vector<std::string>& args);

// Parses a YAML config document (exposed for tests and the fuzzer).
Result<ControlConfig> parse_control_config(std::string_view yaml, ControlConfig base = {});

// "host:port" or "[v6]:port" (an empty host is 0.0.0.0); `field` names it in errors.
Status parse_host_port(std::string_view text, std::string_view field, std::string& host,
                       uint16_t& port);
inline Status parse_listen(std::string_view text, ControlConfig& config) {
  return parse_host_port(text, "listen", config.listen_address, config.listen_port);
}

}  // namespace outpost::control
