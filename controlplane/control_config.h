// outpost-control's configuration: a YAML file (--config) whose values flags can override.
// Every key is checked: an unknown or mistyped key stops the start with a message naming it.
//
//   listen: "0.0.0.0:8443"
//   data_dir: /var/lib/outpost-control
//   tls: {cert_file: /etc/outpost-control/tls.crt, key_file: /etc/outpost-control/tls.key}
//   worker_path: /usr/lib/outpost/outpost-worker      # runs `inspect` on uploaded models
//   admin: {user: admin, token_file: /var/lib/outpost-control/admin-token}
//   limits: {max_request_bytes: 16777216, max_model_bytes: 2147483648,
//            inspect_timeout_seconds: 120, predict_timeout_seconds: 300}
//   url_inputs: {allow_private_addresses: false, max_bytes: 16777216, timeout_seconds: 10,
//                ca_file: ""}
//   threads: {io: 2, blocking: 4}
//   port_file: ""                                      # written with the bound port
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
  bool url_allow_private = false;
  uint64_t url_max_bytes = 16 * 1024 * 1024;
  int url_timeout_seconds = 10;
  std::string url_ca_file;
  int io_threads = 2;
  int blocking_threads = 4;
  std::string port_file;
};

// Reads --config FILE first, then applies the other flags over it.
//   --config F --listen ADDR:PORT --data-dir D --tls-cert F --tls-key F --worker-path F
//   --admin-token-file F --port-file F
Result<ControlConfig> load_control_config(const std::vector<std::string>& args);

// Parses a YAML config document (exposed for tests and the fuzzer).
Result<ControlConfig> parse_control_config(std::string_view yaml, ControlConfig base = {});

// "host:port" or "[v6]:port".
Status parse_listen(std::string_view text, ControlConfig& config);

}  // namespace outpost::control
